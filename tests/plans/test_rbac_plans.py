"""The chart's tenant roles may read their namespace's TenantPlan (the UI and the plugin show it
with the user's own identity) and never write it, its status (the current use the verifiers
write) or anyone else's — asked of the API server's own authorizer."""

from __future__ import annotations

import secrets

import pytest
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.ui import rbac
from pmkeys_dev import chart
from tests.kube import Kube, wait_for

pytestmark = pytest.mark.integration
WRITES = ("create", "update", "patch", "delete", "deletecollection")


def allowed(kube: Kube, user: str, verb: str, namespace: str, subresource: str = "") -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, group=v.GROUP, resource=v.PLAN_PLURAL, subresource=subresource
            ),
        )
    )
    return bool(client.AuthorizationV1Api(kube.api).create_subject_access_review(review).status.allowed)


def test_the_chart_tenant_roles_read_the_plan_and_never_write_it(kube: Kube, tenant: str) -> None:
    release = f"pr{secrets.token_hex(2)}"
    disabled = {"enabled": False}
    docs = chart.apply_rbac(
        kube.kubeconfig, {"operator": disabled, "verifier": disabled, "ui": disabled}, release=release, namespace=tenant
    )
    try:
        for role in ("tenant-admin", "tenant-viewer"):
            user = f"{role}-{secrets.token_hex(2)}"
            bound = kube.kubectl(
                "create", "rolebinding", user, f"--clusterrole={release}-pmkeys-{role}", f"--user={user}", "-n", tenant
            )
            assert bound.returncode == 0, bound.stderr
            wait_for(lambda user=user: allowed(kube, user, "get", tenant), what=f"{role} in force")
            assert allowed(kube, user, "list", tenant) and allowed(kube, user, "watch", tenant)
            for verb in WRITES:
                assert not allowed(kube, user, verb, tenant), f"{role} may {verb} tenantplans"
            for verb in ("update", "patch"):
                assert not allowed(kube, user, verb, tenant, "status"), f"{role} may {verb} tenantplans/status"
            assert not allowed(kube, user, "get", "some-other-tenant"), "another namespace's plan"
    finally:
        chart.delete_rbac(kube.kubeconfig, docs)


def test_the_ui_roles_read_the_plan_and_nothing_more() -> None:
    for rules in (rbac.TENANT_ADMIN_RULES, rbac.TENANT_VIEWER_RULES):
        plan_rules = [r for r in rules if any(res.startswith(v.PLAN_PLURAL) for res in r["resources"])]
        assert plan_rules == [{"apiGroups": [v.GROUP], "resources": [v.PLAN_PLURAL], "verbs": ["get"]}]
