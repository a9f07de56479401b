"""Fixtures for the install-and-operate tests: helm and kubectl against the session's real API
server, and one helm release per test module in its own namespace.

The chart is installed next to the local environment's own ``pmkeys-system`` (whose
ServiceAccounts the environment created), so releases here use other names and namespaces.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pmkeys_dev import binaries
from pmkeys_dev.environment import LocalEnvironment

HERE = Path(__file__).parent
CHART = binaries.REPO_ROOT / "charts" / "pmkeys"
ALL_FEATURES = HERE / "values-all-features.yaml"
#: The Kubernetes version ``helm template`` and ``helm lint`` assume without a cluster.
KUBE_VERSION = "1.36.3"
#: The cluster-scoped admission policies exist once per cluster, and the local environment
#: already installed them (as a platform's first release does): releases installed by the tests
#: leave them to it, as a second release in a cluster must (docs/install.md).
LEAVE_CLUSTER_POLICIES = (
    "--set",
    "operator.finalizerPolicy=false",
    "--set",
    "plans.admission=false",
    "--set",
    "audit.admissionPolicy=false",
)


def run(argv: list[str], *, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)


class Helm:
    def __init__(self, kubeconfig: Path | None) -> None:
        self.binary = str(binaries.built("helm"))
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        cluster = ["--kubeconfig", str(self.kubeconfig)] if self.kubeconfig else []
        return run([self.binary, *args, *cluster], input=input, timeout=180)

    def template(self, *args: str, release: str = "pmkeys", namespace: str = "pmkeys-system") -> list[dict[str, Any]]:
        result = run(
            [self.binary, "template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION, *args]
        )
        assert result.returncode == 0, f"helm template failed: {result.stderr}"
        return [d for d in yaml.safe_load_all(result.stdout) if d]

    def refused(self, *args: str) -> str:
        """helm template with values that must be refused; returns helm's error message."""
        result = run([self.binary, "template", "pmkeys", str(CHART), "--kube-version", KUBE_VERSION, *args])
        assert result.returncode != 0, f"helm accepted values it must refuse: {args}"
        return result.stderr


@pytest.fixture(scope="session")
def helm_offline() -> Helm:
    return Helm(None)


@pytest.fixture(scope="session")
def helm(env: LocalEnvironment) -> Helm:
    return Helm(env.kubeconfig)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.fixture
def release_namespace(kube: Any) -> Iterator[str]:
    """A fresh namespace for one helm release (deleted afterwards)."""
    name = f"pmk-{secrets.token_hex(3)}"
    kube.core.create_namespace({"metadata": {"name": name}})
    yield name
    kube.core.delete_namespace(name)
