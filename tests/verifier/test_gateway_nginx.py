"""A real gateway: nginx ``auth_request`` in front of an API, the verifier deciding.

Driven with an HTTP client, as an API user would: a valid key reaches the upstream with the
tenant headers (and cannot forge them), a bad key gets 401, a key without the route's scope
403, and one over its limit 429 with ``Retry-After`` (the documented nginx variant).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest
from tests.kube import Kube
from tests.verifier.conftest import GATEWAY_TOKEN, Verifiers, issue, random_key
from tests.verifier.gateway import NGINX, EchoUpstream, NginxGateway

from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not NGINX.exists(), reason="nginx not installed (hack/install-system-packages.sh)"),
]


@pytest.fixture(scope="module")
def ns(kube: Kube) -> str:
    name = f"t-{secrets.token_hex(4)}"
    bootstrap.tenant_namespace(kube.api, name, name)
    return name


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    server = EchoUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(env: LocalEnvironment, module_verifiers: Verifiers, upstream: EchoUpstream) -> Iterator[httpx.Client]:
    verifier = module_verifiers.start(PMKEYS_GATEWAY="nginx")
    nginx = NginxGateway(
        env.workdir / f"nginx-{verifier.port}",
        verifier_port=verifier.port,
        upstream_port=upstream.port,
        token=GATEWAY_TOKEN,
    )
    nginx.start()
    with httpx.Client(base_url=nginx.url, timeout=10) as http:
        yield http
    nginx.cleanup()


def test_valid_key_reaches_the_upstream_with_tenant_headers(
    gateway: httpx.Client, upstream: EchoUpstream, kube: Kube, ns: str
) -> None:
    plaintext, status = issue(kube, ns, "gw-sender", scopes=["send_email"])
    seen = upstream.seen
    response = gateway.post(
        "/v1/messages?draft=false",
        headers={"Authorization": f"Bearer {plaintext}", "X-Tenant-Id": "someone-else"},
        json={"to": "a@example.com"},
    )
    assert response.status_code == 200
    echoed = response.json()
    assert upstream.seen == seen + 1
    assert echoed["method"] == "POST" and echoed["path"] == "/v1/messages?draft=false"
    assert echoed["headers"]["x-tenant-id"] == ns, "the gateway's identity header, not the client's"
    assert echoed["headers"]["x-api-key-id"] == status["keyId"]
    assert echoed["headers"]["x-api-key-scopes"] == "send_email"
    assert response.headers["RateLimit-Policy"] == '"starter";q=60;w=60'
    assert response.headers["RateLimit"].startswith('"starter";r=59;')


def test_x_api_key_works_too(gateway: httpx.Client, kube: Kube, ns: str) -> None:
    plaintext, _ = issue(kube, ns, "gw-analyst", scopes=["read_analytics"])
    assert gateway.get("/v1/analytics/daily", headers={"X-API-Key": plaintext}).status_code == 200


def test_bad_keys_get_401_and_never_reach_the_upstream(gateway: httpx.Client, upstream: EchoUpstream) -> None:
    seen = upstream.seen
    unknown = gateway.post("/v1/messages", headers={"Authorization": f"Bearer {random_key()}"})
    assert unknown.status_code == 401
    assert 'error="invalid_token"' in unknown.headers["WWW-Authenticate"]
    assert gateway.post("/v1/messages", headers={"Authorization": "Bearer pm_live_tooshort"}).status_code == 401
    missing = gateway.post("/v1/messages")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="pmkeys"'
    assert upstream.seen == seen


def test_wrong_scope_gets_403(gateway: httpx.Client, upstream: EchoUpstream, kube: Kube, ns: str) -> None:
    plaintext, _ = issue(kube, ns, "gw-wrong-scope", scopes=["read_analytics"])
    seen = upstream.seen
    response = gateway.post("/v1/messages", headers={"Authorization": f"Bearer {plaintext}"})
    assert response.status_code == 403
    assert response.json() == {"reason": "scope_missing"}
    assert upstream.seen == seen


def test_over_the_limit_gets_429_with_retry_after(
    gateway: httpx.Client, upstream: EchoUpstream, kube: Kube, ns: str
) -> None:
    plaintext, _ = issue(kube, ns, "gw-limited", scopes=["send_email"], rateLimit=2)
    auth = {"Authorization": f"Bearer {plaintext}"}
    codes = [gateway.post("/v1/messages", headers=auth).status_code for _ in range(2)]
    assert codes == [200, 200]
    seen = upstream.seen
    refused = gateway.post("/v1/messages", headers=auth)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit"].startswith('"starter";r=0;')
    assert refused.json() == {"reason": "rate_limited"}
    assert upstream.seen == seen
