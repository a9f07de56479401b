"""Issue 12 through a real Traefik: the ForwardAuth middleware of docs/verifier.md (read from the
page, file-provider form) in front of an upstream that echoes what it received.

Traefik is not a Debian package; it builds from the Go module proxy (the module's ``go.mod``
has ``replace`` directives, so ``go install …@version`` refuses it: download the module and
``go build ./cmd/traefik`` inside it). These tests run when the binary is at
``$PMKEYS_TRAEFIK`` or ``<cache>/bin/traefik``, and are skipped otherwise.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pmkeys_dev import binaries, bootstrap
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess, free_port
from tests.attacks.gateways import Answer, raw_request
from tests.kube import Kube
from tests.verifier.conftest import GATEWAY_TOKEN, Plaintext, Verifiers, issue
from tests.verifier.gateway import DOCUMENTED_TOKEN, DOCUMENTED_VERIFIER, EchoUpstream, documented_block

TRAEFIK = Path(os.environ.get("PMKEYS_TRAEFIK", binaries.cache_dir() / "bin" / "traefik"))

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not TRAEFIK.exists(), reason=f"no Traefik binary at {TRAEFIK} (see the module docstring)"),
]


def documented_middleware(*, verifier_port: int, token: str) -> dict[str, Any]:
    """The file-provider block of docs/verifier.md, pointed at a local verifier."""
    text = documented_block("yaml", index=2)
    assert "forwardAuth" in text and DOCUMENTED_TOKEN in text, "docs/verifier.md changed shape"
    text = text.replace(DOCUMENTED_VERIFIER, f"127.0.0.1:{verifier_port}").replace(DOCUMENTED_TOKEN, token)
    return yaml.safe_load(text)  # type: ignore[no-any-return]


class TraefikGateway:
    def __init__(self, workdir: Path, *, verifier_port: int, upstream_port: int, token: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        dynamic = documented_middleware(verifier_port=verifier_port, token=token)
        dynamic["http"]["routers"] = {
            "api": {"rule": "PathPrefix(`/`)", "entryPoints": ["web"], "middlewares": ["pmkeys"], "service": "api"}
        }
        dynamic["http"]["services"] = {
            "api": {"loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{upstream_port}"}]}}
        }
        self.dynamic = dynamic
        self.process: ServerProcess | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        dynamic = self.workdir / "dynamic.yaml"
        dynamic.write_text(yaml.safe_dump(self.dynamic))
        argv = [
            str(TRAEFIK),
            f"--entryPoints.web.address=127.0.0.1:{self.port}",
            f"--providers.file.filename={dynamic}",
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
            "--log.level=INFO",
        ]
        self.process = ServerProcess(f"traefik-{self.port}", argv, log_dir=self.workdir)
        self.process.start()
        url = f"http://127.0.0.1:{self.port}/v1/me"
        self.process.wait_ready(lambda: httpx.get(url, timeout=1).status_code == 401, timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5)


@pytest.fixture(scope="module")
def ns(kube: Kube) -> str:
    name = f"t-{secrets.token_hex(4)}"
    bootstrap.tenant_namespace(kube.api, name, name)
    return name


@pytest.fixture(scope="module")
def mailer(kube: Kube, ns: str) -> tuple[Plaintext, dict[str, Any]]:
    return issue(kube, ns, "mailer", scopes=["send_email", "read_analytics"])


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    server = EchoUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def traefik(env: LocalEnvironment, kube: Kube, operator: object, upstream: EchoUpstream) -> Iterator[TraefikGateway]:
    verifiers = Verifiers(env, kube.issued)
    verifier = verifiers.start(PMKEYS_GATEWAY="traefik")
    gateway = TraefikGateway(
        env.workdir / f"traefik-{verifier.port}",
        verifier_port=verifier.port,
        upstream_port=upstream.port,
        token=GATEWAY_TOKEN,
    )
    gateway.start()
    yield gateway
    gateway.stop()
    verifiers.stop_all()


def through(traefik: TraefikGateway, method: str, target: str, key: str, **headers: str) -> Answer:
    sent = {"Authorization": f"Bearer {key}", **{k.replace("_", "-"): v for k, v in headers.items()}}
    return raw_request(traefik.port, method, target, sent)


def test_traefik_baseline(traefik: TraefikGateway, mailer: tuple[Plaintext, Any]) -> None:
    assert through(traefik, "GET", "/v1/analytics/daily", mailer[0]).status == 200
    assert through(traefik, "GET", "/v1/contacts/1", mailer[0]).status == 403


@pytest.mark.parametrize(
    "target",
    ["/v1/contacts/42;x://h/v1/me", "/v1/contacts/..%2F..%2Fv1%2Fanalytics", "/v1/contacts/%2e%2e/%2e%2e/v1/me"],
)
def test_traefik_ambiguous_paths_never_reach_the_contacts_handler(
    traefik: TraefikGateway, mailer: tuple[Plaintext, Any], target: str
) -> None:
    """The key lacks manage_contacts: whatever Traefik makes of the path, the upstream must not
    get a /v1/contacts request (Traefik itself resolves ``%2e%2e`` segments, for the verifier
    and the upstream alike: then both see ``/v1/me``)."""
    answer = through(traefik, "GET", target, mailer[0])
    if answer.status == 200:
        reached = answer.json()["path"]
        assert not reached.startswith("/v1/contacts"), f"GET {target} reached the upstream as {reached}"
    else:
        assert answer.status in (400, 401, 403), f"GET {target} got {answer.status}"


def test_traefik_forged_identity_headers_never_reach_the_upstream(
    traefik: TraefikGateway, mailer: tuple[Plaintext, Any], ns: str
) -> None:
    forged = {"X-Tenant-Id": "someone-else", "X-Api-Key-Scopes": "manage_contacts", "X-Api-Key-Environment": "forged"}
    answer = through(traefik, "GET", "/v1/analytics", mailer[0], **forged)
    assert answer.status == 200
    seen = answer.json()["headers"]
    assert seen["x-tenant-id"] == ns
    assert seen["x-api-key-scopes"] == "send_email,read_analytics"
    assert seen["x-api-key-environment"] == "live"


def test_traefik_client_cannot_name_the_route(
    traefik: TraefikGateway, upstream: EchoUpstream, mailer: tuple[Plaintext, Any]
) -> None:
    seen = upstream.seen
    answer = through(
        traefik, "GET", "/v1/contacts/1", mailer[0], X_Original_URI="/v1/analytics", X_Forwarded_Uri="/v1/analytics"
    )
    assert answer.status == 403
    assert upstream.seen == seen
