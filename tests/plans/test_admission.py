"""A tenant admin cannot buy itself a bigger plan with kubectl: the API server refuses every key
that asks for more than the namespace's TenantPlan, naming the field, the plan and what is
allowed, and the tenant cannot touch the plan or the policy that enforces it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client

from pmkeys.api import admission
from pmkeys.api import vocabulary as v
from pmkeys_dev import chart
from tests.builders import key
from tests.kube import Kube
from tests.plans.conftest import TenantAdmin, plan

pytestmark = pytest.mark.integration

# (id, spec of the key, plan overrides, what the refusal must say)
OVER_THE_PLAN: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("tier", {"tier": "enterprise"}, {}, ["spec.tier: enterprise is above the starter plan", "allowed: starter"]),
    (
        "rate-limit",
        {"rateLimit": 50},
        {"keyRateLimit": 30},
        ["spec.rateLimit: 50 exceeds the per-key ceiling of the starter plan", "allowed: 1 to 30"],
    ),
    (
        "rotation-interval",
        {"rotation": {"interval": "1s"}},
        {},
        ["spec.rotation.interval: 1s is shorter than the starter plan allows", "at least 24h"],
    ),
    (
        "rotation-interval-days",
        {"rotation": {"interval": "1d"}},
        {"minRotationInterval": "2d"},
        ["spec.rotation.interval: 1d is shorter", "at least 2d"],
    ),
    (
        "grace",
        {"rotation": {"gracePeriod": "30d"}},
        {},
        ["spec.rotation.gracePeriod: 30d is longer than the starter plan allows", "allowed: 0 to 24h"],
    ),
    (
        "scope",
        {"scopes": ["send_email", "manage_contacts"]},
        {"scopes": ["send_email", "read_analytics"]},
        ["spec.scopes: manage_contacts not in the starter plan", "allowed: send_email, read_analytics"],
    ),
    ("environment", {"environment": "test"}, {"environments": ["live"]}, ["spec.environment: test", "allowed: live"]),
]


@pytest.mark.parametrize(
    ("spec", "overrides", "says"), [c[1:] for c in OVER_THE_PLAN], ids=[c[0] for c in OVER_THE_PLAN]
)
def test_a_key_over_the_plan_is_refused_naming_field_plan_and_allowed_values(
    kube: Kube, tenant_admin: TenantAdmin, spec: dict[str, Any], overrides: dict[str, Any], says: list[str]
) -> None:
    ns = tenant_admin.namespace
    assert kube.apply(plan(ns, **overrides)).returncode == 0
    result = tenant_admin.create(key("greedy", ns, **spec))
    assert result.returncode != 0, "the API server accepted a key over the plan"
    for text in [*says, f"TenantPlan {ns}/plan"]:
        assert text in result.stderr, result.stderr
    assert kube.key_gone(ns, "greedy")


def test_within_the_plan_is_accepted_and_unchanged_fields_are_not_rechecked(
    kube: Kube, tenant_admin: TenantAdmin
) -> None:
    ns = tenant_admin.namespace
    assert kube.apply(plan(ns, tier="pro")).returncode == 0
    ok = tenant_admin.create(key("fits", ns, tier="pro", rotation={"interval": "1h", "gracePeriod": "7d"}))
    assert ok.returncode == 0, ok.stderr
    # Downgrade: the key stays, raising anything is refused, lowering and revoking still work.
    assert kube.apply(plan(ns, tier="starter")).returncode == 0
    raised = tenant_admin.kubectl("patch", "tak", "fits", "--type=merge", "-p", '{"spec":{"rateLimit":200}}')
    assert raised.returncode != 0 and "spec.rateLimit: 200 exceeds" in raised.stderr, raised.stderr
    renamed = tenant_admin.kubectl("patch", "tak", "fits", "--type=merge", "-p", '{"spec":{"displayName":"renamed"}}')
    assert renamed.returncode == 0, renamed.stderr
    lowered = tenant_admin.kubectl("patch", "tak", "fits", "--type=merge", "-p", '{"spec":{"tier":"starter"}}')
    assert lowered.returncode == 0, lowered.stderr
    back_up = tenant_admin.kubectl("patch", "tak", "fits", "--type=merge", "-p", '{"spec":{"tier":"pro"}}')
    assert back_up.returncode != 0 and "spec.tier: pro is above the starter plan" in back_up.stderr


def test_raising_an_existing_key_through_edit_is_refused(kube: Kube, tenant_admin: TenantAdmin) -> None:
    ns = tenant_admin.namespace
    assert kube.apply(plan(ns)).returncode == 0
    assert tenant_admin.create(key("mine", ns)).returncode == 0
    for patch, field in [
        ({"tier": "enterprise"}, "spec.tier"),
        ({"rotation": {"interval": "10s"}}, "spec.rotation.interval"),
        ({"rotation": {"gracePeriod": "90d"}}, "spec.rotation.gracePeriod"),
    ]:
        # What `kubectl edit` sends: a patch of what changed. (A replace of a copy read earlier
        # raced the operator adding its finalizer, and was refused for removing it instead.)
        change = json.dumps({"spec": patch})
        result = tenant_admin.kubectl("patch", "tenantapikey", "mine", "--type=merge", "-p", change)
        assert result.returncode != 0 and f"{field}: " in result.stderr, (field, result.stderr)
    assert kube.get_key(ns, "mine")["spec"].get("tier") is None, "the stored key was not raised"


def test_the_tenant_cannot_touch_its_plan_or_the_policy(kube: Kube, tenant_admin: TenantAdmin) -> None:
    ns = tenant_admin.namespace
    assert kube.apply(plan(ns)).returncode == 0
    shown = tenant_admin.kubectl("get", "tenantplan", "plan", "-o", "jsonpath={.spec.tier}")
    assert shown.returncode == 0 and shown.stdout == "starter", "the tenant may read its plan"
    attempts = [
        ("patch", "tenantplan", "plan", "--type=merge", "-p", '{"spec":{"tier":"enterprise"}}'),
        ("delete", "tenantplan", "plan"),
        ("delete", "validatingadmissionpolicybinding", admission.POLICY_NAME),
        ("delete", "validatingadmissionpolicy", admission.POLICY_NAME),
    ]
    for attempt in attempts:
        result = tenant_admin.kubectl(*attempt)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (attempt, result.stderr)
    other = plan(ns, tier="enterprise")
    other["metadata"]["name"] = "mine"
    created = tenant_admin.create(other)
    assert created.returncode != 0 and "forbidden" in created.stderr.lower()
    assert kube.custom.get_namespaced_custom_object(v.GROUP, v.VERSION, ns, v.PLAN_PLURAL, "plan")["spec"] == {
        "tier": "starter"
    }


def test_a_plan_must_be_named_plan(kube: Kube, tenant: str) -> None:
    misnamed = plan(tenant)
    misnamed["metadata"]["name"] = "acme-plan"
    result = kube.apply(misnamed)
    assert result.returncode != 0 and "must be named 'plan'" in result.stderr, result.stderr


def test_with_without_plan_deny_a_namespace_without_a_plan_holds_no_keys_and_is_told_why(
    kube: Kube, namespace_factory: Any
) -> None:
    """The chart's default (withoutPlan: Deny): its binding, scoped here to one labelled namespace.
    The API server's refusal names the policy and the binding, whose names say what to do."""
    ns = namespace_factory("strict")
    kube.core.patch_namespace(ns, {"metadata": {"labels": {"pmkeys-test/plans": ns}}})
    required = admission.bindings(without_plan="Deny")[1]
    assert required["metadata"]["name"] == admission.REQUIRED_BINDING_NAME
    required["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {"pmkeys-test/plans": ns}}}
    adm = client.AdmissionregistrationV1Api(kube.api)
    adm.create_validating_admission_policy_binding(required)
    try:
        deadline = time.monotonic() + 10
        while (result := kube.apply(key("orphan", ns, tenant="strict"), dry_run=True)).returncode == 0:
            assert time.monotonic() < deadline, "the Deny binding never took effect"
            time.sleep(0.2)
        assert admission.REQUIRED_POLICY_NAME in result.stderr and "no params found" in result.stderr, result.stderr
        assert "ask-the-platform-team-for-a-tenantplan-named-plan" in result.stderr, result.stderr
        assert admission.is_no_plan_refusal(result.stderr)
        assert kube.apply(plan(ns)).returncode == 0
        deadline = time.monotonic() + 10
        while (allowed := kube.apply(key("orphan", ns, tenant="strict"), dry_run=True)).returncode != 0:
            assert time.monotonic() < deadline, allowed.stderr
            time.sleep(0.2)
        refused = kube.apply(key("orphan", ns, tenant="strict", tier="enterprise"), dry_run=True)
        assert "spec.tier: enterprise is above the starter plan" in refused.stderr, "the plan policy still binds"
        assert admission.REQUIRED_POLICY_NAME not in refused.stderr
    finally:
        adm.delete_validating_admission_policy_binding(admission.REQUIRED_BINDING_NAME)


@pytest.mark.parametrize("without_plan", ["Deny", "Allow"])
def test_the_chart_installs_the_generated_policies_and_bindings(without_plan: str) -> None:
    docs = chart.render({"plans": {"withoutPlan": without_plan}})
    kinds = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    ours = {
        d["metadata"]["name"]: d
        for d in docs
        if d["kind"] in kinds and "plan" in d["metadata"]["name"] and "audit" not in d["metadata"]["name"]
    }
    expected = {
        d["metadata"]["name"]: d for d in [*admission.policies(), *admission.bindings(without_plan=without_plan)]
    }
    assert sorted(ours) == sorted(expected)
    for name, doc in ours.items():
        assert doc["spec"] == expected[name]["spec"], name
