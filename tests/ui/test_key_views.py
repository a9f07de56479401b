"""TenantApiKey objects to what the API and pages show, the list filter, the audit-trail order
and the manifest the create form builds. Pure, no servers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.api.model import TenantApiKeySpec
from pmkeys.api.vocabulary import Phase
from pmkeys.ui.pages import relative
from pmkeys.ui.schemas import KeyCreate
from pmkeys.ui.views import build_manifest, event_views, issued, key_view, matches

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def obj(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": v.API_VERSION,
        "kind": v.KIND,
        "metadata": {
            "name": "billing",
            "namespace": "acme",
            "uid": "u-1",
            "generation": 2,
            "creationTimestamp": "2026-04-01T10:00:00Z",
        },
        "spec": {
            "tenant": "acme",
            "displayName": "Billing",
            "environment": "live",
            "scopes": ["send_email"],
            "tier": "pro",
            "rateLimit": 120,
            "revoked": False,
            "rotation": {"interval": "90d", "gracePeriod": "1h", "counter": 3},
        },
        "status": status,
    }


def test_issued_key_view() -> None:
    usage = {"requests": 7, "errors": 1, "lastUsedAt": "2026-04-30T00:00:00Z"}
    view = key_view(
        obj(
            phase="Active",
            keyId="k1",
            displayPrefix="pm_live_AbCd…",
            secretName="billing",
            effectiveRateLimit=120,
            usage=usage,
            rotation={"observedCounter": 3},
            conditions=[{"type": "Ready", "status": "True", "reason": "Active"}],
        )
    )
    summary = (view.name, view.namespace, view.tenant, view.tier, view.rate_limit)
    assert summary == ("billing", "acme", "acme", "pro", 120)
    assert view.ready and view.phase is Phase.ACTIVE and issued(view)
    assert view.usage.requests == 7 and view.usage.last_used_at == dt.datetime(2026, 4, 30, tzinfo=dt.UTC)
    assert (view.rotation.counter, view.rotation.observed_counter, view.rotation.grace_period) == (3, 3, "1h")
    assert view.created_at == dt.datetime(2026, 4, 1, 10, tzinfo=dt.UTC), "falls back to creationTimestamp"


def test_fresh_object_is_pending_with_the_tiers_limit() -> None:
    fresh = obj()
    del fresh["spec"]["rateLimit"]
    view = key_view(fresh)
    assert view.phase is Phase.PENDING and not view.ready and not issued(view)
    assert view.rate_limit == 300 and view.key_id is None


def test_revoked_spec_is_not_revealable_even_before_the_operator_acts() -> None:
    revoked = obj(phase="Active", keyId="k1", secretName="billing")
    revoked["spec"]["revoked"] = True
    assert not issued(key_view(revoked))


@pytest.mark.parametrize(
    ("name", "phase", "expected"),
    [
        ("", None, True),
        ("BILL", None, True),
        ("ing", Phase.ACTIVE, True),
        ("pm_live_abcd", None, True),
        ("k1", None, True),
        ("other", None, False),
        ("", Phase.REVOKED, False),
    ],
)
def test_list_filter(name: str, phase: Phase | None, expected: bool) -> None:
    view = key_view(obj(phase="Active", keyId="k1", displayPrefix="pm_live_AbCd…", secretName="billing"))
    assert matches(view, name=name, phase=phase) is expected


def event(reason: str, when: dt.datetime | None, *, uid: str = "u-1", version: str = "1") -> client.CoreV1Event:
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"billing.{reason}", resource_version=version),
        involved_object=client.V1ObjectReference(kind=v.KIND, name="billing", uid=uid),
        reason=reason,
        message=f"{reason} happened",
        type="Normal",
        last_timestamp=when,
        source=client.V1EventSource(component="pmkeys-operator"),
    )


def test_audit_trail_is_newest_first_and_only_this_object() -> None:
    events = [
        event("KeyIssued", NOW - dt.timedelta(hours=2)),
        event("KeyRotated", NOW, version="9"),
        event("KeyUpdated", NOW, version="10"),  # same second: resourceVersion decides
        event("KeyRevoked", NOW, uid="an-older-object-of-the-same-name"),
    ]
    trail = event_views(events, uid="u-1")
    assert [e.reason for e in trail] == ["KeyUpdated", "KeyRotated", "KeyIssued"]
    assert trail[0].source == "pmkeys-operator"


def test_manifest_from_the_create_form_is_valid_for_the_model() -> None:
    request = KeyCreate.model_validate(
        {
            "name": "billing",
            "displayName": "Billing",
            "environment": "test",
            "scopes": ["send_email"],
            "tier": "pro",
            "rateLimit": 200,
            "expiresAt": "2099-01-01T00:00:00+02:00",
            "rotationInterval": "30d",
        }
    )
    manifest = build_manifest(request, namespace="acme", tenant="acme-corp")
    assert manifest["metadata"] == {"name": "billing", "namespace": "acme"}
    spec = TenantApiKeySpec.model_validate(manifest["spec"])
    assert (spec.tenant, spec.tier, spec.rate_limit, spec.rotation.interval) == ("acme-corp", "pro", 200, "30d")
    assert manifest["spec"]["expiresAt"] == "2098-12-31T22:00:00Z"


def test_minimal_manifest_leaves_defaults_to_the_crd() -> None:
    spec = build_manifest(KeyCreate(name="k", scopes=["send_email"]), namespace="n", tenant="t")["spec"]
    assert "rateLimit" not in spec and "expiresAt" not in spec and "displayName" not in spec


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (dt.timedelta(seconds=-10), "just now"),
        (dt.timedelta(minutes=-3), "3 minutes ago"),
        (dt.timedelta(hours=1), "in 1 hour"),
        (dt.timedelta(days=-2), "2 days ago"),
        (dt.timedelta(days=90), "in 3 months"),
        (dt.timedelta(days=-800), "2 years ago"),
    ],
)
def test_relative_times(offset: dt.timedelta, text: str) -> None:
    assert relative(NOW + offset, now=NOW) == text
    assert relative(None) == "—"
