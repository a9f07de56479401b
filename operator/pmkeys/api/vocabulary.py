"""The words of the ``TenantApiKey`` API, each defined once.

Tiers and their rate limits, scopes, phases, condition types and reasons, labels and
annotations. The CRD schema, the operator, the verifier and the UI all import these; nothing
else spells them out.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType

GROUP = "penguinmails.io"
VERSION = "v1alpha1"
KIND = "TenantApiKey"
PLURAL = "tenantapikeys"
SINGULAR = "tenantapikey"
SHORT_NAMES = ("tak",)
API_VERSION = f"{GROUP}/{VERSION}"


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


#: Requests per minute each tier allows; an explicit ``spec.rateLimit`` may only go lower.
TIER_RATE_LIMITS: MappingProxyType[Tier, int] = MappingProxyType(
    {Tier.STARTER: 60, Tier.PRO: 300, Tier.ENTERPRISE: 1000}
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
    RESTART_TRIGGERED = "RestartTriggered"
    RESTART_FAILED = "RestartFailed"
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
#: Annotation the UI sets when the user has seen the plaintext once.
REVEALED_ANNOTATION = f"{GROUP}/revealed-at"
FINALIZER = f"{GROUP}/revoke-keys"
SECRET_DATA_KEY = "api-key"
