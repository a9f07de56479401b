"""The chart against the real local API server: rendered manifests pass a server-side dry run
(including the restricted Pod Security admission), and helm install, upgrade and uninstall do
what an operator of the cluster expects. No kubelet runs here, so pods are created but never
start; admission, RBAC objects, Services and the like are all real."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from pmkeys.api import vocabulary as v
from tests.builders import key
from tests.deploy.conftest import ALL_FEATURES, CHART, LEAVE_CLUSTER_POLICIES, Helm
from tests.kube import Kube, wait_for

pytestmark = pytest.mark.integration

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}
#: The Prometheus Operator's ServiceMonitor, registered with an open schema so the API server
#: accepts ServiceMonitor objects in the dry run (the real CRD is not available offline).
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}


@pytest.fixture
def restricted_namespace(kube: Kube) -> Iterator[str]:
    """A namespace that enforces the restricted Pod Security Standard."""
    name = f"pmk-{secrets.token_hex(3)}"
    kube.core.create_namespace({"metadata": {"name": name, "labels": RESTRICTED}})
    yield name
    kube.core.delete_namespace(name)


def dry_run(kube: Kube, docs: list[dict[str, Any]]) -> Any:
    return kube.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        # The local environment already holds the cluster's admission policies (one copy per
        # cluster); a dry run only asks whether the server accepts the chart's objects.
        "--force-conflicts",
        "--field-manager=helm-test",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
    )


def test_defaults_pass_server_side_dry_run_under_restricted_pod_security(
    helm: Helm, kube: Kube, restricted_namespace: str
) -> None:
    docs = helm.template(release="dry", namespace=restricted_namespace)
    result = dry_run(kube, docs)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    assert result.stdout.count("(server dry run)") == len(docs)


def test_all_features_pass_server_side_dry_run(helm: Helm, kube: Kube, restricted_namespace: str) -> None:
    for ns in ("pmk-tenant-a", "pmk-tenant-b"):
        kube.kubectl("create", "namespace", ns)
    crds = kube.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    assert crds.returncode == 0, crds.stderr
    assert kube.apply(SERVICE_MONITOR_CRD).returncode == 0
    wait_for(lambda: kube.kubectl("get", "servicemonitors", "-A").returncode == 0, what="ServiceMonitor CRD served")
    docs = helm.template("-f", str(ALL_FEATURES), release="full", namespace=restricted_namespace)
    result = dry_run(kube, docs)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    kinds = {d["kind"] for d in docs}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "KopfPeering", "RoleBinding"} <= kinds


def test_install_upgrade_uninstall(helm: Helm, kube: Kube, restricted_namespace: str, tenant: str) -> None:
    ns, release = restricted_namespace, f"r{secrets.token_hex(2)}"
    fullname = f"{release}-pmkeys"
    installed = helm(
        "install",
        release,
        str(CHART),
        "-n",
        ns,
        "--set",
        "operator.bcryptCost=4",
        "--set",
        "operator.allowLowBcryptCost=true",
        "--set",
        "vault.addr=http://openbao.vault:8200",
        *LEAVE_CLUSTER_POLICIES,
    )
    assert installed.returncode == 0, installed.stderr
    notes = installed.stdout
    assert "Next steps" in notes and f"{fullname}-tenant-admin" in notes
    assert "WARNING: operator.bcryptCost=4 is below 12" in notes
    assert f"ServiceAccount {ns}/{fullname}-operator" in notes

    deployments = {d.metadata.name for d in kube.apps.list_namespaced_deployment(ns).items}
    assert deployments == {f"{fullname}-{c}" for c in ("operator", "verifier", "ui")}
    services = {s.metadata.name for s in kube.core.list_namespaced_service(ns).items}
    assert services == {f"{fullname}-operator-metrics", f"{fullname}-verifier", f"{fullname}-ui"}
    roles = kube.kubectl("get", "clusterroles", "-o", "name", "-l", f"app.kubernetes.io/instance={release}").stdout
    assert len(roles.split()) == 6
    # No ReplicaSet controller runs here: create each Deployment's pod as it would (dry run),
    # through the restricted Pod Security admission, with the ServiceAccounts the chart made.
    for name in deployments:
        admitted = kube.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod_of(kube, ns, name)))
        assert admitted.returncode == 0, f"{name}: {admitted.stderr}"
    weakened = pod_of(kube, ns, f"{fullname}-operator")
    weakened["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    refused = kube.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(weakened))
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, "the admission check must bite"

    upgraded = helm(
        "upgrade",
        release,
        str(CHART),
        "-n",
        ns,
        "--reuse-values",
        "--set",
        "verifier.replicas=2",
        "--set",
        "redis.url=redis://redis.pmkeys:6379/0",
    )
    assert upgraded.returncode == 0, upgraded.stderr
    verifier = kube.apps.read_namespaced_deployment(f"{fullname}-verifier", ns)
    assert verifier.spec.replicas == 2
    assert kube.apps.read_namespaced_deployment(f"{fullname}-operator", ns).spec.strategy.type == "Recreate"

    # A TenantApiKey elsewhere, to show that uninstalling leaves keys and the CRD alone.
    kube.create_key(key("survivor", tenant))
    uninstalled = helm("uninstall", release, "-n", ns)
    assert uninstalled.returncode == 0, uninstalled.stderr
    wait_for(lambda: not kube.apps.list_namespaced_deployment(ns).items, what="Deployments removed")
    assert not kube.kubectl("get", "clusterroles", "-o", "name", "-l", f"app.kubernetes.io/instance={release}").stdout
    assert kube.kubectl("get", "crd", f"{v.PLURAL}.{v.GROUP}").returncode == 0, "helm uninstall keeps CRDs"
    assert kube.get_key(tenant, "survivor")["metadata"]["name"] == "survivor"


def pod_of(kube: Kube, namespace: str, deployment: str) -> dict[str, Any]:
    template = kube.apps.read_namespaced_deployment(deployment, namespace).spec.template
    body = kube.api.sanitize_for_serialization(template)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{deployment}-",
            "namespace": namespace,
            "labels": body["metadata"].get("labels", {}),
        },
        "spec": body["spec"],
    }


def test_install_refuses_bad_values_before_touching_the_cluster(helm: Helm, kube: Kube, release_namespace: str) -> None:
    result = helm("install", "bad", str(CHART), "-n", release_namespace, "--set", "verifier.negativeTTL=-1")
    assert result.returncode != 0
    assert "/verifier/negativeTTL" in result.stderr
    assert not kube.apps.list_namespaced_deployment(release_namespace).items
    assert "bad" not in helm("list", "-n", release_namespace, "-q").stdout
