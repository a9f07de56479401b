"""From Kubernetes objects to what the API returns and the pages show; pure functions.

A ``TenantApiKey`` as the API server returns it (a dict) becomes a :class:`KeyView`; an Event
becomes an :class:`EventView`; :func:`build_manifest` goes the other way for a new key. Kept
free of I/O so the mapping rules are tested without servers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from kubernetes import client
from pydantic import ValidationError

from pmkeys.api import vocabulary as v
from pmkeys.api.model import TenantApiKeySpec, TenantApiKeyStatus
from pmkeys.api.vocabulary import TIER_RATE_LIMITS, Phase, Tier
from pmkeys.ui.schemas import (
    ConditionView,
    EventView,
    KeyCreate,
    KeyView,
    PreviousKeyView,
    RotationView,
    UsageView,
)

#: Phases in which the key in the Secret is usable and may be revealed.
ISSUED_PHASES = frozenset({Phase.ACTIVE, Phase.ROTATING})


def rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_manifest(request: KeyCreate, *, namespace: str, tenant: str) -> dict[str, Any]:
    """The TenantApiKey the create form asks for; defaults the CRD fills in are left out."""
    spec: dict[str, Any] = {
        "tenant": tenant,
        "environment": request.environment.value,
        "scopes": [s.value for s in request.scopes],
        "tier": request.tier.value,
        "rotation": {"interval": request.rotation_interval},
    }
    if request.display_name:
        spec["displayName"] = request.display_name
    if request.rate_limit is not None:
        spec["rateLimit"] = request.rate_limit
    if request.expires_at is not None:
        spec["expiresAt"] = rfc3339(request.expires_at)
    return {
        "apiVersion": v.API_VERSION,
        "kind": v.KIND,
        "metadata": {"name": request.name, "namespace": namespace},
        "spec": spec,
    }


def _spec(raw: dict[str, Any]) -> TenantApiKeySpec | None:
    try:
        return TenantApiKeySpec.model_validate(raw)
    except ValidationError:
        return None


def _status(raw: dict[str, Any]) -> TenantApiKeyStatus:
    try:
        return TenantApiKeyStatus.model_validate(raw)
    except ValidationError:
        return TenantApiKeyStatus()


def _created(meta: dict[str, Any], status: TenantApiKeyStatus) -> dt.datetime | None:
    if status.created_at is not None:
        return status.created_at
    stamp = meta.get("creationTimestamp")
    try:
        return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None


def key_view(obj: dict[str, Any]) -> KeyView:
    meta = obj.get("metadata") or {}
    raw_spec = obj.get("spec") or {}
    spec = _spec(raw_spec)
    status = _status(obj.get("status") or {})
    tier = spec.tier if spec else Tier(raw_spec.get("tier", Tier.STARTER))
    ready = next((c.status == "True" for c in status.conditions if c.type == v.ConditionType.READY), False)
    rotation = spec.rotation if spec else None
    return KeyView(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        tenant=spec.tenant if spec else str(raw_spec.get("tenant", "")),
        display_name=spec.display_name if spec else "",
        environment=spec.environment if spec else v.Environment.LIVE,
        scopes=list(spec.scopes) if spec else [],
        tier=tier,
        rate_limit=status.effective_rate_limit or (spec.effective_rate_limit if spec else TIER_RATE_LIMITS[tier]),
        phase=status.phase,
        message=status.message,
        ready=ready,
        revoked=bool(spec and spec.revoked),
        key_id=status.key_id,
        display_prefix=status.display_prefix,
        secret_name=status.secret_name,
        created_at=_created(meta, status),
        last_rotated_at=status.last_rotated_at,
        next_rotation_at=status.next_rotation_at,
        expires_at=status.expires_at or (spec.expires_at if spec else None),
        usage=UsageView(
            requests=status.usage.requests, errors=status.usage.errors, last_used_at=status.usage.last_used_at
        ),
        rotation=RotationView(
            interval=rotation.interval if rotation else "0",
            grace_period=rotation.grace_period if rotation else "24h",
            counter=rotation.counter if rotation else 0,
            observed_counter=status.rotation.observed_counter,
        ),
        previous_keys=[
            PreviousKeyView(key_id=p.key_id, display_prefix=p.display_prefix, not_after=p.not_after)
            for p in status.previous_keys
        ],
        conditions=[
            ConditionView(type=c.type, status=c.status, reason=c.reason, message=c.message) for c in status.conditions
        ],
        generation=int(meta.get("generation") or 0),
        observed_generation=status.observed_generation,
    )


def issued(view: KeyView) -> bool:
    """The operator has put a usable key in the Secret and said so in status."""
    return view.phase in ISSUED_PHASES and bool(view.key_id and view.secret_name) and not view.revoked


def matches(view: KeyView, *, name: str = "", phase: Phase | None = None) -> bool:
    """The list filter: ``name`` is a case-insensitive substring of the name, display name or prefix."""
    if phase is not None and view.phase != phase:
        return False
    needle = name.strip().lower()
    if not needle:
        return True
    haystack = (view.name, view.display_name, view.display_prefix or "", view.key_id or "")
    return any(needle in text.lower() for text in haystack)


def _event_time(event: client.CoreV1Event) -> dt.datetime | None:
    when = event.last_timestamp or event.event_time or event.first_timestamp or event.metadata.creation_timestamp
    if isinstance(when, dt.datetime):
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return None


def _version(event: client.CoreV1Event) -> int:
    """resourceVersion orders Events written within the same second (it is numeric in practice)."""
    text = event.metadata.resource_version or ""
    return int(text) if text.isdigit() else 0


def event_views(events: Iterable[client.CoreV1Event], *, uid: str = "") -> list[EventView]:
    """The audit trail of one key, newest first; with ``uid``, only that object's Events
    (a deleted key's Events do not leak into a new key of the same name)."""
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    chosen = [e for e in events if not uid or not e.involved_object.uid or e.involved_object.uid == uid]
    chosen.sort(key=lambda e: (_event_time(e) or epoch, _version(e)), reverse=True)
    return [
        EventView(
            type=e.type or "Normal",
            reason=e.reason or "",
            message=e.message or "",
            time=_event_time(e),
            count=e.count or 1,
            source=(e.source.component if e.source else "") or e.reporting_component or "",
        )
        for e in chosen
    ]
