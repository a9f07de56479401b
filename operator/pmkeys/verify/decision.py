"""What a verification decides, and what each outcome means over HTTP.

:class:`Outcome` is a closed vocabulary: metrics use it as a label (bounded cardinality),
gateways and services switch on it, and :data:`HTTP_STATUS` maps each one to the status code
the HTTP service answers, in one place. A :class:`Decision` carries everything a caller needs to
answer its own client: serve or not and why, whose key it is, and the rate-limit state for the
``RateLimit`` headers. It never holds the key itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Outcome(StrEnum):
    ALLOWED = "allowed"
    #: 401: not an API key at all (checked without any I/O).
    MALFORMED = "malformed"
    #: 401: well-formed, but no such key.
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    #: 401: past ``spec.expiresAt``, or a rotated-out key past its grace period.
    EXPIRED = "expired"
    #: 403: the key is valid but lacks the scope the request needs.
    SCOPE_MISSING = "scope_missing"
    #: 403: the gateway endpoint found no scope for the route and the policy is to deny.
    ROUTE_UNMAPPED = "route_unmapped"
    #: 403: the gateway endpoint refuses a path upstreams may read differently (encoded '/',
    #: dot segments, ';', …), rather than guess which route it is.
    PATH_AMBIGUOUS = "path_ambiguous"
    #: 429: the key, or its tenant's keys together, are over their per-minute limit.
    RATE_LIMITED = "rate_limited"
    #: 429: this client failed too often; only keys this process already verified still pass.
    TOO_MANY_FAILURES = "too_many_failures"
    #: 503: the bcrypt pool is full (a burst of first uses); retry shortly.
    BUSY = "busy"
    #: 503: Vault could not be read for a key this process has not cached.
    VAULT_UNAVAILABLE = "vault_unavailable"
    #: 503: Redis is down and the failure policy is ``closed``.
    LIMITER_UNAVAILABLE = "limiter_unavailable"


HTTP_STATUS: MappingProxyType[Outcome, int] = MappingProxyType(
    {
        Outcome.ALLOWED: 200,
        Outcome.MALFORMED: 401,
        Outcome.UNKNOWN: 401,
        Outcome.REVOKED: 401,
        Outcome.EXPIRED: 401,
        Outcome.SCOPE_MISSING: 403,
        Outcome.ROUTE_UNMAPPED: 403,
        Outcome.PATH_AMBIGUOUS: 403,
        Outcome.RATE_LIMITED: 429,
        Outcome.TOO_MANY_FAILURES: 429,
        Outcome.BUSY: 503,
        Outcome.VAULT_UNAVAILABLE: 503,
        Outcome.LIMITER_UNAVAILABLE: 503,
    }
)

#: Outcomes that count against the client's failed-attempt budget.
FAILURES = frozenset({Outcome.MALFORMED, Outcome.UNKNOWN, Outcome.REVOKED, Outcome.EXPIRED})

MESSAGES: MappingProxyType[Outcome, str] = MappingProxyType(
    {
        Outcome.ALLOWED: "the key is valid for this request",
        Outcome.MALFORMED: "not an API key (pm_live_ or pm_test_ and 32 letters or digits)",
        Outcome.UNKNOWN: "the API key is not valid",
        Outcome.REVOKED: "the API key was revoked",
        Outcome.EXPIRED: "the API key has expired",
        Outcome.SCOPE_MISSING: "the API key lacks the scope this request needs",
        Outcome.ROUTE_UNMAPPED: "no scope is configured for this route",
        Outcome.PATH_AMBIGUOUS: "the request path is ambiguous and was refused",
        Outcome.RATE_LIMITED: "over the rate limit; retry after Retry-After seconds",
        Outcome.TOO_MANY_FAILURES: "too many failed attempts from this client; retry after Retry-After seconds",
        Outcome.BUSY: "the verifier is busy checking new keys; retry shortly",
        Outcome.VAULT_UNAVAILABLE: "the key store is unavailable; retry shortly",
        Outcome.LIMITER_UNAVAILABLE: "the rate limiter is unavailable; retry shortly",
    }
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one request.

    ``limit`` is the key's requests per minute, ``remaining`` how many more it may make in the
    current 60-second window, ``reset`` the seconds until ``remaining`` grows, and
    ``retry_after`` the seconds to wait before the next request can pass (0 when allowed). The
    ``tenant_*`` fields are the same for the tenant-wide limit all the tenant's keys share (0
    when the tenant's plan has none); ``limited_by`` says which limit refused (``key`` or
    ``tenant``). They are 0 when no limit applied (the key was refused before rate limiting).
    """

    reason: Outcome
    tenant: str | None = None
    key_id: str | None = None
    scopes: tuple[str, ...] = ()
    tier: str | None = None
    limit: int = 0
    remaining: int = 0
    reset: int = 0
    retry_after: int = 0
    tenant_limit: int = 0
    tenant_remaining: int = 0
    tenant_reset: int = 0
    limited_by: str = ""
    #: Extra detail for humans (which scope was missing, what was malformed); never the key.
    detail: str = ""

    @property
    def allowed(self) -> bool:
        return self.reason is Outcome.ALLOWED

    @property
    def status(self) -> int:
        """The HTTP status code this decision is answered with."""
        return HTTP_STATUS[self.reason]

    @property
    def message(self) -> str:
        base = MESSAGES[self.reason]
        return f"{base}: {self.detail}" if self.detail else base

    def as_dict(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "reason": self.reason.value,
            "message": self.message,
            "tenant": self.tenant,
            "keyId": self.key_id,
            "scopes": list(self.scopes),
            "rateLimit": {
                "limit": self.limit,
                "remaining": self.remaining,
                "reset": self.reset,
                "retryAfter": self.retry_after,
                "tenant": (
                    {"limit": self.tenant_limit, "remaining": self.tenant_remaining, "reset": self.tenant_reset}
                    if self.tenant_limit
                    else None
                ),
                "limitedBy": self.limited_by or None,
            },
        }


def refused(reason: Outcome, detail: str = "", *, retry_after: int = 0) -> Decision:
    return Decision(reason, detail=detail, retry_after=retry_after)
