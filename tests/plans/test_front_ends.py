"""The UI and the plugin, as a tenant admin, cannot raise a key past its plan: each refusal is the
API server's, naming the field and the plan; the plugin shows the plan ("2 of 3 keys", both
limits)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pmkeys_dev import binaries
from tests.builders import key
from tests.kube import Kube
from tests.plans.conftest import TenantAdmin, plan
from tests.ui.conftest import TenantUser, admin, make_user, ui_rbac, ui_server

pytestmark = pytest.mark.integration
__all__ = ["admin", "make_user", "ui_rbac", "ui_server"]  # fixtures
VENV_BIN = Path(binaries.REPO_ROOT) / ".venv" / "bin"


def kubectl_pmkeys(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    cmd = [str(binaries.built("kubectl")), "pmkeys", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90, check=False)


def test_the_ui_refuses_what_the_plan_does_not_allow(kube: Kube, admin: TenantUser) -> None:
    assert kube.apply(plan(admin.namespace, keyRateLimit=30)).returncode == 0
    for fields, says in [
        ({"tier": "enterprise"}, "spec.tier: enterprise is above the starter plan"),
        ({"tier": "starter", "rateLimit": 50}, "spec.rateLimit: 50 exceeds the per-key ceiling"),
        ({"tier": "starter", "rotationInterval": "1s"}, "spec.rotation.interval: 1s is shorter"),
    ]:
        response = admin.http.post(admin.keys_url(), json={"name": "greedy", "scopes": ["send_email"], **fields})
        assert response.status_code in (403, 422), (fields, response.status_code, response.text)
        assert says in response.text and f"TenantPlan {admin.namespace}/plan" in response.text, response.text
    assert kube.key_gone(admin.namespace, "greedy")


def test_the_plugin_shows_the_plan_and_cannot_raise_the_grace(kube: Kube, tenant_admin: TenantAdmin) -> None:
    ns = tenant_admin.namespace
    assert kube.apply(plan(ns, tier="pro", maxKeys=3)).returncode == 0
    for name in ("one", "two"):
        assert tenant_admin.create(key(name, ns)).returncode == 0
    shown = kubectl_pmkeys(tenant_admin.kubeconfig, "plan", "-n", ns)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any(line.split() == ["Plan:", "pro", f"({ns}/plan)"] for line in lines), shown.stdout
    assert any(line.split() == ["Keys:", "2", "of", "3"] for line in lines), shown.stdout
    assert "Tenant-wide:  at most 1000 requests in any 60 seconds" in shown.stdout
    refused = kubectl_pmkeys(tenant_admin.kubeconfig, "rotate", "one", "--grace", "30d", "-n", ns)
    assert refused.returncode == 1, refused.stdout
    assert "spec.rotation.gracePeriod: 30d is longer than the pro plan allows" in refused.stderr, refused.stderr
    assert kube.get_key(ns, "one")["spec"]["rotation"]["counter"] == 0, "nothing changed"
