"""One layer for the ``TenantApiKey`` resource, shared by the UI and the kubectl plugin.

The UI and the plugin used to each parse status, find the Ready condition, format times and
decide what may be revealed or rotated, and their rules drifted apart (the plugin revealed a
revoked-but-not-yet-reconciled key, and bumped the rotation counter of expired, unissued and
already-rotating keys). Here each of those is written once, like kr8s's object layer:

* :class:`TenantApiKeys`: the resource's identity and its verbs, one ``CustomObjectsApi`` call
  tuple (group, version, namespace, plural) for get, list, create, patch and status patch;
* :class:`TenantApiKey`: the status view, read leniently (a half-written object is Pending);
* :func:`reveal_refusal`, :func:`rotate_refusal`, :func:`revoke_needed`: the rules;
* :func:`rotate_patch`, :func:`revoke_patch`: the spec changes the rules allow;
* :func:`format_time`, :func:`parse_time`: the one time format (RFC 3339, UTC, seconds).

Only spec changes go through here: the operator does the rest, whoever asked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.api.vocabulary import Phase

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

#: Phases in which the key in the Secret is usable and may be revealed.
ISSUED_PHASES = frozenset({Phase.ACTIVE, Phase.ROTATING})
#: Phases after which no key works again.
FINAL_PHASES = frozenset({Phase.REVOKED, Phase.EXPIRED})


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime(TIME_FORMAT)


def parse_time(value: object) -> dt.datetime | None:
    """A time as the API server writes it (``...Z``); None when unset or unreadable."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# -- identity and verbs --------------------------------------------------------------------
class TenantApiKeys:
    """The verbs on TenantApiKeys, with the caller's own API client (RBAC decides)."""

    def __init__(self, api: client.ApiClient, *, timeout: float | None = None) -> None:
        self.custom = client.CustomObjectsApi(api)
        self._options: dict[str, Any] = {"_request_timeout": timeout} if timeout else {}

    @staticmethod
    def where(namespace: str) -> tuple[str, str, str, str]:
        """The call tuple every namespaced ``CustomObjectsApi`` verb takes first."""
        return (v.GROUP, v.VERSION, namespace, v.PLURAL)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(*self.where(namespace), name, **self._options)
        return found

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        """Every TenantApiKey of ``namespace`` (None: of every namespace), by namespace and name."""
        listing = self.list_call(namespace)[0](**self._options)
        items: list[dict[str, Any]] = listing.get("items", [])
        return sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    def list_call(self, namespace: str | None) -> tuple[Callable[..., Any], tuple[str, ...]]:
        """The list verb and its arguments (for a list, or a watch over the same list)."""
        if namespace is None:
            return _bind(self.custom.list_cluster_custom_object, (v.GROUP, v.VERSION, v.PLURAL))
        return _bind(self.custom.list_namespaced_custom_object, self.where(namespace))

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            *self.where(namespace), body, **self._options
        )
        return created

    def patch(self, namespace: str, name: str, body: dict[str, Any], **options: Any) -> Any:
        return self.custom.patch_namespaced_custom_object(
            *self.where(namespace), name, body, **self._options, **options
        )

    def patch_status(self, namespace: str, name: str, status: dict[str, Any], **options: Any) -> Any:
        return self.custom.patch_namespaced_custom_object_status(
            *self.where(namespace), name, {"status": status}, **self._options, **options
        )


def _bind(verb: Callable[..., Any], args: tuple[str, ...]) -> tuple[Callable[..., Any], tuple[str, ...]]:
    def call(**options: Any) -> Any:
        return verb(*args, **options)

    return call, args


# -- the status view -----------------------------------------------------------------------
@dataclass(frozen=True)
class TenantApiKey:
    """What the rules need to know about one object, read from its body."""

    name: str
    namespace: str
    phase: Phase
    revoked: bool
    key_id: str | None
    display_prefix: str | None
    secret_name: str | None
    counter: int
    observed_counter: int
    grace_period: str
    resource_version: str
    ready_message: str

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> TenantApiKey:
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        rotation = spec.get("rotation") or {}
        ready: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == v.ConditionType.READY), {}
        )
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            phase=_phase(status.get("phase")),
            revoked=spec.get("revoked") is True,
            key_id=status.get("keyId") or None,
            display_prefix=status.get("displayPrefix") or None,
            secret_name=status.get("secretName") or None,
            counter=_int(rotation.get("counter")),
            observed_counter=_int((status.get("rotation") or {}).get("observedCounter")),
            grace_period=str(rotation.get("gracePeriod") or "24h"),
            resource_version=str(meta.get("resourceVersion", "")),
            ready_message=str(ready.get("message") or status.get("message") or ""),
        )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def issued(self) -> bool:
        return is_issued(phase=self.phase, key_id=self.key_id, secret_name=self.secret_name, revoked=self.revoked)

    @property
    def rotation_pending(self) -> bool:
        return self.counter > self.observed_counter


def is_issued(*, phase: Phase, key_id: str | None, secret_name: str | None, revoked: bool) -> bool:
    """The operator has put a usable key in the Secret and said so in status."""
    return phase in ISSUED_PHASES and bool(key_id and secret_name) and not revoked


def _phase(value: object) -> Phase:
    try:
        return Phase(str(value))
    except ValueError:
        return Phase.PENDING


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# -- the rules -----------------------------------------------------------------------------
class RefusalCode(StrEnum):
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_ISSUED = "not_issued"
    ROTATION_PENDING = "rotation_pending"


@dataclass(frozen=True)
class Refusal:
    """Why an action is not done now: a stable code (the UI's error code) and a sentence."""

    code: RefusalCode
    message: str


def reveal_refusal(key: TenantApiKey) -> Refusal | None:
    """A key is shown only while it works: issued, and neither revoked (even if the operator
    has not acted on ``spec.revoked`` yet) nor expired."""
    if key.revoked or key.phase in FINAL_PHASES:
        phase = Phase.REVOKED if key.revoked else key.phase
        return Refusal(RefusalCode.REVOKED, f"{key.ref} no longer works ({phase}); there is nothing to show")
    if not key.issued:
        return Refusal(RefusalCode.NOT_ISSUED, f"{key.ref} has not been issued yet; try again in a moment")
    return None


def rotate_refusal(key: TenantApiKey) -> Refusal | None:
    """A rotation is asked for only when it can happen and is not already under way."""
    if key.revoked or key.phase is Phase.REVOKED:
        return Refusal(RefusalCode.REVOKED, f"{key.ref} is revoked; revocation is final, create a new key instead")
    if key.phase is Phase.EXPIRED:
        return Refusal(RefusalCode.EXPIRED, f"{key.ref} has expired; move expiresAt later or create a new key")
    if not key.key_id:
        return Refusal(RefusalCode.NOT_ISSUED, f"{key.ref} has not been issued yet")
    if key.rotation_pending:
        deferred = key.ready_message if "manual rotation deferred" in (key.ready_message or "") else ""
        why = f"; the operator says: {deferred}" if deferred else ""
        return Refusal(RefusalCode.ROTATION_PENDING, f"{key.ref} is already being rotated; wait for the new key{why}")
    return None


def revoke_needed(key: TenantApiKey) -> bool:
    """Revoking an already revoked key changes nothing (and is not an error)."""
    return not key.revoked


def rotate_patch(key: TenantApiKey, *, grace: str | None) -> dict[str, Any]:
    """Bump ``spec.rotation.counter`` once. The resourceVersion read makes two concurrent
    rotations conflict instead of both bumping from the same value."""
    rotation: dict[str, Any] = {"counter": key.counter + 1}
    if grace is not None:
        rotation["gracePeriod"] = grace
    return {"metadata": {"resourceVersion": key.resource_version}, "spec": {"rotation": rotation}}


def revoke_patch() -> dict[str, Any]:
    return {"spec": {"revoked": True}}
