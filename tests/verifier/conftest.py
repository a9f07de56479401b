"""Fixtures for the verifier: Redis from Debian, verifier processes, keys issued by the operator.

Verifier processes are started the way a pod runs them (``python -m pmkeys verifier``, Vault
through the Kubernetes auth method with the ``pmkeys-verifier`` role) and stopped at the end of
the test or module that started them. Before a verifier stops, its ``/metrics`` page is searched
for every key the run issued.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from tests import leakscan
from tests.builders import key
from tests.kube import Kube
from tests.vaultview import MOUNT, PREFIX

from pmkeys.config import VaultSettings, VerifierSettings
from pmkeys.keys.material import display_prefix
from pmkeys.verify import Verifier
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess, free_port
from pmkeys_dev.redis import RedisServer

#: Caller tokens of this run: the tests call the verifier as "tests"; gateways as "gateway".
#: Kept in the environment because pytest may import this module twice (as a conftest and as
#: ``tests.verifier.conftest``), and both copies must agree.
CALLER_TOKEN = os.environ.setdefault("PMKEYS_TEST_CALLER_TOKEN", secrets.token_urlsafe(32))
GATEWAY_TOKEN = os.environ.setdefault("PMKEYS_TEST_GATEWAY_TOKEN", secrets.token_urlsafe(32))
CALLER_TOKENS = {"tests": CALLER_TOKEN, "gateway": GATEWAY_TOKEN}
CALLER_HEADERS = {"X-Pmkeys-Caller-Token": CALLER_TOKEN}

#: The route map the gateway tests use.
ROUTES = [
    "POST /v1/messages=send_email",
    "GET /v1/analytics=read_analytics",
    "* /v1/contacts=manage_contacts",
    "GET /v1/me=*",
]


@dataclass
class VerifierProcess:
    proc: ServerProcess
    port: int
    #: Authenticated as the caller "tests".
    http: httpx.Client = field(init=False)
    #: No caller token: what any pod in the cluster could send.
    anonymous: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=10, headers=CALLER_HEADERS)
        self.anonymous = httpx.Client(base_url=self.url, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def verify(self, api_key: str, scope: str | None = None, **extra: Any) -> httpx.Response:
        return self.http.post("/v1/verify", json={"key": api_key, "scope": scope, **extra})

    def authz(self, path: str, *, method: str = "GET", api_key: str | None = None, **headers: str) -> httpx.Response:
        sent = {k.replace("_", "-"): val for k, val in headers.items()}
        if api_key is not None:
            sent["Authorization"] = f"Bearer {api_key}"
        return self.http.request(method, "/v1/authz" + path, headers=sent)

    def metrics(self) -> str:
        return self.anonymous.get("/metrics").text

    def close(self) -> None:
        self.http.close()
        self.anonymous.close()


def metric(verifier: VerifierProcess, name: str, labels: str = "") -> float:
    """One value from the verifier's /metrics (the sum is not taken: the sample must be unique)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in verifier.metrics().splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{wanted} not in /metrics")


class Verifiers:
    """Starts verifier processes; :meth:`stop_all` stops them (after a leak check of /metrics)."""

    def __init__(self, env: LocalEnvironment, issued: set[str]) -> None:
        self.env = env
        self.issued = issued
        self.running: list[VerifierProcess] = []

    def start(self, *, redis: RedisServer | None = None, **settings: str) -> VerifierProcess:
        port = free_port()
        env = {
            "PMKEYS_PORT": str(port),
            "PMKEYS_USAGE_FLUSH_SECONDS": "1",
            "PMKEYS_ROUTES": json.dumps(ROUTES),
            "PMKEYS_FAILED_ATTEMPTS_PER_MINUTE": "1000",
            "PMKEYS_LOG_LEVEL": "INFO",
            "PMKEYS_GATEWAY": "direct",
            "PMKEYS_CALLER_TOKENS": json.dumps(CALLER_TOKENS),
        }
        if redis is not None:
            env["PMKEYS_REDIS_URL"] = redis.url
        env.update(settings)
        proc = self.env.start_component(
            "verifier", name=f"verifier-{port}", ready_url=f"http://127.0.0.1:{port}/readyz", **env
        )
        started = VerifierProcess(proc, port)
        self.running.append(started)
        return started

    def stop(self, verifier: VerifierProcess) -> None:
        text = verifier.metrics() if verifier.proc.running() else ""  # a test may have killed it
        findings = leakscan.scan([(f"verifier metrics :{verifier.port}", text)], self.issued)
        verifier.close()
        verifier.proc.stop(grace=10)
        self.running.remove(verifier)
        assert not findings, "plaintext keys in verifier metrics: " + "; ".join(map(str, findings))

    def stop_all(self) -> None:
        for verifier in list(self.running):
            self.stop(verifier)


@pytest.fixture(scope="session")
def redis_server(env: LocalEnvironment) -> Iterator[RedisServer]:
    server = RedisServer(workdir=env.workdir / "redis")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def verifiers(env: LocalEnvironment, kube: Kube, operator: ServerProcess) -> Iterator[Verifiers]:
    started = Verifiers(env, kube.issued)
    yield started
    started.stop_all()


@pytest.fixture(scope="module")
def module_verifiers(env: LocalEnvironment, kube: Kube, operator: ServerProcess) -> Iterator[Verifiers]:
    started = Verifiers(env, kube.issued)
    yield started
    started.stop_all()


class Plaintext(str):
    """A key that shows only its display prefix when printed (pytest prints the fixture values
    and locals of a failing test; a key must not end up in a report)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<key {display_prefix(self)}>"


def issue(kube: Kube, namespace: str, name: str, **spec: Any) -> tuple[Plaintext, dict[str, Any]]:
    """Create a TenantApiKey, wait until Active, return (plaintext, status)."""
    kube.create_key(key(name, namespace, **spec))
    status = kube.wait_phase(namespace, name, "Active")
    return Plaintext(kube.plaintext(namespace, status["secretName"])), status


def random_key(environment: str = "live") -> Plaintext:
    """A well-formed key nobody issued."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return Plaintext(f"pm_{environment}_" + "".join(secrets.choice(alphabet) for _ in range(32)))


def vault_settings(env: LocalEnvironment, *, addr: str | None = None) -> VaultSettings:
    return VaultSettings(
        addr=addr or env.openbao.url,
        auth="kubernetes",
        role="pmkeys-verifier",
        token_path=env.token_files["verifier"],
        kv_mount=MOUNT,
        prefix=PREFIX,
        timeout=2,
    )


def settings(env: LocalEnvironment, **overrides: object) -> VerifierSettings:
    values: dict[str, object] = {
        "kubeconfig": str(env.kubeconfig),
        "vault": vault_settings(env),
        "usage_flush_seconds": 1,
        "failed_attempts_per_minute": 1000,
    }
    values.update(overrides)
    return VerifierSettings(**values)  # type: ignore[arg-type]


def vault_reads() -> float:
    return REGISTRY.get_sample_value("pmkeys_verifier_vault_request_duration_seconds_count") or 0.0


@pytest.fixture
async def make_verifier(env: LocalEnvironment) -> AsyncIterator[Callable[..., object]]:
    started: list[Verifier] = []

    async def make(**overrides: object) -> Verifier:
        hasher = overrides.pop("hasher", None)
        verifier = Verifier.from_settings(settings(env, **overrides))
        if hasher is not None:
            verifier.hasher.close()
            verifier.hasher = hasher  # type: ignore[assignment]
        await verifier.start()
        started.append(verifier)
        await wait_ready(verifier)
        return verifier

    yield make
    for verifier in started:
        await verifier.close()


async def wait_ready(verifier: Verifier) -> None:
    """What /readyz waits for: Vault answered and the watch has listed every object."""
    for _ in range(200):
        if verifier.ready:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"verifier not ready: {verifier.readiness()}")
