"""The JSON bodies of the verifier's HTTP API, and the refusals its OpenAPI document lists.

Request models forbid unknown fields and bound every string: a body is parsed before anything
else runs, and a key is at most 256 characters. Validation errors are answered by
:func:`pmkeys.verify.responses.invalid`, which drops the input pydantic would echo (it may be a
key).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pmkeys.api.vocabulary import Scope
from pmkeys.verify.decision import Outcome


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(max_length=256, description="The API key as presented by the caller.")
    scope: Scope | None = Field(default=None, description="The scope the request needs; null: any valid key.")
    client: str | None = Field(
        default=None, max_length=128, description="Who is asking (e.g. the caller's IP), for the failed-attempt limit."
    )


class TenantLimitBody(BaseModel):
    limit: int = Field(description="Requests per minute of all the tenant's keys together (its plan).")
    remaining: int = Field(description="Requests the tenant's keys may still make in the current 60-second window.")
    reset: int = Field(description="Seconds until remaining grows.")


class RateLimitBody(BaseModel):
    limit: int = Field(description="The key's requests per minute (0: no limit applied).")
    remaining: int = Field(description="Requests the key may still make in the current 60-second window.")
    reset: int = Field(description="Seconds until remaining grows.")
    retryAfter: int = Field(description="Seconds to wait before retrying (0 when allowed).")
    tenant: TenantLimitBody | None = Field(default=None, description="The tenant-wide limit; null: the plan has none.")
    limitedBy: Literal["key", "tenant"] | None = Field(default=None, description="Which limit refused the request.")


class DecisionBody(BaseModel):
    allowed: bool
    reason: Outcome
    message: str
    tenant: str | None
    keyId: str | None
    scopes: list[str]
    rateLimit: RateLimitBody


class ErrorReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, ge=1, le=10_000, description="How many requests failed.")


class ErrorReceipt(BaseModel):
    keyId: str
    counted: int


DENIALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Malformed, unknown, revoked or expired key (with WWW-Authenticate)."},
    403: {"description": "The key lacks the scope, or the route has none and the policy denies."},
    429: {"description": "Over the key's rate limit, or too many failures from this client (Retry-After)."},
    503: {"description": "Vault, Redis (closed policy) or the bcrypt pool cannot answer now; retry."},
    413: {"description": "The request body is larger than the configured limit."},
    431: {"description": "The request headers are larger than the configured limit."},
}
BAD_QUERY: dict[int | str, dict[str, Any]] = {
    400: {"description": "A query parameter or the scope header names a value that does not exist."},
}
