"""The words of the ``TenantApiKey`` and ``TenantPlan`` APIs, each defined once.

Tiers and what each one allows (:data:`TIER_PLANS`, the single table every limit comes from),
scopes, phases, condition types and reasons, labels and annotations. The CRD schema, the
admission policy, the operator, the verifier and the UI all import these; nothing else spells
them out.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

GROUP = "penguinmails.io"
VERSION = "v1alpha1"
KIND = "TenantApiKey"
PLURAL = "tenantapikeys"
SINGULAR = "tenantapikey"
SHORT_NAMES = ("tak",)
API_VERSION = f"{GROUP}/{VERSION}"
PLAN_KIND = "TenantPlan"
PLAN_PLURAL = "tenantplans"
PLAN_SINGULAR = "tenantplan"
PLAN_SHORT_NAMES = ("tplan",)
#: The one TenantPlan a tenant namespace may hold (the admission policy reads it by this name).
PLAN_NAME = "plan"


class Scope(StrEnum):
    SEND_EMAIL = "send_email"
    READ_ANALYTICS = "read_analytics"
    MANAGE_CONTACTS = "manage_contacts"


class Tier(StrEnum):
    STARTER = "starter"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class Environment(StrEnum):
    LIVE = "live"
    TEST = "test"


class TierPlan(NamedTuple):
    """What a tier allows unless the tenant's TenantPlan says otherwise."""

    #: Requests per minute of one key (its ceiling; ``spec.rateLimit`` may only go lower).
    key_rate_limit: int
    #: Requests per minute of all the tenant's keys together.
    tenant_rate_limit: int
    #: TenantApiKey objects the tenant may hold (revoked ones included: they are objects).
    max_keys: int
    scopes: tuple[Scope, ...]
    environments: tuple[Environment, ...]
    #: The shortest ``spec.rotation.interval`` a key may ask for (0, no scheduled rotation, is always allowed).
    min_rotation_interval: str
    #: The longest ``spec.rotation.gracePeriod`` a key may ask for.
    max_grace_period: str
    #: Previous keys still valid at once per TenantApiKey; a rotation beyond it ends the oldest grace.
    max_keys_in_grace: int


_ALL_SCOPES = tuple(Scope)
_ALL_ENVIRONMENTS = tuple(Environment)
#: The tiers, cheapest first: the defaults of every plan, written once.
TIER_PLANS: MappingProxyType[Tier, TierPlan] = MappingProxyType(
    {
        Tier.STARTER: TierPlan(60, 120, 5, _ALL_SCOPES, _ALL_ENVIRONMENTS, "24h", "24h", 2),
        Tier.PRO: TierPlan(300, 1000, 25, _ALL_SCOPES, _ALL_ENVIRONMENTS, "1h", "7d", 5),
        Tier.ENTERPRISE: TierPlan(1000, 5000, 100, _ALL_SCOPES, _ALL_ENVIRONMENTS, "1h", "30d", 10),
    }
)
#: Requests per minute each tier allows one key; an explicit ``spec.rateLimit`` may only go lower.
TIER_RATE_LIMITS: MappingProxyType[Tier, int] = MappingProxyType(
    {tier: plan.key_rate_limit for tier, plan in TIER_PLANS.items()}
)


class Phase(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    ROTATING = "Rotating"
    REVOKED = "Revoked"
    EXPIRED = "Expired"
    FAILED = "Failed"


class ConditionType(StrEnum):
    READY = "Ready"
    #: True while at least one previous key is still accepted (grace period).
    IN_GRACE = "InGracePeriod"
    #: True when the vault store answered the last reconciliation.
    VAULT_AVAILABLE = "VaultAvailable"


class Reason(StrEnum):
    """Condition reasons and Event reasons (CamelCase, as Kubernetes conventions ask)."""

    KEY_ISSUED = "KeyIssued"
    KEY_UPDATED = "KeyUpdated"
    KEY_ROTATED = "KeyRotated"
    KEY_REVOKED = "KeyRevoked"
    KEY_EXPIRED = "KeyExpired"
    GRACE_EXPIRED = "GraceExpired"
    KEY_RESTORED = "KeyRecordRestored"
    SECRET_REPAIRED = "SecretRepaired"
    SECRET_CONFLICT = "SecretConflict"
    TENANT_MISMATCH = "TenantMismatch"
    NAMESPACE_UNBOUND = "NamespaceNotBound"
    VAULT_UNAVAILABLE = "VaultUnavailable"
    VAULT_DENIED = "VaultDenied"
    VAULT_SEALED = "VaultSealed"
    INVALID_SPEC = "InvalidSpec"
    #: The key asks for more than the tenant's TenantPlan allows (and admission did not stop it).
    PLAN_EXCEEDED = "PlanExceeded"
    #: A manual rotation waits: too many of them for this key lately.
    ROTATION_HELD = "RotationDeferred"
    RESTART_TRIGGERED = "RestartTriggered"
    RESTART_FAILED = "RestartFailed"
    RESTART_REFUSED = "RestartRefused"
    ISSUING = "Issuing"
    ACTIVE = "Active"
    IN_GRACE = "PreviousKeyInGrace"
    NO_GRACE = "NoPreviousKey"
    REACHABLE = "Reachable"


#: Namespaces belong to one tenant; the label says which.
TENANT_LABEL = f"{GROUP}/tenant"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "pmkeys"
#: Secret annotations (public facts about the key, never the key).
KEY_ID_ANNOTATION = f"{GROUP}/key-id"
TENANT_ANNOTATION = f"{GROUP}/tenant"
OWNER_ANNOTATION = f"{GROUP}/tenant-api-key"
#: Second way to ask for a rotation: set this annotation to any new value.
ROTATE_ANNOTATION = f"{GROUP}/rotate"
#: Pod-template annotation the operator sets on restart targets after a rotation.
RESTARTED_AT_ANNOTATION = f"{GROUP}/restartedAt"
#: A workload's opt-in to restarts: the names of the TenantApiKeys (in its namespace, comma
#: separated) whose rotations may restart it. Without it the operator restarts nothing.
RESTART_OPT_IN_ANNOTATION = f"{GROUP}/restart-on-rotation-of"
#: Annotation the UI sets when the user has seen the plaintext once.
REVEALED_ANNOTATION = f"{GROUP}/revealed-at"
FINALIZER = f"{GROUP}/revoke-keys"
SECRET_DATA_KEY = "api-key"
