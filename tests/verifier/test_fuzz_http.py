"""Whatever a client sends, the HTTP service answers with a 4xx or a decision, never a 5xx,
and never repeats a key-like input back (Hypothesis against a running verifier)."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.verifier.conftest import VerifierProcess, Verifiers

pytestmark = [pytest.mark.integration]

EXPECTED = {200, 400, 401, 403, 413, 422, 429, 431}
# What an HTTP client can send at all: printable ASCII without surrounding whitespace.
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120).map(str.strip)
secretish = st.builds(lambda: "pm_live_" + secrets.token_urlsafe(24)[:32])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
fuzz = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def verifier(module_verifiers: Verifiers) -> VerifierProcess:
    return module_verifiers.start()


@fuzz
@given(
    key=st.one_of(secretish, st.text(max_size=80), json_values),
    scope=st.one_of(st.none(), st.sampled_from(["send_email", "read_analytics", "nope"]), json_values),
    extra=st.dictionaries(st.sampled_from(["client", "other"]), json_values, max_size=2),
)
def test_verify_endpoint(verifier: VerifierProcess, key: Any, scope: Any, extra: dict[str, Any]) -> None:
    body = json.dumps({"key": key, "scope": scope, **extra})
    response = verifier.http.post("/v1/verify", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code in EXPECTED
    if isinstance(key, str) and len(key) >= 8:
        assert key not in response.text


@fuzz
@given(raw=st.binary(max_size=600))
def test_verify_endpoint_with_garbage_bodies(verifier: VerifierProcess, raw: bytes) -> None:
    response = verifier.http.post("/v1/verify", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code in EXPECTED


@fuzz
@given(
    authorization=header_text,
    api_key=st.one_of(secretish, header_text),
    method=st.one_of(st.sampled_from(["GET", "POST", "DELETE"]), header_text),
    uri=header_text,
    scope_header=header_text,
    query=st.dictionaries(st.sampled_from(["scope", "rate_limited_status", "x"]), header_text, max_size=2),
)
def test_gateway_endpoint(
    verifier: VerifierProcess,
    authorization: str,
    api_key: str,
    method: str,
    uri: str,
    scope_header: str,
    query: dict[str, str],
) -> None:
    headers = {
        "Authorization": authorization,
        "X-API-Key": api_key,
        "X-Forwarded-Method": method,
        "X-Forwarded-Uri": uri,
        "X-Required-Scope": scope_header,
    }
    response = verifier.http.get("/v1/authz" + uri.split("?")[0][:50], params=query, headers=headers)
    assert response.status_code in EXPECTED | {404, 405}
    if len(api_key) >= 8 and api_key.startswith("pm_"):
        assert api_key not in response.text
