"""The Helm chart's RBAC, applied to the local API server, so tests run components with exactly
the permissions an installation grants.

``render`` runs ``helm template`` on ``charts/pmkeys``; ``apply_rbac`` applies only its
ServiceAccounts, ClusterRoles, Roles and their bindings (server-side apply, idempotent), which is
what the local environment lacks: it runs the components as processes, not as the chart's
Deployments. With the default release name ``pmkeys`` and namespace ``pmkeys-system`` the
ServiceAccounts are the ones :mod:`pmkeys_dev.bootstrap` created and bound to OpenBao roles,
so a token of ``pmkeys-operator`` then carries the chart's permissions in both places.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pmkeys_dev import binaries
from pmkeys_dev.bootstrap import SYSTEM_NAMESPACE

CHART = binaries.REPO_ROOT / "charts" / "pmkeys"
#: The Kubernetes version ``helm template`` assumes (the chart requires >= 1.28).
KUBE_VERSION = "1.36.3"
RBAC_KINDS = frozenset({"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})
FIELD_MANAGER = "pmkeys-chart"


class ChartError(RuntimeError):
    """helm or kubectl refused; the message carries their output."""


def _run(argv: list[str], *, stdin: str | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise ChartError(f"{Path(argv[0]).name} {argv[1]} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def set_flags(values: Mapping[str, Any] | None) -> list[str]:
    """``--set-json`` flags for a nested dict of values (each top-level key one flag)."""
    return [arg for key, value in (values or {}).items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def render(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "pmkeys",
    namespace: str = SYSTEM_NAMESPACE,
    values_files: Iterable[Path] = (),
    extra_args: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The chart's manifests as ``helm template`` renders them (CRDs not included)."""
    argv = [
        str(binaries.built("helm")),
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *[arg for f in values_files for arg in ("--values", str(f))],
        *set_flags(values),
        *extra_args,
    ]
    return [doc for doc in yaml.safe_load_all(_run(argv)) if doc]


def rbac_documents(documents: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc.get("kind") in RBAC_KINDS]


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return _run([str(binaries.built("kubectl")), "--kubeconfig", str(kubeconfig), *args], stdin=stdin)


def apply_rbac(
    kubeconfig: Path,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "pmkeys",
    namespace: str = SYSTEM_NAMESPACE,
) -> list[dict[str, Any]]:
    """Render the chart and apply its RBAC objects to the API server of ``kubeconfig``.

    Returns the applied documents. The namespace is created if missing; ServiceAccounts that
    already exist (the local environment's) are adopted by server-side apply, not replaced.
    """
    docs = rbac_documents(render(values, release=release, namespace=namespace))
    namespace_doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    manifest = yaml.safe_dump_all([namespace_doc, *docs])
    _kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        "-",
        stdin=manifest,
    )
    return docs


def delete_rbac(kubeconfig: Path, documents: Iterable[dict[str, Any]]) -> None:
    """Remove what :func:`apply_rbac` applied, except ServiceAccounts (the environment's own)."""
    doomed = [doc for doc in documents if doc.get("kind") != "ServiceAccount"]
    if doomed:
        _kubectl(
            kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=yaml.safe_dump_all(doomed)
        )
