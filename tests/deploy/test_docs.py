"""The operations docs name what the code really exposes."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

from pmkeys import metrics as operator_metrics
from pmkeys.verify import metrics as verifier_metrics
from pmkeys_dev import binaries

METRICS_DOC = (binaries.REPO_ROOT / "docs" / "metrics.md").read_text()


def documented() -> set[str]:
    return set(re.findall(r"^\| `(pmkeys_[a-z_]+)`", METRICS_DOC, flags=re.MULTILINE))


def test_every_operator_metric_is_documented() -> None:
    assert operator_metrics.RECONCILE_SECONDS  # the module registers its metrics on import
    # The registry names counters without their _total suffix.
    exposed = {family.name for family in REGISTRY.collect() if family.name.startswith("pmkeys_operator_")}
    listed = {name.removesuffix("_total") for name in documented() if name.startswith("pmkeys_operator_")}
    assert exposed == listed, f"undocumented: {sorted(exposed - listed)}; gone: {sorted(listed - exposed)}"


def test_every_verifier_metric_is_documented() -> None:
    table = set(re.findall(r"^``(pmkeys_verifier_[a-z_]+)", verifier_metrics.__doc__ or "", flags=re.MULTILINE))
    assert table, "the verifier's metrics table moved"
    assert table == {n for n in documented() if n.startswith("pmkeys_verifier_")}
