"""Plans under test: a TenantPlan builder, and a tenant admin bound to the chart's own
tenant-admin ClusterRole through a ServiceAccount token (what a tenant's kubectl, Argo CD or the
UI's user would hold)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pmkeys.api import vocabulary as v
from pmkeys_dev import binaries, bootstrap, chart
from pmkeys_dev.environment import LocalEnvironment
from tests.kube import Kube, plan_quota_counted, wait_for


def plan(namespace: str, **spec: Any) -> dict[str, Any]:
    """A TenantPlan manifest: ``plan("acme", tier="pro", maxKeys=3)``."""
    return {
        "apiVersion": v.API_VERSION,
        "kind": v.PLAN_KIND,
        "metadata": {"name": v.PLAN_NAME, "namespace": namespace},
        "spec": {"tier": "starter", **spec},
    }


def set_plan(kube: Kube, namespace: str, **spec: Any) -> dict[str, Any]:
    """Apply a plan and wait until the API server counts keys against its quota (until the
    quota controller has counted once, creating a key answers "status unknown for quota");
    the plan as stored."""
    result = kube.apply(plan(namespace, **spec))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: plan_quota_counted(kube, namespace), timeout=60, what="the plan's key quota, counted")
    body: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        v.GROUP, v.VERSION, namespace, v.PLAN_PLURAL, v.PLAN_NAME
    )
    return body


@dataclass
class TenantAdmin:
    """kubectl as a tenant admin of one namespace."""

    namespace: str
    kubeconfig: Path

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(binaries.built("kubectl")), "--kubeconfig", str(self.kubeconfig), "-n", self.namespace, *args]
        return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60, check=False)

    def create(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("create", "-f", "-", input=yaml.safe_dump(manifest))


@pytest.fixture
def tenant_admin(env: LocalEnvironment, kube: Kube, tenant: str, tmp_path: Path) -> Iterator[TenantAdmin]:
    release = f"pa{secrets.token_hex(2)}"
    docs = chart.apply_rbac(
        kube.kubeconfig,
        {"operator": {"enabled": False}, "verifier": {"enabled": False}, "ui": {"enabled": False}},
        release=release,
        namespace=tenant,
    )
    kube.core.create_namespaced_service_account(tenant, {"metadata": {"name": "admin"}})
    bound = kube.kubectl(
        "create", "rolebinding", "admin", f"--clusterrole={release}-pmkeys-tenant-admin",
        f"--serviceaccount={tenant}:admin", "-n", tenant,
    )  # fmt: skip
    assert bound.returncode == 0, bound.stderr
    token = bootstrap.token(kube.api, "admin", namespace=tenant, hours=1)
    yield TenantAdmin(tenant, env.kubeconfig_for_token(token, tmp_path / "tenant-admin.kubeconfig"))
    chart.delete_rbac(kube.kubeconfig, docs)
