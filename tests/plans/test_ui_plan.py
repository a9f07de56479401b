"""The plan in the UI, against the real API server and operator, as tenant users bound to the
tenant roles: the key list and the JSON API show the tier, "N of M keys" and both limits; the
create form offers only what the plan allows and the API refuses the rest with 422 naming the
field, the plan and the allowed values; a namespace without a plan says so. And the attacker's
side: another tenant's plan, writing one's own plan or its current use."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from kubernetes import client

from pmkeys.api import admission
from pmkeys.api import vocabulary as v
from pmkeys.api.plan import NO_PLAN
from tests.builders import key
from tests.kube import Kube, wait_for
from tests.plans.conftest import TenantAdmin, set_plan, tenant_admin
from tests.plans.test_front_ends import kubectl_pmkeys
from tests.ui.conftest import TenantUser, UiServer, admin, make_user, ui_rbac, ui_server, wait_issued

pytestmark = pytest.mark.integration
__all__ = ["admin", "make_user", "tenant_admin", "ui_rbac", "ui_server"]  # fixtures


def plan_of(user: TenantUser, namespace: str | None = None) -> httpx.Response:
    return user.http.get(f"/api/v1/namespaces/{namespace or user.namespace}/plan")


def create(user: TenantUser, name: str, **fields: object) -> httpx.Response:
    return user.http.post(user.keys_url(), json={"name": name, "scopes": ["send_email"], **fields})


def signed_in(ui_server: UiServer, user: TenantUser) -> httpx.Client:
    browser = httpx.Client(base_url=ui_server.url, timeout=30)
    form = browser.get("/signin")
    nonce = form.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = browser.post("/signin", data={"token": user.token, "csrf_token": nonce, "next": "/"})
    assert response.status_code == 303, response.text
    return browser


def options(page: str, select: str) -> list[str]:
    """The option values of one <select> of a rendered page."""
    block = page.split(f'<select id="{select}"')[1].split("</select>")[0]
    return [part.split('"')[0] for part in block.split('<option value="')[1:]]


def checkboxes(page: str, name: str, kind: str = "checkbox") -> list[str]:
    return [part.split('value="')[1].split('"')[0] for part in page.split(f'type="{kind}" name="{name}"')[1:]]


def test_the_api_and_the_key_list_show_the_plan(kube: Kube, admin: TenantUser, ui_server: UiServer) -> None:
    ns = admin.namespace
    set_plan(kube, ns, tier="pro", maxKeys=3, tenantRateLimit=800)
    for name in ("one", "two"):
        assert create(admin, name).status_code == 201
    shown = plan_of(admin)
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["hasPlan"] is True and body["tier"] == "pro" and body["source"] == f"{ns}/plan"
    assert (body["keys"], body["maxKeys"]) == (2, 3)
    assert (body["keyRateLimit"], body["tenantRateLimit"]) == (300, 800)
    assert body["allowedTiers"] == ["starter", "pro"] and body["tenantUse"] is None
    rows = {row["label"]: row["value"] for row in body["rows"]}
    assert rows["Keys"] == "2 of 3" and rows["Tenant-wide"].startswith("at most 800 requests in any 60 seconds")
    assert rows["Current use"].startswith("not measured yet")
    page = signed_in(ui_server, admin).get(f"/ns/{ns}/keys")
    assert page.status_code == 200
    assert "Plan: Pro" in page.text and '<dd id="plan-keys">2 of 3 keys</dd>' in page.text
    assert "at most 800 requests in any 60 seconds, all keys together" in page.text


def test_a_namespace_without_a_plan_says_so(admin: TenantUser, ui_server: UiServer) -> None:
    body = plan_of(admin).json()
    assert body["hasPlan"] is False and body["tier"] is None and body["maxKeys"] is None
    assert "no TenantPlan" in body["message"] and "ask the platform team for a TenantPlan named 'plan'" in (
        body["message"].replace("Ask", "ask")
    )
    page = signed_in(ui_server, admin).get(f"/ns/{admin.namespace}/keys")
    assert "<strong>No plan.</strong> This namespace has no TenantPlan" in page.text


def test_the_create_form_offers_only_what_the_plan_allows(kube: Kube, admin: TenantUser, ui_server: UiServer) -> None:
    set_plan(
        kube, admin.namespace, tier="pro", scopes=["send_email", "read_analytics"], environments=["test"],
        minRotationInterval="60d", maxGracePeriod="1h",
    )  # fmt: skip
    page = signed_in(ui_server, admin).get(f"/ns/{admin.namespace}/keys/new").text
    assert options(page, "tier") == ["starter", "pro"]
    assert checkboxes(page, "scopes") == ["send_email", "read_analytics"]
    assert checkboxes(page, "environment", "radio") == ["test"]
    assert options(page, "rotationInterval") == ["0", "90d", "180d", "365d"]
    assert options(page, "gracePeriod") == ["0", "1h"]
    assert 'value="1h" selected' in page, "the longest grace the plan allows is chosen first"


def test_the_api_refuses_what_the_plan_does_not_allow_naming_field_plan_and_values(
    kube: Kube, admin: TenantUser
) -> None:
    ns = admin.namespace
    set_plan(kube, ns, maxKeys=1, scopes=["send_email"], maxGracePeriod="1h")
    refused = create(admin, "greedy", tier="enterprise", scopes=["manage_contacts"], gracePeriod="24h")
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "plan_exceeded"
    by_field = {f["field"]: f["message"] for f in error["fields"]}
    assert by_field["tier"].startswith("spec.tier: enterprise is above the starter plan")
    assert f"(TenantPlan {ns}/plan); allowed: starter" in by_field["tier"]
    assert by_field["scopes"].endswith("allowed: send_email")
    assert "allowed: 0 to 1h" in by_field["gracePeriod"]
    assert kube.key_gone(ns, "greedy")
    assert create(admin, "modest", gracePeriod="1h").status_code == 201
    full = create(admin, "one-too-many", gracePeriod="1h")
    assert full.status_code == 422
    assert "holds 1 of the 1 keys the starter plan allows" in full.json()["error"]["message"]


def test_another_tenants_plan_is_not_readable_and_no_tenant_can_write_one(
    kube: Kube, admin: TenantUser, make_user: Callable[..., TenantUser], namespace_factory: Callable[..., str]
) -> None:
    victim = namespace_factory("victim")
    set_plan(kube, victim, tier="enterprise")
    assert plan_of(admin, victim).status_code == 403, "another tenant's plan through the UI API"
    assert plan_of(admin, "no-such-namespace").status_code == 403, "the same answer for no namespace at all"
    set_plan(kube, admin.namespace, tier="starter")
    for method in ("PUT", "PATCH", "POST", "DELETE"):
        answer = admin.http.request(method, f"/api/v1/namespaces/{admin.namespace}/plan", json={"tier": "enterprise"})
        assert answer.status_code == 405, (method, answer.status_code)
    viewer = make_user(admin.namespace, role="viewer")
    assert plan_of(viewer).json()["tier"] == "starter", "viewers read the plan too"
    assert (
        kube.custom.get_namespaced_custom_object(v.GROUP, v.VERSION, admin.namespace, v.PLAN_PLURAL, "plan")["spec"][
            "tier"
        ]
        == "starter"
    )


def test_a_key_made_from_the_form_follows_the_plan(kube: Kube, admin: TenantUser, ui_server: UiServer) -> None:
    set_plan(kube, admin.namespace, tier="pro", maxGracePeriod="1h")
    browser = signed_in(ui_server, admin)
    form = browser.get(f"/ns/{admin.namespace}/keys/new").text
    csrf = form.split('name="csrf_token" value="')[1].split('"')[0]
    sent = browser.post(
        f"/ns/{admin.namespace}/keys/new",
        data={"csrf_token": csrf, "name": "from-form", "environment": "live", "scopes": "send_email",
              "tier": "pro", "rotationInterval": "90d", "gracePeriod": "1h"},
    )  # fmt: skip
    assert sent.status_code == 303, sent.text
    issued = wait_issued(admin, "from-form")
    assert issued["tier"] == "pro" and issued["rotation"]["gracePeriod"] == "1h"
    over = browser.post(
        f"/ns/{admin.namespace}/keys/new",
        data={"csrf_token": csrf, "name": "sneaky", "environment": "live", "scopes": "send_email",
              "tier": "enterprise", "rotationInterval": "1s", "gracePeriod": "7d"},
    )  # fmt: skip
    assert over.status_code == 422
    assert "spec.tier: enterprise is above the pro plan" in over.text
    assert "spec.rotation.interval: 1s is shorter than the pro plan allows" in over.text


def test_without_a_plan_under_deny_the_ui_and_the_plugin_say_what_to_do(
    kube: Kube, admin: TenantUser, tenant_admin: TenantAdmin
) -> None:
    ns = admin.namespace
    kube.create_key(key("existing", ns))
    kube.wait_phase(ns, "existing", "Active")
    kube.core.patch_namespace(ns, {"metadata": {"labels": {"pmkeys-test/plans": ns}}})
    required = admission.bindings(without_plan="Deny")[1]
    required["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {"pmkeys-test/plans": ns}}}
    adm = client.AdmissionregistrationV1Api(kube.api)
    adm.create_validating_admission_policy_binding(required)
    try:
        wait_for(lambda: kube.apply(key("probe", ns), dry_run=True).returncode != 0, what="the Deny binding in force")
        refused = create(admin, "wanted")
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "no_plan" and error["message"] == NO_PLAN
        rotated = kubectl_pmkeys(tenant_admin.kubeconfig, "rotate", "existing", "-n", ns)
        assert rotated.returncode == 1 and f"refused: {NO_PLAN}" in rotated.stderr, rotated.stderr
    finally:
        adm.delete_validating_admission_policy_binding(admission.REQUIRED_BINDING_NAME)


def test_regenerate_offers_and_accepts_only_the_plans_grace(kube: Kube, admin: TenantUser, ui_server: UiServer) -> None:
    set_plan(kube, admin.namespace, maxGracePeriod="1h")
    assert create(admin, "short-grace", gracePeriod="1h").status_code == 201
    before = wait_issued(admin, "short-grace")
    page = signed_in(ui_server, admin).get(f"/ns/{admin.namespace}/keys/short-grace").text
    assert checkboxes(page, "grace", "radio") == ["0", "1h"]
    refused = admin.http.post(admin.keys_url(name="short-grace", action="regenerate"), json={"gracePeriod": "24h"})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "plan_exceeded" and error["fields"][0]["field"] == "gracePeriod"
    assert "allowed: 0 to 1h" in error["message"] and f"TenantPlan {admin.namespace}/plan" in error["message"]
    assert kube.get_key(admin.namespace, "short-grace")["spec"]["rotation"]["counter"] == 0, "nothing was asked"
    accepted = admin.http.post(admin.keys_url(name="short-grace", action="regenerate"), json={"gracePeriod": "1h"})
    assert accepted.status_code == 202, accepted.text
    wait_issued(admin, "short-grace", other_than=before["keyId"])
