"""The JSON API's request and response models (and so its OpenAPI document).

Requests check shape and vocabulary (types, the enums of :mod:`pmkeys.api.vocabulary`, name
syntax, unknown fields); the rules that belong to the resource (durations, a rate limit within
the tier's ceiling, immutable fields) stay in the CRD, and the API server's answer is passed on
with its field names (:mod:`pmkeys.ui.errors`). Field names are camelCase like the CRD's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from pmkeys.api.durations import DURATION_PATTERN
from pmkeys.api.model import DNS_SUBDOMAIN, MAX_RATE_LIMIT
from pmkeys.api.vocabulary import TIER_RATE_LIMITS, Environment, Phase, Scope, Tier

#: Grace periods the UI offers when regenerating a key: now, 1 hour, 24 hours, 7 days.
GRACE_CHOICES: dict[str, str] = {"0": "Immediately", "1h": "1 hour", "24h": "24 hours", "7d": "7 days"}
GracePeriod = Literal["0", "1h", "24h", "7d"]
#: Scheduled rotation intervals the create form offers (the API accepts any CRD duration).
ROTATION_CHOICES: dict[str, str] = {
    "0": "Never",
    "30d": "Every 30 days",
    "90d": "Every 90 days",
    "180d": "Every 180 days",
    "365d": "Every year",
}
KEY_NAME_PATTERN = DNS_SUBDOMAIN
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: What to say instead of "String should match pattern '^…$'", per field.
PATTERN_HINTS: dict[str, str] = {
    "name": "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
    "namespace": "a namespace name: lowercase letters, digits and '-'",
    "rotationInterval": "use <number><unit> with units d, h, m, s (e.g. 90d, 720h, 1h30m), or 0",
    "actor": "a username, without NUL characters",
}


class _Request(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


def _tier_ceiling(tier: Tier, limit: int) -> dict[str, Any]:
    """The CRD's CEL rule "rateLimit within the tier's ceiling", written down for API clients
    (JSON Schema if/then; the API server enforces it and answers 422 naming rateLimit)."""
    chosen: dict[str, Any] = {"properties": {"tier": {"const": tier.value}}, "required": ["tier"]}
    if tier is Tier.STARTER:  # the default tier also applies when none is given
        chosen = {"anyOf": [chosen, {"not": {"required": ["tier"]}}]}
    ceiling = {"anyOf": [{"type": "integer", "maximum": limit}, {"type": "null"}]}
    return {"if": chosen, "then": {"properties": {"rateLimit": ceiling}}}


class KeyCreate(_Request):
    """A new key. Only ``name`` and ``scopes`` are required."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=KEY_NAME_PATTERN,
        description="Name of the TenantApiKey (and of its Secret): lowercase letters, digits, '-', '.'.",
    )
    display_name: str = Field(default="", max_length=128, description="Human-readable name.")
    environment: Environment = Field(default=Environment.LIVE, description="live (pm_live_…) or test (pm_test_…).")
    scopes: list[Scope] = Field(
        min_length=1, max_length=len(Scope), description="What the key may do.", json_schema_extra={"uniqueItems": True}
    )
    tier: Tier = Field(default=Tier.STARTER, description="Rate-limit tier.")
    rate_limit: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RATE_LIMIT,
        description="Requests per minute below the tier's ceiling; unset = the ceiling.",
    )
    expires_at: dt.datetime | None = Field(default=None, description="RFC 3339 time after which the key stops working.")
    rotation_interval: str = Field(
        default="0",
        max_length=32,
        pattern=DURATION_PATTERN,
        description="Scheduled rotation: <number><unit> with units d, h, m, s (e.g. 90d, 720h); 0 = never.",
    )
    grace_period: str | None = Field(
        default=None,
        max_length=32,
        pattern=DURATION_PATTERN,
        description="How long a rotated key keeps working (e.g. 1h, 24h); unset = the CRD's default, 24h.",
    )

    model_config = ConfigDict(json_schema_extra={"allOf": [_tier_ceiling(t, n) for t, n in TIER_RATE_LIMITS.items()]})

    @field_validator("scopes")
    @classmethod
    def _no_repeats(cls, value: list[Scope]) -> list[Scope]:
        repeated = sorted({s.value for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"each scope at most once; repeated: {', '.join(repeated)}")
        return value

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        if value <= dt.datetime.now(dt.UTC):
            raise ValueError("must be in the future")
        return value


class Regenerate(_Request):
    grace_period: GracePeriod = Field(
        description="How long the current key keeps working: 0 (revoke it now), 1h, 24h or 7d."
    )


class Revoke(_Request):
    confirm: str = Field(max_length=253, description="The key's name, typed again to confirm.")


class FieldMessage(_Response):
    field: str
    message: str


class ErrorDetail(_Response):
    code: str = Field(description="Stable machine-readable code, e.g. invalid, forbidden, already_revealed.")
    message: str
    fields: list[FieldMessage] = Field(default_factory=list)


class ErrorBody(_Response):
    error: ErrorDetail


class UsageView(_Response):
    requests: int = 0
    errors: int = 0
    last_used_at: dt.datetime | None = None


class RotationView(_Response):
    interval: str = "0"
    grace_period: str = "24h"
    counter: int = 0
    observed_counter: int = 0


class PreviousKeyView(_Response):
    key_id: str
    display_prefix: str = ""
    not_after: dt.datetime | None = None


class ConditionView(_Response):
    type: str
    status: str
    reason: str = ""
    message: str = ""


class KeyView(_Response):
    name: str
    namespace: str
    uid: str = ""
    tenant: str = ""
    display_name: str = ""
    environment: Environment = Environment.LIVE
    scopes: list[Scope] = Field(default_factory=list)
    tier: Tier = Tier.STARTER
    rate_limit: int = Field(description="Effective requests per minute.")
    phase: Phase = Phase.PENDING
    message: str = ""
    ready: bool = False
    revoked: bool = False
    key_id: str | None = None
    display_prefix: str | None = None
    secret_name: str | None = None
    created_at: dt.datetime | None = None
    last_rotated_at: dt.datetime | None = None
    next_rotation_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    usage: UsageView = Field(default_factory=UsageView)
    rotation: RotationView = Field(default_factory=RotationView)
    previous_keys: list[PreviousKeyView] = Field(default_factory=list)
    conditions: list[ConditionView] = Field(default_factory=list)
    generation: int = 0
    observed_generation: int | None = None


class KeyList(_Response):
    items: list[KeyView]


class EventView(_Response):
    type: str = "Normal"
    reason: str = ""
    message: str = ""
    time: dt.datetime | None = None
    count: int = 1
    source: str = ""


class EventList(_Response):
    items: list[EventView]


class AuditRecordView(_Response):
    """One audit record (see docs/audit.md): who did what, when, from where, with what outcome."""

    seq: int
    at: dt.datetime
    action: str
    outcome: str
    actor: str = Field(description="Kubernetes username (or the signed-in UI user); empty when unknown.")
    groups: list[str] = Field(default_factory=list)
    actor_source: str = Field(description="admission, ui, system or unknown: how the actor is known.")
    source_address: str = ""
    namespace: str = ""
    name: str = Field(default="", description="The TenantApiKey's name.")
    key_id: str = ""
    reason: str = ""
    details: dict[str, Any] = Field(default_factory=dict)
    hash: str = Field(description="The record's link in the hash chain (hex), as pmkeys audit verify checks it.")


class AuditList(_Response):
    items: list[AuditRecordView]
    next_before: int | None = Field(default=None, description="Pass as `before` for the next (older) page.")


class RevealedKey(_Response):
    key_id: str
    api_key: str = Field(description="The plaintext key. Shown once: a second reveal answers 409.")
    environment: Environment


class RegenerateResult(_Response):
    previous_key_id: str
    counter: int
    grace_period: GracePeriod
    key: KeyView


class NamespaceView(_Response):
    namespace: str
    tenant: str
    can_manage: bool
    can_reveal: bool


class Me(_Response):
    username: str
    groups: list[str]
    namespaces: list[NamespaceView]


class TierView(_Response):
    name: Tier
    rate_limit: int


class Vocabulary(_Response):
    """What the create form offers; the same words the CRD accepts."""

    environments: list[Environment] = Field(default_factory=lambda: list(Environment))
    scopes: list[Scope] = Field(default_factory=lambda: list(Scope))
    tiers: list[TierView] = Field(
        default_factory=lambda: [TierView(name=t, rate_limit=n) for t, n in TIER_RATE_LIMITS.items()]
    )
    grace_periods: list[str] = Field(default_factory=lambda: list(GRACE_CHOICES))
    phases: list[Phase] = Field(default_factory=lambda: list(Phase))


class TenantUseView(_Response):
    """The tenant-wide limit's current use, as the verifiers last wrote it into the plan's status."""

    requests: int = Field(description="Requests admitted in the window, all the tenant's keys together.")
    limit: int = Field(description="The tenant-wide limit: requests in any window.")
    window_seconds: int = 60
    as_of: dt.datetime = Field(description="When the verifiers measured it.")
    age_seconds: int = Field(description="How old the figure was when this answer was made.")


class PlanRow(_Response):
    label: str
    value: str


class PlanView(_Response):
    """The namespace's TenantPlan as its tenant sees it. ``hasPlan`` false: the namespace has
    none (``message`` says what to do); the limits are then null."""

    namespace: str
    has_plan: bool
    message: str = ""
    source: str = Field(default="", description="The plan object, <namespace>/plan.")
    tier: Tier | None = None
    keys: int = Field(description="TenantApiKey objects in the namespace (revoked ones count).")
    max_keys: int | None = None
    key_rate_limit: int | None = Field(default=None, description="Ceiling of one key, requests per minute.")
    tenant_rate_limit: int | None = Field(default=None, description="All keys together, requests per minute.")
    tenant_use: TenantUseView | None = Field(default=None, description="Null until a verifier has reported it.")
    allowed_tiers: list[Tier] = Field(default_factory=list)
    scopes: list[Scope] = Field(default_factory=list)
    environments: list[Environment] = Field(default_factory=list)
    min_rotation_interval: str | None = None
    max_grace_period: str | None = None
    max_keys_in_grace: int | None = None
    rows: list[PlanRow] = Field(default_factory=list, description="What the page and kubectl pmkeys plan show.")
