"""The helm that ``make binaries`` builds behaves like a released helm: without a cluster or
``--kube-version`` it assumes the Kubernetes version it was built with (not v1.20), so users'
``helm template charts/pmkeys`` renders the chart (whose kubeVersion is >=1.28)."""

from __future__ import annotations

import re
import subprocess

from pmkeys_dev import binaries

CHART = binaries.REPO_ROOT / "charts" / "pmkeys"


def test_helm_template_renders_the_chart_without_kube_version(tmp_path) -> None:  # type: ignore[no-untyped-def]
    helm = str(binaries.built("helm"))
    result = subprocess.run([helm, "template", "pmkeys", str(CHART)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout

    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (probe / "templates" / "v.yaml").write_text("version: {{ .Capabilities.KubeVersion.Version }}\n")
    out = subprocess.run([helm, "template", str(probe)], capture_output=True, text=True, timeout=60, check=True).stdout
    major, minor = map(int, re.search(r"version: v(\d+)\.(\d+)", out).groups())  # type: ignore[union-attr]
    assert (major, minor) >= (1, 28), out
