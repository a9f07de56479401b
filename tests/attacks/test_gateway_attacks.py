"""Issue 12, the gateway side: a client of the API tries to borrow a scope, smuggle a route or
forge its identity through the gateway configurations of docs/verifier.md.

nginx is Debian's real nginx running the configuration read from docs/verifier.md, in front of
an upstream that echoes what it received. No Envoy binary is available here, so the Envoy
attacks send the check requests Envoy's ext_authz builds (``path_prefix`` + the client's path
and query, the method kept) straight to a verifier in envoy mode. Traefik runs for real in
``test_traefik_attacks.py`` when its binary is there.

The key under attack has ``send_email`` and ``read_analytics`` (as in the issue); the routes
are ``POST /v1/messages=send_email``, ``GET /v1/analytics=read_analytics``,
``* /v1/contacts=manage_contacts``, ``GET /v1/me=*``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from pmkeys_dev import bootstrap
from pmkeys_dev.environment import LocalEnvironment
from tests.attacks.gateways import Answer, raw_request
from tests.kube import Kube
from tests.verifier.conftest import CALLER_TOKEN, GATEWAY_TOKEN, Plaintext, VerifierProcess, Verifiers, issue
from tests.verifier.gateway import NGINX, EchoUpstream, NginxGateway

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def ns(kube: Kube) -> str:
    name = f"t-{secrets.token_hex(4)}"
    bootstrap.tenant_namespace(kube.api, name, name)
    return name


@pytest.fixture(scope="module")
def verifiers(env: LocalEnvironment, kube: Kube, operator: object) -> Iterator[Verifiers]:
    started = Verifiers(env, kube.issued)
    yield started
    started.stop_all()


@pytest.fixture(scope="module")
def mailer(kube: Kube, ns: str) -> tuple[Plaintext, dict[str, Any]]:
    """The attacker's key: send_email and read_analytics, not manage_contacts."""
    return issue(kube, ns, "mailer", scopes=["send_email", "read_analytics"], environment="live")


@pytest.fixture(scope="module")
def test_key(kube: Kube, ns: str) -> tuple[Plaintext, dict[str, Any]]:
    return issue(kube, ns, "sandbox", scopes=["send_email", "read_analytics"], environment="test")


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    server = EchoUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nginx(env: LocalEnvironment, verifiers: Verifiers, upstream: EchoUpstream) -> Iterator[NginxGateway]:
    if not NGINX.exists():
        pytest.skip("nginx not installed (hack/install-system-packages.sh)")
    verifier = verifiers.start(PMKEYS_GATEWAY="nginx")
    gateway = NginxGateway(
        env.workdir / f"attack-nginx-{verifier.port}",
        verifier_port=verifier.port,
        upstream_port=upstream.port,
        token=GATEWAY_TOKEN,
    )
    gateway.start()
    yield gateway
    gateway.cleanup()


@pytest.fixture(scope="module")
def envoy(verifiers: Verifiers) -> VerifierProcess:
    return verifiers.start(PMKEYS_GATEWAY="envoy")


def through_nginx(nginx: NginxGateway, method: str, target: str, key: str, **headers: str) -> Answer:
    sent = {"Authorization": f"Bearer {key}", **{k.replace("_", "-"): v for k, v in headers.items()}}
    return raw_request(nginx.port, method, target, sent)


def as_envoy(verifier: VerifierProcess, method: str, target: str, key: str) -> Answer:
    """The check request Envoy's ext_authz sends for a client request ``method target``."""
    headers = {"Authorization": f"Bearer {key}", "X-Pmkeys-Caller-Token": CALLER_TOKEN}
    headers["X-Forwarded-For"] = "203.0.113.9"
    return raw_request(verifier.port, method, "/v1/authz" + target, headers)


def refused(answer: Answer) -> bool:
    return answer.status in (401, 403)


# -- nginx ---------------------------------------------------------------------------------------
def test_nginx_baseline_the_key_works_where_it_should(nginx: NginxGateway, mailer: tuple[Plaintext, Any]) -> None:
    assert through_nginx(nginx, "GET", "/v1/analytics/daily", mailer[0]).status == 200
    assert through_nginx(nginx, "GET", "/v1/contacts/1", mailer[0]).status == 403


def test_nginx_client_forwarded_headers_cannot_borrow_another_route(
    nginx: NginxGateway, upstream: EchoUpstream, mailer: tuple[Plaintext, Any]
) -> None:
    seen = upstream.seen
    answer = through_nginx(
        nginx, "GET", "/v1/contacts/1", mailer[0], X_Forwarded_Method="GET", X_Forwarded_Uri="/v1/analytics"
    )
    assert refused(answer), f"GET /v1/contacts/1 with a forged X-Forwarded-Uri got {answer.status}"
    assert upstream.seen == seen, "the contacts handler was reached"


def test_nginx_client_scope_header_cannot_open_an_unmapped_route(
    nginx: NginxGateway, upstream: EchoUpstream, mailer: tuple[Plaintext, Any]
) -> None:
    seen = upstream.seen
    answer = through_nginx(nginx, "GET", "/v1/unmapped", mailer[0], X_Required_Scope="read_analytics")
    assert refused(answer), f"GET /v1/unmapped with a client X-Required-Scope got {answer.status}"
    assert upstream.seen == seen


@pytest.mark.parametrize(
    "target",
    [
        "/v1/contacts/42;x://h/v1/me",
        "/v1/contacts/..%2F..%2Fv1%2Fanalytics",
        "/v1/messages/..%2F..%2Fv1%2Fanalytics",
        "/v1/contacts%2F..%2Fanalytics",
        "/v1/contacts/%2e%2e/%2e%2e/v1/analytics",
        "/v1/contacts/..%5C..%5Cv1%5Canalytics",
        "/v1/contacts/%252F..%252F..%252Fv1%252Fme",
    ],
)
def test_nginx_ambiguous_paths_are_refused_not_resolved(
    nginx: NginxGateway, upstream: EchoUpstream, mailer: tuple[Plaintext, Any], target: str
) -> None:
    seen = upstream.seen
    answer = through_nginx(nginx, "GET", target, mailer[0])
    assert refused(answer), f"GET {target} got {answer.status}"
    assert upstream.seen == seen, f"{target} reached the upstream"


def test_nginx_forged_identity_headers_never_reach_the_upstream(
    nginx: NginxGateway, mailer: tuple[Plaintext, Any], ns: str
) -> None:
    plaintext, status = mailer
    forged = {
        "X_Tenant_Id": "someone-else",
        "X-Tenant-Id": "someone-else",
        "X-Api-Key-Id": "kforgedforge",
        "X-Api-Key-Scopes": "manage_contacts",
        "X-Api-Key-Environment": "forged",
    }
    answer = raw_request(nginx.port, "GET", "/v1/analytics", {"Authorization": f"Bearer {plaintext}", **forged})
    assert answer.status == 200
    seen = answer.json()["headers"]
    assert seen["x-tenant-id"] == ns
    assert seen["x-api-key-id"] == status["keyId"]
    assert seen["x-api-key-scopes"] == "send_email,read_analytics"
    assert seen["x-api-key-environment"] == "live"
    assert "x_tenant_id" not in seen


def test_nginx_test_keys_reach_the_upstream_labelled_as_test(
    nginx: NginxGateway, test_key: tuple[Plaintext, Any]
) -> None:
    answer = through_nginx(nginx, "POST", "/v1/messages", test_key[0])
    assert answer.status == 200
    assert answer.json()["headers"].get("x-api-key-environment") == "test"


# -- Envoy (its check requests, sent directly: no Envoy binary here) -------------------------------
def test_envoy_baseline(envoy: VerifierProcess, mailer: tuple[Plaintext, Any]) -> None:
    assert as_envoy(envoy, "GET", "/v1/analytics", mailer[0]).status == 200
    assert as_envoy(envoy, "GET", "/v1/contacts/1", mailer[0]).status == 403


def test_envoy_client_query_cannot_name_a_scope(envoy: VerifierProcess, mailer: tuple[Plaintext, Any]) -> None:
    answer = as_envoy(envoy, "GET", "/v1/unmapped?scope=read_analytics", mailer[0])
    assert refused(answer), f"a client-appended ?scope= got {answer.status}"


def test_envoy_client_query_cannot_choose_the_rate_limit_answer(envoy: VerifierProcess, kube: Kube, ns: str) -> None:
    plaintext, _ = issue(kube, ns, "envoy-limited", scopes=["read_analytics"], rateLimit=1)
    assert as_envoy(envoy, "GET", "/v1/analytics", plaintext).status == 200
    assert as_envoy(envoy, "GET", "/v1/analytics?rate_limited_status=403", plaintext).status == 429


def test_envoy_double_encoded_separators_are_not_decoded_twice(
    envoy: VerifierProcess, mailer: tuple[Plaintext, Any]
) -> None:
    answer = as_envoy(envoy, "GET", "/v1/contacts/%252F..%252F..%252Fv1%252Fme", mailer[0])
    assert refused(answer), f"%252F was decoded into a separator: {answer.status}"


@pytest.mark.parametrize(
    "target", ["/v1/contacts/42;x://h/v1/me", "/v1/contacts/..%2F..%2Fv1%2Fanalytics", "/v1/contacts/%2e%2e/me"]
)
def test_envoy_ambiguous_paths_are_refused(envoy: VerifierProcess, mailer: tuple[Plaintext, Any], target: str) -> None:
    answer = as_envoy(envoy, "GET", target, mailer[0])
    assert refused(answer), f"{target} got {answer.status}"


def test_envoy_forged_method_and_uri_headers_are_ignored(envoy: VerifierProcess, mailer: tuple[Plaintext, Any]) -> None:
    headers = {
        "Authorization": f"Bearer {mailer[0]}",
        "X-Pmkeys-Caller-Token": CALLER_TOKEN,
        "X-Original-URI": "/v1/analytics",
        "X-Forwarded-Uri": "/v1/analytics",
    }
    answer = raw_request(envoy.port, "GET", "/v1/authz/v1/contacts/1", headers)
    assert answer.status == 403


def test_envoy_test_keys_are_labelled(envoy: VerifierProcess, test_key: tuple[Plaintext, Any]) -> None:
    answer = as_envoy(envoy, "POST", "/v1/messages", test_key[0])
    assert answer.status == 200
    assert answer.headers.get("x-api-key-environment") == "test"
