"""A separate environment for fault tests: OpenBao with raft storage on disk (so it can be stopped,
sealed and restarted without losing records) and an operator the tests kill and restart."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from pmkeys.kubeclient import api_client
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess
from tests.kube import Kube
from tests.vaultview import VaultView


class OperatorControl:
    """Start, SIGKILL and restart the operator of the fault environment."""

    def __init__(self, env: LocalEnvironment, *, bcrypt_cost: str = "4") -> None:
        self.env = env
        self.bcrypt_cost = bcrypt_cost
        self.proc: ServerProcess | None = None
        self.starts = 0

    def start(self, *, crash_at: str = "", **extra: str) -> ServerProcess:
        self.stop()
        self.starts += 1
        self.proc = self.env.start_component(
            "operator",
            name=f"fault-operator-{self.starts}",
            PMKEYS_BCRYPT_COST=self.bcrypt_cost,
            PMKEYS_CRASH_AT=crash_at,
            **extra,
        )
        return self.proc

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=5)
            self.proc = None

    def wait_dead(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and not self.proc.running():
                return True
            time.sleep(0.05)
        return False


@pytest.fixture(scope="module")
def fault_env() -> Iterator[LocalEnvironment]:
    from tests.conftest import scanned_environment

    with scanned_environment(bao_mode="raft") as environment:
        yield environment


@pytest.fixture(scope="module")
def fkube(fault_env: LocalEnvironment) -> Kube:
    from tests.conftest import issued_keys

    return Kube(api_client(str(fault_env.kubeconfig)), fault_env.kubeconfig, issued_keys())


@pytest.fixture(scope="module")
def fvault(fault_env: LocalEnvironment) -> VaultView:
    return VaultView(fault_env.openbao.client())


@pytest.fixture
def control(fault_env: LocalEnvironment) -> Iterator[OperatorControl]:
    ctl = OperatorControl(fault_env)
    yield ctl
    ctl.stop()


@pytest.fixture
def ftenant(fkube: Kube) -> str:
    name = f"f-{secrets.token_hex(4)}"
    bootstrap.tenant_namespace(fkube.api, name, name)
    return name
