"""HTTP headers in and out of the verifier, as pure functions.

In: the key (``Authorization: Bearer …`` or ``X-API-Key``) and the client address. Which
headers carry the original method and path depends on the gateway
(:mod:`pmkeys.verify.gateway`).

Out: the identity headers gateways copy to the upstream (``X-Tenant-Id``, ``X-Api-Key-Id``,
``X-Api-Key-Scopes``, ``X-Api-Key-Environment``: ``live`` or ``test``, so an upstream can tell a
``pm_test_`` key from a live one), ``WWW-Authenticate`` on 401 (RFC 6750), ``Retry-After`` on
429/503, and
the rate-limit fields of the IETF httpapi draft (draft-ietf-httpapi-ratelimit-headers, the
structured-field form of draft 08 and later)::

    RateLimit-Policy: "starter";q=60;w=60, "tenant";q=120;w=60
    RateLimit: "starter";r=41;t=19, "tenant";r=7;t=2

``q`` is the quota per window ``w`` (seconds) — at most ``q`` requests in any ``w`` seconds,
exactly what is enforced (:mod:`pmkeys.verify.windows`) — ``r`` what is left in the current
window, ``t`` the seconds until ``r`` grows (when the oldest request of the window leaves it).
The key's policy is named after its tier; the second, ``"tenant"``, is the tenant-wide limit
of the tenant's plan that all its keys share, listed only when the plan has one. A client that
respects the smaller ``r`` of the two is never refused.
"""

from __future__ import annotations

from pmkeys.verify.decision import Decision, Outcome
from pmkeys.verify.windows import WINDOW_SECONDS

TENANT_HEADER = "X-Tenant-Id"
KEY_ID_HEADER = "X-Api-Key-Id"
SCOPES_HEADER = "X-Api-Key-Scopes"
ENVIRONMENT_HEADER = "X-Api-Key-Environment"
#: Every header the gateway passes to the upstream on success: each gateway configuration in
#: docs/verifier.md overwrites all of them, so a client cannot send its own.
IDENTITY_HEADERS = (TENANT_HEADER, KEY_ID_HEADER, SCOPES_HEADER, ENVIRONMENT_HEADER)
REASON_HEADER = "X-Pmkeys-Reason"
API_KEY_HEADER = "X-API-Key"
#: The name of the tenant-wide policy in the RateLimit fields.
TENANT_POLICY = "tenant"
REALM = "pmkeys"


def credential(authorization: str | None, api_key: str | None) -> str | None:
    """The presented key: a Bearer token wins over ``X-API-Key``; other schemes are ignored."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def client_address(forwarded_for: str | None, peer: str | None) -> str:
    """The client a gateway saw: the right-most ``X-Forwarded-For`` entry (the one the nearest
    proxy appended, which a client cannot forge), else the TCP peer."""
    if forwarded_for:
        last = forwarded_for.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return peer or ""


def _sf_string(value: str) -> str:
    """An RFC 8941 structured-field string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """``RateLimit-Policy`` and ``RateLimit``; empty when no limit applied to the decision."""
    if not decision.limit:
        return {}
    policy = _sf_string(decision.tier or "key")
    policies = f"{policy};q={decision.limit};w={WINDOW_SECONDS}"
    state = f"{policy};r={decision.remaining};t={decision.reset}"
    if decision.tenant_limit:
        policies += f', "{TENANT_POLICY}";q={decision.tenant_limit};w={WINDOW_SECONDS}'
        state += f', "{TENANT_POLICY}";r={decision.tenant_remaining};t={decision.tenant_reset}'
    return {"RateLimit-Policy": policies, "RateLimit": state}


def environment(key: str) -> str:
    """``live`` or ``test``, from the prefix of a key the verifier has accepted."""
    return "test" if key.startswith("pm_test_") else "live"


def identity_headers(decision: Decision, key: str = "") -> dict[str, str]:
    if not decision.allowed:
        return {}
    return {
        TENANT_HEADER: decision.tenant or "",
        KEY_ID_HEADER: decision.key_id or "",
        SCOPES_HEADER: ",".join(decision.scopes),
        ENVIRONMENT_HEADER: environment(key),
    }


def www_authenticate(decision: Decision, *, presented: bool) -> str:
    """RFC 6750: no error code when no credential was sent; ``invalid_token`` otherwise."""
    if not presented:
        return f'Bearer realm="{REALM}"'
    description = decision.message.replace('"', "'")
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{description}"'


def decision_headers(decision: Decision, *, presented: bool = True, key: str = "") -> dict[str, str]:
    """Every header the HTTP answer to ``decision`` (for the presented ``key``) carries."""
    headers = rate_limit_headers(decision)
    headers.update(identity_headers(decision, key))
    if decision.retry_after:
        headers["Retry-After"] = str(decision.retry_after)
    status = decision.status
    if status == 401:
        headers["WWW-Authenticate"] = www_authenticate(decision, presented=presented)
    if not decision.allowed:
        headers[REASON_HEADER] = decision.reason.value
    return headers


def deny_status(decision: Decision, *, rate_limited_status: int) -> int:
    """The status to answer with; nginx's auth_request relays only 401 and 403, so it asks for
    rate-limit refusals as 403 (and maps them back to 429 with ``error_page``)."""
    if decision.reason in (Outcome.RATE_LIMITED, Outcome.TOO_MANY_FAILURES):
        return rate_limited_status
    return decision.status
