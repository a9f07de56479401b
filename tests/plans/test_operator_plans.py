"""The plan in the operator, against the real stack: a key without a tier gets its plan's, status
shows the plan in force, a plan change reaches existing keys without re-issuing them, the key
count is enforced at admission through the quota the operator keeps, and a key that reached the
operator over its plan is refused with PlanExceeded."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pmkeys.api import vocabulary as v
from pmkeys.reconcile.plans import QUOTA_NAME
from pmkeys.vault.records import KeyRecord
from pmkeys_dev.processes import ServerProcess
from tests.builders import key
from tests.kube import Kube, wait_for
from tests.plans.conftest import TenantAdmin, set_plan
from tests.vaultview import VaultView

pytestmark = pytest.mark.integration


def record(vault: VaultView, kube: Kube, namespace: str, name: str) -> KeyRecord:
    """The Vault record of the object's current key."""
    obj = kube.get_key(namespace, name)
    key_id = obj["status"]["keyId"]
    return next(r for r in vault.records_of(obj["metadata"]["uid"]).values() if r.key_id == key_id)


def plan_status(kube: Kube, namespace: str) -> dict[str, Any]:
    body = kube.custom.get_namespaced_custom_object(v.GROUP, v.VERSION, namespace, v.PLAN_PLURAL, v.PLAN_NAME)
    return dict(body.get("status") or {})


def test_a_key_without_a_tier_follows_its_plan_and_status_says_so(
    kube: Kube, operator: ServerProcess, vault: VaultView, tenant: str
) -> None:
    set_plan(kube, tenant, tier="pro")
    kube.create_key(key("follows", tenant))
    status = kube.wait_phase(tenant, "follows", "Active")
    assert (status["tier"], status["effectiveRateLimit"], status["tenantRateLimit"]) == ("pro", 300, 1000)
    assert status["plan"] == f"{tenant}/plan"
    assert kube.get_key(tenant, "follows")["spec"].get("tier") is None
    stored = record(vault, kube, tenant, "follows")
    assert (stored.tier, stored.rate_limit) == (v.Tier.PRO, 300)
    shown = wait_for(lambda: plan_status(kube, tenant).get("tier") and plan_status(kube, tenant), what="plan status")
    assert shown == {**shown, "tier": "pro", "maxKeys": 25, "keyRateLimit": 300, "tenantRateLimit": 1000}


def test_a_plan_change_reaches_existing_keys_without_reissuing(
    kube: Kube, operator: ServerProcess, vault: VaultView, tenant: str
) -> None:
    set_plan(kube, tenant, tier="starter")
    kube.create_key(key("follower", tenant))
    kube.create_key(key("capped", tenant, tier="starter", rateLimit=40))
    before = kube.wait_phase(tenant, "follower", "Active")
    kube.wait_phase(tenant, "capped", "Active")
    assert before["effectiveRateLimit"] == 60
    changed = time.monotonic()
    set_plan(kube, tenant, tier="enterprise", keyRateLimit=500)
    after = kube.wait_status(
        tenant, "follower", lambda s: s.get("effectiveRateLimit") == 500, timeout=5, what="the upgrade"
    )
    took = time.monotonic() - changed
    assert after["keyId"] == before["keyId"] and after["tier"] == "enterprise", "same key, new tier"
    assert record(vault, kube, tenant, "follower").rate_limit == 500
    assert kube.status(tenant, "capped")["effectiveRateLimit"] == 40, "a key's own lower limit stays"
    set_plan(kube, tenant, tier="starter", keyRateLimit=30)
    down = kube.wait_status(
        tenant, "capped", lambda s: s.get("effectiveRateLimit") == 30, timeout=5, what="the downgrade"
    )
    assert down["phase"] == "Active", f"upgrade took {took:.1f}s; a downgrade caps keys, it does not revoke them"


def test_the_key_count_is_refused_at_admission_past_max_keys(
    kube: Kube, operator: ServerProcess, tenant_admin: TenantAdmin
) -> None:
    ns = tenant_admin.namespace
    set_plan(kube, ns, maxKeys=2)
    for name in ("one", "two"):
        created = tenant_admin.create(key(name, ns))
        assert created.returncode == 0, created.stderr
    third = tenant_admin.create(key("three", ns))
    assert third.returncode != 0 and f"exceeded quota: {QUOTA_NAME}" in third.stderr, third.stderr
    assert "limited: count/tenantapikeys.penguinmails.io=2" in third.stderr
    deleted = tenant_admin.kubectl("delete", "resourcequota", QUOTA_NAME)
    assert deleted.returncode != 0 and "forbidden" in deleted.stderr.lower(), "the tenant cannot drop its quota"


def test_a_key_older_than_its_plan_is_refused_with_plan_exceeded(
    kube: Kube, operator: ServerProcess, namespace_factory: Any
) -> None:
    ns = namespace_factory(None)  # no tenant label yet: the operator refuses to issue anything
    kube.create_key(key("early", ns, tenant="late", tier="enterprise"))
    kube.wait_status(ns, "early", lambda s: s.get("phase") == "Failed" or bool(s.get("conditions")), what="refusal")
    set_plan(kube, ns, tier="starter")
    kube.core.patch_namespace(ns, {"metadata": {"labels": {v.TENANT_LABEL: "late"}}})
    status = kube.wait_status(
        ns, "early", lambda s: any(c.get("reason") == "PlanExceeded" for c in s.get("conditions", [])), what="refusal"
    )
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PlanExceeded"
    assert "spec.tier: enterprise is above the starter plan" in ready["message"]
    assert "allowed: starter" in ready["message"] and f"{ns}/plan" in ready["message"]
    assert not status.get("keyId"), "nothing was issued"


def test_rotations_beyond_max_keys_in_grace_end_the_oldest_grace(
    kube: Kube, operator: ServerProcess, vault: VaultView, tenant: str
) -> None:
    set_plan(kube, tenant, maxKeysInGrace=1)
    kube.create_key(key("spinning", tenant, rotation={"gracePeriod": "1h"}))
    first = kube.wait_phase(tenant, "spinning", "Active")["keyId"]
    seen = [first]
    for counter in (1, 2, 3):
        kube.patch_key(tenant, "spinning", {"spec": {"rotation": {"counter": counter}}})
        status = kube.wait_status(
            tenant, "spinning", lambda s: s.get("keyId") not in seen and s.get("phase") in ("Active", "Rotating"),
            what=f"rotation {counter}",
        )  # fmt: skip
        seen.append(status["keyId"])
        assert len(status.get("previousKeys", [])) <= 1, status.get("previousKeys")
    status = kube.wait_status(tenant, "spinning", lambda s: len(s.get("previousKeys", [])) == 1, what="one in grace")
    assert [p["keyId"] for p in status["previousKeys"]] == [seen[-2]], "the newest previous key keeps its grace"
    uid = kube.get_key(tenant, "spinning")["metadata"]["uid"]
    states = {r.key_id: r.state.value for r in vault.records_of(uid).values()}
    assert [states[k] for k in seen] == ["revoked", "revoked", "retiring", "active"], states
