"""Headers in and out: key extraction, client address, RateLimit fields, WWW-Authenticate."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pmkeys.verify import headers as h
from pmkeys.verify.decision import Decision, Outcome

ALLOWED = Decision(Outcome.ALLOWED, "acme", "kabcdefghijk", ("send_email", "read_analytics"), "pro", 300, 299, 1)


def test_bearer_wins_and_other_schemes_are_ignored() -> None:
    assert h.credential("Bearer abc", "xyz") == "abc"
    assert h.credential("bearer   abc  ", None) == "abc"
    assert h.credential("Basic dXNlcg==", "xyz") == "xyz"
    assert h.credential("Bearer ", "xyz") == "xyz"
    assert h.credential(None, "  xyz ") == "xyz"
    assert h.credential(None, None) is None
    assert h.credential("", "") is None


@given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=300)))
def test_credential_never_fails_and_returns_a_stripped_part_of_the_input(auth: str, api_key: str | None) -> None:
    found = h.credential(auth, api_key)
    if found is not None:
        assert found == found.strip() and found
        assert found in auth or (api_key is not None and found in api_key)


def test_client_address_is_the_rightmost_forwarded_entry() -> None:
    assert h.client_address("1.1.1.1, 2.2.2.2, 3.3.3.3", "10.0.0.1") == "3.3.3.3"
    assert h.client_address(None, "10.0.0.1") == "10.0.0.1"
    assert h.client_address(" , ", "10.0.0.1") == "10.0.0.1"
    assert len(h.client_address("x" * 500, None)) == 64


def test_rate_limit_fields_follow_the_ietf_draft() -> None:
    assert h.rate_limit_headers(ALLOWED) == {"RateLimit-Policy": '"pro";q=300;w=60', "RateLimit": '"pro";r=299;t=1'}
    assert h.rate_limit_headers(Decision(Outcome.UNKNOWN)) == {}


def test_identity_headers_only_when_allowed() -> None:
    assert h.identity_headers(ALLOWED, "pm_live_" + "a" * 32) == {
        "X-Tenant-Id": "acme",
        "X-Api-Key-Id": "kabcdefghijk",
        "X-Api-Key-Scopes": "send_email,read_analytics",
        "X-Api-Key-Environment": "live",
    }
    assert h.identity_headers(ALLOWED, "pm_test_" + "a" * 32)["X-Api-Key-Environment"] == "test"
    assert h.identity_headers(Decision(Outcome.SCOPE_MISSING, "acme", "kabcdefghijk")) == {}


def test_refusals_carry_challenge_reason_and_retry() -> None:
    unknown = h.decision_headers(Decision(Outcome.UNKNOWN))
    assert unknown["WWW-Authenticate"] == (
        'Bearer realm="pmkeys", error="invalid_token", error_description="the API key is not valid"'
    )
    assert unknown["X-Pmkeys-Reason"] == "unknown"
    bare = h.decision_headers(Decision(Outcome.MALFORMED), presented=False)
    assert bare["WWW-Authenticate"] == 'Bearer realm="pmkeys"'
    limited = h.decision_headers(Decision(Outcome.RATE_LIMITED, "a", "k", (), "starter", 60, 0, 60, 1))
    assert limited["Retry-After"] == "1" and "WWW-Authenticate" not in limited
    assert limited["RateLimit"] == '"starter";r=0;t=60'
    busy = h.decision_headers(Decision(Outcome.BUSY, retry_after=1))
    assert busy["Retry-After"] == "1"


def test_nginx_asks_for_rate_limits_as_403() -> None:
    limited = Decision(Outcome.RATE_LIMITED, retry_after=3)
    assert h.deny_status(limited, rate_limited_status=403) == 403
    assert h.deny_status(limited, rate_limited_status=429) == 429
    assert h.deny_status(Decision(Outcome.UNKNOWN), rate_limited_status=403) == 401


def test_every_outcome_has_a_status_and_a_message() -> None:
    for outcome in Outcome:
        decision = Decision(outcome)
        assert decision.status in (200, 401, 403, 429, 503)
        assert decision.message
