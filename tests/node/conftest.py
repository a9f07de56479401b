"""A real node for the session and the chart installed on it from the image built by ``make image``.

``node_env`` starts the control plane, the node (kubelet, containerd, CNI, kube-proxy, CoreDNS),
OpenBao and Redis on the node IP, and configures Vault's Kubernetes auth as docs/vault.md says.
``release`` installs ``charts/pmkeys`` with helm into ``pmkeys-system`` with the chart's own
securityContext and RBAC (only the image, Vault/Redis addresses, two verifier replicas and a
route map are set) and waits until every Deployment is Ready.

At the end: the outside guard's counters must be 0, no pmkeys container may have restarted,
and stop + cleanup must leave nothing on the host.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pmkeys.kubeclient import api_client
from pmkeys_dev import binaries, hostnet
from pmkeys_dev.nodeenv import CHART, RELEASE, SYSTEM_NAMESPACE, NodeEnvironment
from tests.conftest import issued_keys
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView


def node_available() -> str | None:
    """Why the node tests cannot run here, or None."""
    if shutil.which("containerd") is None or not Path("/usr/sbin/runc").exists():
        return "containerd/runc missing: run hack/install-system-packages.sh"
    try:
        binaries.built("kubelet")
    except FileNotFoundError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def node_env() -> Iterator[NodeEnvironment]:
    if reason := node_available():
        pytest.fail(f"the in-pod tests need the node: {reason}")
    env = NodeEnvironment()
    counters: dict[str, int] = {}
    try:
        env.start()
        yield env
        counters = hostnet.OutsideGuard.counters()
    finally:
        env.stop()
        env.cleanup()
    leftovers = env.leftovers()
    assert not leftovers, f"the node left behind: {leftovers}"
    outside = {rule: n for rule, n in counters.items() if rule != hostnet.OutsideGuard.NO_ENDPOINTS}
    assert len(outside) == 4 and not any(outside.values()), f"packets to/from outside: {counters}"


@pytest.fixture(scope="session")
def node_kube(node_env: NodeEnvironment) -> Kube:
    return Kube(api_client(str(node_env.kubeconfig)), node_env.kubeconfig, issued_keys())


@pytest.fixture(scope="session")
def node_vault(node_env: NodeEnvironment) -> VaultView:
    return VaultView(node_env.openbao.client())


@dataclass
class Release:
    env: NodeEnvironment
    values: dict[str, Any]

    def helm(self, *args: str) -> str:
        return self.env.helm(*args)

    def install(self, values: dict[str, Any], *, action: str = "install") -> None:
        self.env.helm_install(values, action=action)
        self.values = values

    def pods(self, *selector: str) -> list[dict[str, Any]]:
        """Pods in the release namespace that are not being deleted."""
        out = self.env.kubectl("-n", SYSTEM_NAMESPACE, "get", "pods", "-o", "json", *selector)
        return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]

    def restarts(self) -> dict[str, str]:
        """Containers of pmkeys pods that restarted: restart count, why the last run ended, its log."""
        found = {}
        for pod in self.pods("-l", "app.kubernetes.io/instance=pmkeys"):
            for status in pod.get("status", {}).get("containerStatuses", []):
                if status.get("restartCount", 0):
                    name = pod["metadata"]["name"]
                    ended = status.get("lastState", {}).get("terminated", {})
                    log = self.env.kubectl_result("-n", SYSTEM_NAMESPACE, "logs", name, "--previous", "--tail=15")
                    found[f"{name}/{status['name']}"] = (
                        f"{status['restartCount']} restarts, last ended {ended.get('reason')} "
                        f"exit {ended.get('exitCode')}; log: {log.stdout[-1500:]}"
                    )
        return found

    def deployments(self) -> dict[str, dict[str, Any]]:
        out = self.env.kubectl("-n", SYSTEM_NAMESPACE, "get", "deployments", "-o", "json")
        return {d["metadata"]["name"]: d for d in json.loads(out)["items"]}


def release_values(env: NodeEnvironment) -> dict[str, Any]:
    return env.chart_values()


@pytest.fixture(scope="session")
def release(node_env: NodeEnvironment) -> Iterator[Release]:
    rel = Release(node_env, {})
    rel.install(release_values(node_env))
    yield rel
    restarted = rel.restarts()
    assert not restarted, f"pmkeys containers restarted: {restarted}"


def wait_rollout(env: NodeEnvironment, namespace: str, kind_name: str, *, timeout: int = 180) -> None:
    env.kubectl("-n", namespace, "rollout", "status", kind_name, f"--timeout={timeout}s")


__all__ = ["CHART", "RELEASE", "Kube", "Release", "wait_for", "wait_rollout"]
