"""The ``TenantApiKey`` resource as frozen pydantic models.

These models are the single source of truth for the resource: :mod:`pmkeys.api.crd` generates
the CRD's OpenAPI schema (with its CEL rules, carried in ``json_schema_extra``) from them, and
a test keeps ``crds/`` equal to the generated document. Field names are camelCase aliases, as
the Kubernetes API conventions ask; Python code uses snake_case.

Every default is explicit in the schema, so the API server fills it in and a GitOps diff never
sees the operator change the spec (the operator never writes ``spec``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from pmkeys.api.durations import DURATION_PATTERN
from pmkeys.api.vocabulary import (
    MANAGED_BY_LABEL,
    TIER_RATE_LIMITS,
    Environment,
    Phase,
    Scope,
    Tier,
)

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
MAX_RATE_LIMIT = max(TIER_RATE_LIMITS.values())


def _cel(rule: str, message: str, **extra: str) -> JsonDict:
    return {"rule": rule, "message": message, **extra}


def _immutable(field: str) -> JsonDict:
    return {"x-kubernetes-validations": [_cel("self == oldSelf", f"{field} is immutable")]}


_TIER_CEILING_MAP = "{" + ", ".join(f"'{t.value}': {n}" for t, n in TIER_RATE_LIMITS.items()) + "}"
_TIER_CEILING_TEXT = ", ".join(f"{t.value} {n}" for t, n in TIER_RATE_LIMITS.items())


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="ignore")


class RestartTarget(_Model):
    """A workload in the key's namespace whose pods restart after a rotation."""

    kind: Literal["Deployment", "StatefulSet"] = Field(description="Kind of the workload: Deployment or StatefulSet.")
    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the workload.")


class Rotation(_Model):
    interval: str = Field(
        default="0",
        max_length=32,
        pattern=DURATION_PATTERN,
        description=(
            "Issue a new key this long after the last one (e.g. 90d, 720h, 1h30m; units d, h, "
            "m, s). 0 turns scheduled rotation off."
        ),
    )
    grace_period: str = Field(
        default="24h",
        max_length=32,
        pattern=DURATION_PATTERN,
        description=(
            "How long the previous key keeps working after a rotation, never past expiresAt. 0 revokes it at once."
        ),
    )
    counter: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description=(
            "Bump this number to rotate the key once (GitOps-friendly manual rotation); the "
            "operator records the value it acted on in status.rotation.observedCounter."
        ),
        json_schema_extra={"x-kubernetes-validations": [_cel("self >= oldSelf", "rotation.counter can only increase")]},
    )
    restart_targets: list[RestartTarget] = Field(
        default_factory=list,
        max_length=10,
        description=(
            "Deployments/StatefulSets in this namespace to restart after a rotation; each must opt in "
            "with the annotation penguinmails.io/restart-on-rotation-of naming this TenantApiKey."
        ),
    )


class SecretTemplate(_Model):
    name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description=(
            "Name of the Secret that holds the key (data key `api-key`). Defaults to the "
            "TenantApiKey's own name; status.secretName shows the name in use. Immutable."
        ),
        json_schema_extra=_immutable("secret.name"),
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Extra labels for the Secret (the TenantApiKey's own labels are not copied).",
        json_schema_extra={
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE},
            "x-kubernetes-validations": [
                _cel(
                    f"!('{MANAGED_BY_LABEL}' in self)",
                    f"secret.labels must not set {MANAGED_BY_LABEL}: the operator owns it",
                ),
                _cel(
                    "self.all(k, size(k) <= 253)",
                    "secret.labels keys must be at most 253 characters",
                ),
            ],
        },
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="Extra annotations for the Secret (keys under penguinmails.io/ are reserved).",
        json_schema_extra={
            "additionalProperties": {"type": "string", "maxLength": 4096},
            "x-kubernetes-validations": [
                _cel(
                    "self.all(k, !k.startsWith('penguinmails.io/') && size(k) <= 253)",
                    "secret.annotations keys must be at most 253 characters and must not use "
                    "the reserved penguinmails.io/ prefix",
                )
            ],
        },
    )


class TenantApiKeySpec(_Model):
    tenant: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
        description=("Tenant id; must equal the penguinmails.io/tenant label of the namespace. Immutable."),
        json_schema_extra=_immutable("tenant"),
    )
    display_name: str = Field(default="", max_length=128, description="Human-readable name shown in the UI.")
    environment: Environment = Field(
        default=Environment.LIVE,
        description="live or test; decides the key prefix pm_live_ / pm_test_. Immutable.",
        json_schema_extra=_immutable("environment"),
    )
    scopes: list[Scope] = Field(
        min_length=1,
        max_length=len(Scope),
        description="What the key may do: send_email, read_analytics, manage_contacts.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    tier: Tier | None = Field(
        default=None,
        description=(
            f"Rate-limit tier, in requests per minute: {_TIER_CEILING_TEXT}. Unset: the tier of the "
            "namespace's TenantPlan (starter without one); never above the plan's tier."
        ),
    )
    rate_limit: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RATE_LIMIT,
        description="Requests per minute, below the tier's ceiling. Unset = the tier's limit.",
    )
    expires_at: datetime | None = Field(
        default=None,
        description="RFC 3339 time after which the key stops working. May be moved later.",
    )
    revoked: bool = Field(
        default=False,
        description=(
            "Set to true to revoke the key for good. Revocation cannot be undone: to get a "
            "working key again, create a new TenantApiKey."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!oldSelf || self",
                    "revoked cannot be set back to false: revocation is final; create a new TenantApiKey instead",
                )
            ]
        },
    )
    rotation: Rotation = Field(default_factory=Rotation)
    secret: SecretTemplate = Field(default_factory=SecretTemplate)

    @property
    def effective_rate_limit(self) -> int:
        """The limit without a plan (the operator applies the plan's ceiling on top)."""
        ceiling = TIER_RATE_LIMITS[self.tier or Tier.STARTER]
        return min(self.rate_limit, ceiling) if self.rate_limit else ceiling


SPEC_VALIDATIONS = [
    _cel(
        f"!has(self.rateLimit) || !has(self.tier) || self.rateLimit <= {_TIER_CEILING_MAP}[self.tier]",
        f"rateLimit must not exceed the tier's ceiling ({_TIER_CEILING_TEXT} requests/minute)",
        fieldPath=".rateLimit",
        reason="FieldValueInvalid",
    ),
]


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class PreviousKey(_Model):
    key_id: str
    display_prefix: str = ""
    not_after: datetime


class Usage(_Model):
    requests: int = 0
    errors: int = 0
    last_used_at: datetime | None = None


class RotationStatus(_Model):
    observed_counter: int = 0
    observed_annotation: str = ""


class TenantApiKeyStatus(_Model):
    phase: Phase = Phase.PENDING
    message: str = ""
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    key_id: str | None = None
    display_prefix: str | None = None
    secret_name: str | None = None
    created_at: datetime | None = None
    last_rotated_at: datetime | None = None
    next_rotation_at: datetime | None = None
    expires_at: datetime | None = None
    previous_keys: list[PreviousKey] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    effective_rate_limit: int | None = None
    #: The tier in force (the key's own, else its plan's).
    tier: Tier | None = None
    #: The TenantPlan applied (``<namespace>/plan``); empty when the namespace has none.
    plan: str | None = None
    #: Requests per minute all the tenant's keys share (the plan's); unset without a plan.
    tenant_rate_limit: int | None = None
    rotation: RotationStatus = Field(default_factory=RotationStatus)
    #: Key ids whose records are revoked; kept short (the Vault records are the full trail).
    revoked_key_ids: list[str] = Field(default_factory=list)
