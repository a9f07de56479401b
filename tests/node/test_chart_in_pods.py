"""The chart end to end in real pods, from the image the Dockerfile builds.

What a user who runs ``helm install charts/pmkeys`` would notice: the operator, both verifier
replicas and the UI start and stay Ready under the chart's own securityContext and RBAC; a
TenantApiKey turns into a Secret that a workload pod mounts and uses through an nginx gateway
pod and the verifier; a rotation restarts the workload with the new key; a revocation locks it
out; ``helm upgrade`` rolls the Deployments and the keys keep working; ``helm uninstall`` keeps
the CRD, the keys and their Secrets (docs/install.md); killing a verifier pod and the operator
pod under traffic breaks none of the promises of ``tests/invariants.py``. No pmkeys container
may restart along the way (checked when the session's release is torn down, and per test).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import yaml

from pmkeys.api import vocabulary as v
from pmkeys_dev.nodeenv import SYSTEM_NAMESPACE, NodeEnvironment
from tests import invariants
from tests.builders import key
from tests.kube import Kube, plan_quota_counted, wait_for
from tests.node import workloads
from tests.node.conftest import CHART, RELEASE, Release, release_values, wait_rollout
from tests.vaultview import VaultView

pytestmark = [pytest.mark.integration, pytest.mark.node, pytest.mark.timeout(900)]

COMPONENTS = ("operator", "verifier", "ui")
GATEWAY_NAMESPACE = "gateway"


@pytest.fixture(scope="module")
def gateway(node_env: NodeEnvironment, release: Release, node_kube: Kube) -> str:
    """The nginx gateway pod (docs/verifier.md's configuration); its in-cluster URL."""
    node_env.kubectl("create", "namespace", GATEWAY_NAMESPACE)
    labels = [f"{k}={val}" for k, val in workloads.CALLER_NAMESPACE_LABELS.items()]
    node_env.kubectl("label", "namespace", GATEWAY_NAMESPACE, *labels)
    encoded = node_env.kubectl(
        "-n", SYSTEM_NAMESPACE, "get", "secret", f"{RELEASE}-verifier-callers", "-o", "jsonpath={.data.gateway}"
    )
    token = base64.b64decode(encoded).decode()
    for doc in workloads.gateway(GATEWAY_NAMESPACE, token=token):
        node_kube.apply(doc).check_returncode()
    wait_rollout(node_env, GATEWAY_NAMESPACE, "deployment/gateway")
    return f"http://gateway.{GATEWAY_NAMESPACE}.svc.cluster.local:{workloads.GATEWAY_PORT}"


def service_url(env: NodeEnvironment, namespace: str, name: str) -> str:
    """A Service's ClusterIP URL, which the host reaches through kube-proxy (the pod stays on this machine)."""
    spec = json.loads(env.kubectl("-n", namespace, "get", "service", name, "-o", "json"))["spec"]
    return f"http://{spec['clusterIP']}:{spec['ports'][0]['port']}"


def tenant_namespace(env: NodeEnvironment, kube: Kube) -> str:
    """A tenant's namespace with the platform's plan for it (the chart refuses keys without one)."""
    name = f"t-{secrets.token_hex(3)}"
    env.kubectl("create", "namespace", name)
    env.kubectl("label", "namespace", name, f"{v.TENANT_LABEL}={name}")
    plan = {
        "apiVersion": v.API_VERSION,
        "kind": v.PLAN_KIND,
        "metadata": {"name": v.PLAN_NAME, "namespace": name},
        "spec": {"tier": "pro"},
    }
    kube.apply(plan).check_returncode()
    # The operator creates the plan's key quota; keys are refused until it has been counted once.
    wait_for(lambda: plan_quota_counted(kube, name), timeout=90, what="the plan's quota, counted")
    return name


def issue(kube: Kube, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    kube.create_key(key(name, namespace, **spec))
    return kube.wait_phase(namespace, name, "Active", timeout=90)


def send(client: httpx.Client, url: str, plaintext: str) -> httpx.Response:
    return client.post(f"{url}/v1/send", headers={"Authorization": f"Bearer {plaintext}"}, content=b"{}")


def answers_200(client: httpx.Client, url: str, plaintext: str) -> bool:
    """One call through the gateway succeeded (a gateway pod still starting counts as not yet)."""
    try:
        return send(client, url, plaintext).status_code == 200
    except httpx.TransportError:
        return False


def workload_pods(env: NodeEnvironment, namespace: str) -> list[dict[str, Any]]:
    out = env.kubectl("-n", namespace, "get", "pods", "-l", "app=workload", "-o", "json")
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def running_workload(env: NodeEnvironment, namespace: str, *, not_named: str = "") -> str:
    """The name of the one Running workload pod other than ``not_named``."""
    seen: list[str] = []

    def one() -> str | None:
        pods = workload_pods(env, namespace)
        seen[:] = [f"{p['metadata']['name']}:{p['status'].get('phase')}" for p in pods]
        running = [p for p in pods if p["status"].get("phase") == "Running" and p["metadata"]["name"] != not_named]
        return running[0]["metadata"]["name"] if len(running) == 1 else None

    try:
        return wait_for(one, timeout=180, interval=0.5, what=f"one running workload pod in {namespace}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; pods: {seen}") from None


def calls(env: NodeEnvironment, namespace: str, pod: str) -> list[str]:
    """The workload's output lines (status, keyId and tenant of each call, never the key)."""
    return env.kubectl("-n", namespace, "logs", pod).splitlines()


def wait_call(env: NodeEnvironment, namespace: str, pod: str, pattern: str) -> str:
    lines: list[str] = []

    def seen() -> str | None:
        lines[:] = calls(env, namespace, pod)
        return next((line for line in reversed(lines) if re.fullmatch(pattern, line)), None)

    try:
        return wait_for(seen, timeout=90, interval=0.5, what=f"{pod} logging {pattern!r}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its last lines: {lines[-5:]}") from None


def assert_no_restarts(release: Release) -> None:
    restarted = release.restarts()
    assert not restarted, f"pmkeys containers restarted: {restarted}"


# -- the components, as installed ------------------------------------------------------------
def test_components_run_ready_under_the_charts_security_context(release: Release, node_env: NodeEnvironment) -> None:
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    deployments = release.deployments()
    for component in COMPONENTS:
        dep = deployments[f"{RELEASE}-{component}"]
        want = dep["spec"]["replicas"]
        assert dep["status"].get("readyReplicas") == want, f"{component}: {dep['status']}"
        pod_spec = dep["spec"]["template"]["spec"]
        assert pod_spec["securityContext"] == chart_defaults["podSecurityContext"], component
        for container in pod_spec["containers"]:
            assert container["securityContext"] == chart_defaults["securityContext"], component
    assert deployments[f"{RELEASE}-verifier"]["status"]["readyReplicas"] == 2

    pods = release.pods("-l", f"app.kubernetes.io/instance={RELEASE}")
    assert {p["status"]["phase"] for p in pods} == {"Running"}
    operator = next(p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith(f"{RELEASE}-operator"))
    # The process runs as the chart's uid, on a read-only root filesystem.
    probe = "import os, pwd; print(os.getuid(), pwd.getpwuid(os.getuid()).pw_name); open('/probe', 'w')"
    result = node_env.kubectl_result("-n", SYSTEM_NAMESPACE, "exec", operator, "--", "python", "-c", probe)
    assert result.stdout.strip() == "65532 pmkeys"
    assert "Read-only file system" in result.stderr
    # The image ships what runs in production: no local environment, no test tooling.
    absent = "import importlib.util as u; print([m for m in ('pmkeys_dev', 'pytest', 'hypothesis') if u.find_spec(m)])"
    result = node_env.kubectl_result("-n", SYSTEM_NAMESPACE, "exec", operator, "--", "python", "-c", absent)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    assert_no_restarts(release)


# -- a key's life, as the workload sees it -----------------------------------------------------
def test_workload_uses_rotates_and_loses_its_key(
    node_env: NodeEnvironment, release: Release, node_kube: Kube, node_vault: VaultView, gateway: str
) -> None:
    ns = tenant_namespace(node_env, node_kube)
    rotation = {"restartTargets": [{"kind": "Deployment", "name": "workload"}], "gracePeriod": "0"}
    status = issue(node_kube, ns, "app", rotation=rotation)
    first = status["keyId"]
    for doc in workloads.workload(ns, secret=status["secretName"], url=f"{gateway}/v1/send", restart_on="app"):
        node_kube.apply(doc).check_returncode()
    pod = running_workload(node_env, ns)
    wait_call(node_env, ns, pod, rf"status=200 keyId={first} tenant={ns}")

    # Rotate: the restart target is rolled and the new pod calls with the new key.
    node_kube.patch_key(ns, "app", {"spec": {"rotation": {"counter": 1}}})
    status = node_kube.wait_status(
        ns, "app", lambda s: s.get("keyId") not in (None, first), timeout=90, what="rotation"
    )
    second = status["keyId"]
    new_pod = running_workload(node_env, ns, not_named=pod)
    wait_call(node_env, ns, new_pod, rf"status=200 keyId={second} tenant={ns}")
    assert not invariants.check_key(node_kube, node_vault, ns, "app")

    # Revoke: the same running workload is now refused, by both verifier replicas.
    node_kube.patch_key(ns, "app", {"spec": {"revoked": True}})
    node_kube.wait_phase(ns, "app", "Revoked", timeout=60)
    wait_for(
        lambda: (last := calls(node_env, ns, new_pod)[-6:]) and all(line.startswith("status=401 ") for line in last),
        timeout=60,
        interval=0.5,
        what="six refused calls in a row after the revocation",
    )
    assert_no_restarts(release)


# -- faults under traffic ----------------------------------------------------------------------
class Traffic:
    """Bounded load from the host to the gateway Service (kube-proxy → the gateway pod)."""

    def __init__(self, url: str, plaintext: str, *, seconds: float) -> None:
        self.url, self.plaintext, self.seconds = url, plaintext, seconds
        self.statuses: Counter[int] = Counter()
        self.denied_valid = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        with httpx.Client(timeout=5) as client:
            for _ in range(20_000):
                if time.monotonic() > deadline:
                    return
                try:
                    status = send(client, self.url, self.plaintext).status_code
                except httpx.HTTPError:
                    status = 0
                self.statuses[status] += 1
                time.sleep(0.25)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join(timeout=self.seconds + 30)


def kill(node_env: NodeEnvironment, pod: str) -> None:
    node_env.kubectl("-n", SYSTEM_NAMESPACE, "delete", "pod", pod, "--grace-period=0", "--force", "--wait=false")


def test_killing_a_verifier_and_the_operator_under_traffic_keeps_the_promises(
    node_env: NodeEnvironment, release: Release, node_kube: Kube, node_vault: VaultView, gateway: str
) -> None:
    ns = tenant_namespace(node_env, node_kube)
    # pro: 300 requests a minute, above what the traffic below sends (4 a second for 45 s).
    status = issue(node_kube, ns, "busy", tier="pro")
    plaintext = node_kube.plaintext(ns, status["secretName"])
    url = service_url(node_env, GATEWAY_NAMESPACE, "gateway")
    with httpx.Client(timeout=5) as client:
        assert send(client, url, plaintext).status_code == 200

    verifiers = [p["metadata"]["name"] for p in release.pods("-l", "app.kubernetes.io/component=verifier")]
    operator = release.pods("-l", "app.kubernetes.io/component=operator")[0]["metadata"]["name"]
    with Traffic(url, plaintext, seconds=45) as traffic:
        time.sleep(3)
        kill(node_env, verifiers[0])
        time.sleep(3)
        kill(node_env, operator)
        # A key asked for while the operator is down is issued by its replacement.
        node_kube.create_key(key("late", ns))
        node_kube.wait_phase(ns, "late", "Active", timeout=120)
    wait_rollout(node_env, SYSTEM_NAMESPACE, f"deployment/{RELEASE}-verifier")
    wait_rollout(node_env, SYSTEM_NAMESPACE, f"deployment/{RELEASE}-operator")

    # The valid key was never refused; requests only failed while a pod was going away.
    assert traffic.statuses[200] > 50, traffic.statuses
    assert not (traffic.statuses[401] or traffic.statuses[403] or traffic.statuses[429]), traffic.statuses
    with httpx.Client(timeout=5) as client:
        assert [send(client, url, plaintext).status_code for _ in range(5)] == [200] * 5
    for name in ("busy", "late"):
        assert not invariants.check_key(node_kube, node_vault, ns, name)
    assert not invariants.check_vault(node_kube, node_vault)
    assert_no_restarts(release)


# -- helm upgrade and uninstall (last in this module: it uninstalls the session's release) ------
def test_upgrade_rolls_the_deployments_and_uninstall_keeps_the_keys(
    node_env: NodeEnvironment, release: Release, node_kube: Kube, node_vault: VaultView, gateway: str
) -> None:
    ns = tenant_namespace(node_env, node_kube)
    status = issue(node_kube, ns, "kept")
    plaintext = node_kube.plaintext(ns, status["secretName"])
    url = service_url(node_env, GATEWAY_NAMESPACE, "gateway")
    before = {name: d["metadata"]["generation"] for name, d in release.deployments().items()}
    pods_before = {p["metadata"]["name"] for p in release.pods("-l", f"app.kubernetes.io/instance={RELEASE}")}

    values = release_values(node_env)
    values["logLevel"] = "DEBUG"
    release.install(values, action="upgrade")
    after = release.deployments()
    for component in COMPONENTS:
        name = f"{RELEASE}-{component}"
        assert after[name]["metadata"]["generation"] > before[name], f"{name} was not rolled"
        wait_rollout(node_env, SYSTEM_NAMESPACE, f"deployment/{name}")
    pods_after = {p["metadata"]["name"] for p in release.pods("-l", f"app.kubernetes.io/instance={RELEASE}")}
    assert not pods_before & pods_after, "some pods were not replaced by the upgrade"
    with httpx.Client(timeout=5) as client:
        assert wait_for(lambda: answers_200(client, url, plaintext), timeout=60, interval=1)
    assert node_kube.status(ns, "kept")["keyId"] == status["keyId"]

    release.helm("uninstall", RELEASE, "-n", SYSTEM_NAMESPACE, "--wait")
    assert node_env.kubectl("get", "crd", f"{v.PLURAL}.{v.GROUP}", "-o", "name").strip()
    assert node_kube.get_key(ns, "kept")["status"]["keyId"] == status["keyId"]
    assert node_kube.plaintext(ns, status["secretName"]) == plaintext
    wait_for(lambda: not release.pods("-l", f"app.kubernetes.io/instance={RELEASE}"), timeout=120, interval=1)
    assert not invariants.check_key(node_kube, node_vault, ns, "kept")
    assert_no_restarts(release)
