"""Attack tests' fixtures.

``own_env`` / ``okube`` / ``ovault`` / ``ops`` / ``otenant``: an environment of its own for
attacks that need to stop, start or slow the operator. The test starts the operator with the
settings it needs (``ops.start(PMKEYS_...=...)``); it is never shared with the session's
operator, as two active operators on one cluster would each act on the other's objects.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from pmkeys.kubeclient import api_client
from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from tests.faults.conftest import OperatorControl
from tests.kube import Kube
from tests.vaultview import VaultView


@pytest.fixture(scope="module")
def own_env() -> Iterator[LocalEnvironment]:
    from tests.conftest import scanned_environment

    with scanned_environment() as environment:
        yield environment


@pytest.fixture(scope="module")
def okube(own_env: LocalEnvironment) -> Kube:
    from tests.conftest import issued_keys

    return Kube(api_client(str(own_env.kubeconfig)), own_env.kubeconfig, issued_keys())


@pytest.fixture(scope="module")
def ovault(own_env: LocalEnvironment) -> VaultView:
    return VaultView(own_env.openbao.client())


@pytest.fixture
def ops(own_env: LocalEnvironment) -> Iterator[OperatorControl]:
    control = OperatorControl(own_env)
    yield control
    control.stop()


@pytest.fixture
def otenant(okube: Kube) -> str:
    name = f"a-{secrets.token_hex(4)}"
    bootstrap.tenant_namespace(okube.api, name, name)
    return name
