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
from pmkeys.tenantapikey import TenantApiKey, format_time, is_issued, parse_time
from pmkeys.ui.schemas import (
    ConditionView,
    EventView,
    KeyCreate,
    KeyView,
    PreviousKeyView,
    RotationView,
    UsageView,
)


def build_manifest(request: KeyCreate, *, namespace: str, tenant: str) -> dict[str, Any]:
    """The TenantApiKey the create form asks for; defaults the CRD fills in are left out."""
    spec: dict[str, Any] = {
        "tenant": tenant,
        "environment": request.environment.value,
        "scopes": [s.value for s in request.scopes],
        "tier": request.tier.value,
        "rotation": {"interval": request.rotation_interval},
    }
    if request.grace_period is not None:
        spec["rotation"]["gracePeriod"] = request.grace_period
    if request.display_name:
        spec["displayName"] = request.display_name
    if request.rate_limit is not None:
        spec["rateLimit"] = request.rate_limit
    if request.expires_at is not None:
        spec["expiresAt"] = format_time(request.expires_at)
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
    return parse_time(meta.get("creationTimestamp"))


def key_view(obj: dict[str, Any]) -> KeyView:
    """The API's and the pages' view of one object. What the rules read (phase, revoked, key,
    Secret, rotation counters) comes from :class:`~pmkeys.tenantapikey.TenantApiKey`, the same
    reading the plugin uses."""
    meta = obj.get("metadata") or {}
    status = _status(obj.get("status") or {})
    key = TenantApiKey.from_object(obj)
    return KeyView(
        name=key.name,
        namespace=key.namespace,
        uid=meta.get("uid", ""),
        **_spec_fields(obj.get("spec") or {}, status),
        phase=key.phase,
        message=status.message,
        ready=any(c.status == "True" for c in status.conditions if c.type == v.ConditionType.READY),
        revoked=key.revoked,
        key_id=key.key_id,
        display_prefix=key.display_prefix,
        secret_name=key.secret_name,
        created_at=_created(meta, status),
        last_rotated_at=status.last_rotated_at,
        next_rotation_at=status.next_rotation_at,
        usage=UsageView(
            requests=status.usage.requests, errors=status.usage.errors, last_used_at=status.usage.last_used_at
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


def _spec_fields(raw: dict[str, Any], status: TenantApiKeyStatus) -> dict[str, Any]:
    """The spec's part of the view; a spec the model refuses still shows its tenant and tier."""
    spec = _spec(raw)
    if spec is None:
        tier = Tier(raw.get("tier", Tier.STARTER))
        return {
            "tenant": str(raw.get("tenant", "")),
            "tier": tier,
            "rate_limit": status.effective_rate_limit or TIER_RATE_LIMITS[tier],
            "expires_at": status.expires_at,
            "rotation": RotationView(observed_counter=status.rotation.observed_counter),
        }
    rotation = spec.rotation
    return {
        "tenant": spec.tenant,
        "display_name": spec.display_name,
        "environment": spec.environment,
        "scopes": list(spec.scopes),
        "tier": status.tier or spec.tier or Tier.STARTER,
        "rate_limit": status.effective_rate_limit or spec.effective_rate_limit,
        "expires_at": status.expires_at or spec.expires_at,
        "rotation": RotationView(
            interval=rotation.interval,
            grace_period=rotation.grace_period,
            counter=rotation.counter,
            observed_counter=status.rotation.observed_counter,
        ),
    }


def issued(view: KeyView) -> bool:
    """The operator has put a usable key in the Secret and said so in status (the rule of
    :attr:`pmkeys.tenantapikey.TenantApiKey.issued`)."""
    return is_issued(phase=view.phase, key_id=view.key_id, secret_name=view.secret_name, revoked=view.revoked)


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
