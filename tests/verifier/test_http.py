"""The HTTP service, one status code path at a time, against the real stack.

One verifier process (no Redis) serves the module; keys are issued by the real operator into a
tenant namespace of the module's own.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from typing import Any

import pytest
from tests.kube import Kube, wait_for
from tests.verifier.conftest import VerifierProcess, Verifiers, issue, random_key

from pmkeys_dev import bootstrap

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def ns(kube: Kube) -> str:
    name = f"t-{secrets.token_hex(4)}"
    bootstrap.tenant_namespace(kube.api, name, name)
    return name


@pytest.fixture(scope="module")
def verifier(module_verifiers: Verifiers) -> VerifierProcess:
    return module_verifiers.start()


@pytest.fixture(scope="module")
def traefik(module_verifiers: Verifiers) -> VerifierProcess:
    """A verifier called as Traefik's ForwardAuth calls it (X-Forwarded-Method/-Uri)."""
    return module_verifiers.start(PMKEYS_GATEWAY="traefik")


@pytest.fixture(scope="module")
def nginx(module_verifiers: Verifiers) -> VerifierProcess:
    """A verifier called as nginx auth_request calls it (X-Original-Method/-URI)."""
    return module_verifiers.start(PMKEYS_GATEWAY="nginx")


@pytest.fixture(scope="module")
def envoy(module_verifiers: Verifiers) -> VerifierProcess:
    """A verifier called as Envoy ext_authz calls it (method kept, path appended)."""
    return module_verifiers.start(PMKEYS_GATEWAY="envoy")


@pytest.fixture(scope="module")
def sender(kube: Kube, ns: str) -> tuple[str, dict[str, Any]]:
    return issue(kube, ns, "sender", scopes=["send_email"], tier="starter")


@pytest.fixture(scope="module")
def analyst(kube: Kube, ns: str) -> tuple[str, dict[str, Any]]:
    return issue(kube, ns, "analyst", scopes=["read_analytics", "manage_contacts"], tier="pro")


def body_of(response: Any) -> dict[str, Any]:
    return json.loads(response.text)


# -- POST /v1/verify ------------------------------------------------------------------------------
def test_valid_key_with_its_scope_is_allowed(verifier: VerifierProcess, sender: tuple[str, dict], ns: str) -> None:
    plaintext, status = sender
    response = verifier.verify(plaintext, "send_email")
    assert response.status_code == 200
    decision = body_of(response)
    assert decision["allowed"] is True and decision["reason"] == "allowed"
    assert decision["tenant"] == ns
    assert decision["keyId"] == status["keyId"]
    assert decision["scopes"] == ["send_email"]
    assert decision["rateLimit"]["limit"] == 60
    assert response.headers["RateLimit-Policy"] == '"starter";q=60;w=60'
    assert response.headers["RateLimit"].startswith('"starter";r=')
    assert "WWW-Authenticate" not in response.headers


def test_any_valid_key_passes_when_no_scope_is_asked(verifier: VerifierProcess, analyst: tuple[str, dict]) -> None:
    response = verifier.verify(analyst[0], None)
    assert response.status_code == 200
    assert body_of(response)["scopes"] == ["read_analytics", "manage_contacts"]
    assert response.headers["RateLimit-Policy"] == '"pro";q=300;w=60'


def test_missing_scope_is_403(verifier: VerifierProcess, sender: tuple[str, dict]) -> None:
    response = verifier.verify(sender[0], "read_analytics")
    assert response.status_code == 403
    decision = body_of(response)
    assert decision["reason"] == "scope_missing"
    assert "read_analytics" in decision["message"]
    assert "X-Tenant-Id" not in response.headers


@pytest.mark.parametrize(
    "text",
    ["", "pm_live_short", "pm_prod_" + "a" * 32, "pm_live_" + "!" * 32, "x" * 40, "pm_live_" + "a" * 31 + "é"],
)
def test_malformed_keys_are_401_without_echo(verifier: VerifierProcess, text: str) -> None:
    response = verifier.verify(text, "send_email")
    assert response.status_code == 401
    assert body_of(response)["reason"] == "malformed"
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="pmkeys", error="invalid_token"')
    if text:
        assert text not in response.text


def test_unknown_key_is_401(verifier: VerifierProcess) -> None:
    response = verifier.verify(random_key(), "send_email")
    assert response.status_code == 401
    assert body_of(response)["reason"] == "unknown"
    assert "invalid_token" in response.headers["WWW-Authenticate"]


def test_revoked_key_is_401(verifier: VerifierProcess, kube: Kube, ns: str) -> None:
    plaintext, _ = issue(kube, ns, "to-revoke")
    assert verifier.verify(plaintext, "send_email").status_code == 200
    kube.patch_key(ns, "to-revoke", {"spec": {"revoked": True}})
    refused = wait_for(
        lambda: (r := verifier.verify(plaintext, "send_email")).status_code == 401 and r,
        timeout=5,
        what="revoked key refused",
    )
    assert body_of(refused)["reason"] == "revoked"


def test_expired_key_is_401(verifier: VerifierProcess, kube: Kube, ns: str) -> None:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    plaintext, _ = issue(kube, ns, "short-lived", expiresAt=expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert verifier.verify(plaintext, "send_email").status_code == 200
    time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
    response = verifier.verify(plaintext, "send_email")
    assert response.status_code == 401
    assert body_of(response)["reason"] in ("expired", "revoked")  # the operator may have revoked it already


def test_over_the_limit_is_429_with_headers(verifier: VerifierProcess, kube: Kube, ns: str) -> None:
    plaintext, _ = issue(kube, ns, "tiny", rateLimit=3)
    codes = [verifier.verify(plaintext, "send_email") for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    # At most 3 in any 60 s: each request leaves one less, and the first one leaves the window
    # (r grows again) 60 s after it was admitted.
    assert [r.headers["RateLimit"] for r in codes[:3]] == [
        '"starter";r=2;t=60',
        '"starter";r=1;t=60',
        '"starter";r=0;t=60',
    ]
    refused = codes[3]
    assert body_of(refused)["reason"] == "rate_limited"
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Policy"] == '"starter";q=3;w=60'
    assert refused.headers["RateLimit"].startswith('"starter";r=0;t=')


# -- the gateway endpoint -------------------------------------------------------------------------
def test_gateway_allows_mapped_route_with_identity_headers(
    traefik: VerifierProcess, sender: tuple[str, dict], ns: str
) -> None:
    plaintext, status = sender
    response = traefik.authz("", api_key=plaintext, X_Forwarded_Method="POST", X_Forwarded_Uri="/v1/messages?x=1")
    assert response.status_code == 200
    assert response.headers["X-Tenant-Id"] == ns
    assert response.headers["X-Api-Key-Id"] == status["keyId"]
    assert response.headers["X-Api-Key-Scopes"] == "send_email"
    assert response.headers["X-Api-Key-Environment"] == "live"
    assert response.headers["RateLimit-Policy"] == '"starter";q=60;w=60'


def test_gateway_reads_x_api_key_and_envoy_paths(envoy: VerifierProcess, sender: tuple[str, dict]) -> None:
    # Envoy ext_authz keeps the method and appends the original path to the authz path.
    response = envoy.http.post("/v1/authz/v1/messages/batch", headers={"X-API-Key": sender[0]})
    assert response.status_code == 200
    assert response.headers["X-Api-Key-Scopes"] == "send_email"


def test_gateway_nginx_original_headers(nginx: VerifierProcess, analyst: tuple[str, dict]) -> None:
    response = nginx.authz("", api_key=analyst[0], X_Original_Method="GET", X_Original_URI="/v1/analytics/daily")
    assert response.status_code == 200


def test_gateway_refuses_wrong_scope_with_403(traefik: VerifierProcess, sender: tuple[str, dict]) -> None:
    response = traefik.authz("", api_key=sender[0], X_Forwarded_Method="GET", X_Forwarded_Uri="/v1/analytics")
    assert response.status_code == 403
    assert body_of(response)["reason"] == "scope_missing"
    assert response.headers["X-Pmkeys-Reason"] == "scope_missing"
    assert "X-Tenant-Id" not in response.headers


def test_gateway_route_for_any_valid_key(envoy: VerifierProcess, sender: tuple[str, dict]) -> None:
    assert envoy.authz("/v1/me", api_key=sender[0]).status_code == 200


def test_gateway_unmapped_route_is_denied(envoy: VerifierProcess, sender: tuple[str, dict]) -> None:
    response = envoy.authz("/v1/admin", api_key=sender[0])
    assert response.status_code == 403
    assert body_of(response)["reason"] == "route_unmapped"


def test_gateway_bad_key_beats_unmapped_route(envoy: VerifierProcess) -> None:
    assert envoy.authz("/v1/admin", api_key=random_key()).status_code == 401


def test_gateway_scope_header_for_unmapped_routes(envoy: VerifierProcess, sender: tuple[str, dict]) -> None:
    # Envoy mode: the header Envoy's headers_to_add sets (it replaces a client's).
    assert envoy.authz("/v2/send", api_key=sender[0], X_Required_Scope="send_email").status_code == 200
    assert envoy.authz("/v2/send", api_key=sender[0], X_Required_Scope="manage_contacts").status_code == 403
    bad = envoy.authz("/v2/send", api_key=sender[0], X_Required_Scope="everything")
    assert bad.status_code == 400
    assert "send_email, read_analytics, manage_contacts" in bad.text


def test_gateway_scope_from_the_auth_url(traefik: VerifierProcess, sender: tuple[str, dict]) -> None:
    def check(uri: str, scope: str) -> int:
        headers = {"X-API-Key": sender[0], "X-Forwarded-Method": "GET", "X-Forwarded-Uri": uri}
        return traefik.http.get("/v1/authz", params={"scope": scope}, headers=headers).status_code

    assert check("/v2/send", "send_email") == 200
    assert check("/v2/x", "read_analytics") == 403
    assert check("/v2/x", "all") == 400


def test_gateway_route_map_beats_the_scope_header(envoy: VerifierProcess, sender: tuple[str, dict]) -> None:
    # A client cannot lift a mapped route's requirement by sending its own scope header.
    response = envoy.authz("/v1/analytics", api_key=sender[0], X_Required_Scope="send_email")
    assert response.status_code == 403


def test_gateway_path_tricks_do_not_escape_the_route_map(traefik: VerifierProcess, sender: tuple[str, dict]) -> None:
    for uri in ("/v1//analytics", "/v1/messages/../analytics", "/v1/%61nalytics"):
        response = traefik.authz("", api_key=sender[0], X_Forwarded_Method="GET", X_Forwarded_Uri=uri)
        assert response.status_code == 403, uri


def test_gateway_without_key_is_401_with_bare_challenge(envoy: VerifierProcess) -> None:
    response = envoy.authz("/v1/messages", method="POST")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="pmkeys"'
    basic = envoy.authz("/v1/messages", method="POST", Authorization="Basic dXNlcjpwYXNz")
    assert basic.status_code == 401


def test_gateway_rate_limit_as_403_for_nginx(nginx: VerifierProcess, kube: Kube, ns: str) -> None:
    plaintext, _ = issue(kube, ns, "nginx-limited", rateLimit=1)
    original = {"X-API-Key": plaintext, "X-Original-Method": "GET", "X-Original-URI": "/v1/me"}
    first = nginx.http.get("/v1/authz", headers=original)
    assert first.status_code == 200
    second = nginx.http.get("/v1/authz", params={"rate_limited_status": 403}, headers=original)
    assert second.status_code == 403
    assert second.headers["X-Pmkeys-Reason"] == "rate_limited"
    assert int(second.headers["Retry-After"]) >= 1
    third = nginx.http.get("/v1/authz", headers=original)
    assert third.status_code == 429


# -- errors reported by the API ---------------------------------------------------------------------
def test_error_reports(verifier: VerifierProcess, sender: tuple[str, dict], analyst: tuple[str, dict]) -> None:
    key_id = sender[1]["keyId"]
    with_key = {"Authorization": f"Bearer {sender[0]}"}
    accepted = verifier.http.post(f"/v1/keys/{key_id}/errors", json={"count": 2}, headers=with_key)
    assert accepted.status_code == 202
    assert body_of(accepted) == {"keyId": key_id, "counted": 2}
    assert verifier.http.post(f"/v1/keys/{key_id}/errors", json={"count": 2}).status_code == 401, "no key"
    other = {"Authorization": f"Bearer {analyst[0]}"}
    assert verifier.http.post(f"/v1/keys/{key_id}/errors", headers=other).status_code == 403, "another key"
    assert verifier.http.post("/v1/keys/kzzzzzzzzzzz/errors", headers=with_key).status_code == 403
    assert verifier.http.post("/v1/keys/NOT-AN-ID/errors", headers=with_key).status_code == 422
    assert verifier.http.post(f"/v1/keys/{key_id}/errors", json={"count": 0}, headers=with_key).status_code == 422


# -- limits and validation ------------------------------------------------------------------------
def test_oversized_body_is_413(verifier: VerifierProcess) -> None:
    response = verifier.http.post(
        "/v1/verify", content=b'{"key": "' + b"a" * 10_000 + b'"}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_oversized_streamed_body_is_413(verifier: VerifierProcess) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 1000

    assert verifier.http.post("/v1/verify", content=chunks()).status_code == 413


def test_oversized_headers_are_rejected(verifier: VerifierProcess) -> None:
    response = verifier.http.get("/v1/authz/v1/me", headers={f"X-Pad-{i}": "p" * 1000 for i in range(20)})
    assert response.status_code == 431


def test_long_key_header_is_401_not_an_error(verifier: VerifierProcess) -> None:
    response = verifier.http.get("/v1/authz/v1/me", headers={"X-API-Key": "pm_live_" + "a" * 5000})
    assert response.status_code == 401


def test_invalid_json_is_422_without_echo(verifier: VerifierProcess) -> None:
    secretish = random_key()
    response = verifier.http.post(
        "/v1/verify",
        content=f'{{"key": "{secretish}", "scope": "everything"}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert secretish not in response.text
    assert "send_email" in response.text  # names the allowed values
    broken = verifier.http.post(
        "/v1/verify", content=f'{{"key": "{secretish}"', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422
    assert secretish not in broken.text


# -- operations -------------------------------------------------------------------------------------
def test_health_readiness_metrics_openapi(verifier: VerifierProcess, sender: tuple[str, dict]) -> None:
    verifier.verify(sender[0], "send_email")
    assert verifier.http.get("/healthz").text == "ok"
    ready = verifier.http.get("/readyz")
    assert ready.status_code == 200
    checks = {"vault": True, "preload": True, "watch": True, "plans": True, "fresh": True, "serving": True}
    assert body_of(ready)["checks"] == checks
    metrics = verifier.metrics()
    assert 'pmkeys_verifier_verifications_total{outcome="allowed"}' in metrics
    assert 'pmkeys_verifier_cache_lookups_total{result="hit"}' in metrics
    assert "pmkeys_verifier_vault_request_duration_seconds_count" in metrics
    assert "pmkeys_verifier_bcrypt_pending 0.0" in metrics
    assert "pmkeys_verifier_watch_synced 1.0" in metrics
    assert sender[1]["keyId"] not in metrics, "no key ids in metric labels"
    spec = verifier.http.get("/openapi.json").json()
    assert {"/v1/verify", "/v1/authz", "/v1/keys/{key_id}/errors", "/healthz", "/readyz"} <= set(spec["paths"])
