"""The CRD as the API server enforces it: installed, examples valid, bad manifests refused
with a message that names the offending field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pmkeys.api import crd
from pmkeys_dev.processes import ServerProcess
from tests.builders import key, with_spec
from tests.kube import Kube

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_crd_file_is_generated_from_the_model() -> None:
    committed = (REPO / "crds" / "tenantapikeys.penguinmails.io.yaml").read_text()
    assert committed == crd.render(), "crds/ is stale: run `python -m pmkeys.api.crd > crds/...`"


def test_crd_is_established(kube: Kube) -> None:
    out = kube.kubectl(
        "get",
        "crd",
        "tenantapikeys.penguinmails.io",
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Established')].status}",
    )
    assert out.stdout == "True"
    assert "tak" in kube.kubectl("api-resources", "--api-group=penguinmails.io").stdout


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_server_side_dry_run(kube: Kube, path: Path) -> None:
    """Each example is admitted in the example tenant's namespace under the example plan."""
    for first in ("00-tenant-namespace.yaml", "01-tenant-plan.yaml"):
        kube.apply(yaml.safe_load((REPO / "examples" / first).read_text()))
    for doc in yaml.safe_load_all(path.read_text()):
        result = kube.apply(doc, dry_run=True)
        assert result.returncode == 0, result.stderr


def _labels(n: int) -> dict[str, str]:
    return {f"l{i}": "x" for i in range(n)}


# (id, spec changes or a callable on the manifest, text the error must contain)
INVALID: list[tuple[str, Any, str]] = [
    ("no-spec", lambda m: m.pop("spec"), "spec: Required"),
    ("no-tenant", lambda m: m["spec"].pop("tenant"), "spec.tenant: Required"),
    ("tenant-uppercase", {"tenant": "Acme"}, "spec.tenant"),
    ("tenant-too-long", {"tenant": "a" * 64}, "spec.tenant"),
    ("tenant-path-trick", {"tenant": "../other"}, "spec.tenant"),
    ("tenant-unicode", {"tenant": "açme"}, "spec.tenant"),
    ("tenant-slash", {"tenant": "acme/keys"}, "spec.tenant"),
    ("no-scopes", lambda m: m["spec"].pop("scopes"), "spec.scopes: Required"),
    ("empty-scopes", {"scopes": []}, "spec.scopes"),
    ("unknown-scope", {"scopes": ["delete_everything"]}, "spec.scopes[0]"),
    ("duplicate-scope", {"scopes": ["send_email", "send_email"]}, "spec.scopes: duplicate entries"),
    ("unknown-tier", {"tier": "platinum"}, "spec.tier"),
    ("unknown-environment", {"environment": "prod"}, "spec.environment"),
    ("rate-limit-zero", {"rateLimit": 0}, "spec.rateLimit"),
    ("rate-limit-above-max", {"rateLimit": 5000}, "spec.rateLimit"),
    ("rate-limit-above-tier", {"tier": "starter", "rateLimit": 100}, "spec.rateLimit"),
    ("rate-limit-string", {"rateLimit": "fast"}, "spec.rateLimit"),
    ("expires-not-a-date", {"expiresAt": "tomorrow"}, "spec.expiresAt"),
    ("expires-bad-month", {"expiresAt": "2027-13-01T00:00:00Z"}, "spec.expiresAt"),
    ("revoked-string", {"revoked": "yes"}, "spec.revoked"),
    ("display-name-too-long", {"displayName": "x" * 129}, "spec.displayName"),
    ("interval-words", {"rotation": {"interval": "3 months"}}, "spec.rotation.interval"),
    ("interval-no-unit", {"rotation": {"interval": "90"}}, "spec.rotation.interval"),
    ("grace-negative", {"rotation": {"gracePeriod": "-1h"}}, "spec.rotation.gracePeriod"),
    ("counter-negative", {"rotation": {"counter": -1}}, "spec.rotation.counter"),
    (
        "restart-kind",
        {"rotation": {"restartTargets": [{"kind": "DaemonSet", "name": "x"}]}},
        "spec.rotation.restartTargets[0].kind",
    ),
    (
        "restart-name",
        {"rotation": {"restartTargets": [{"kind": "Deployment", "name": "Bad_Name"}]}},
        "spec.rotation.restartTargets[0].name",
    ),
    (
        "restart-too-many",
        {"rotation": {"restartTargets": [{"kind": "Deployment", "name": f"d{i}"} for i in range(11)]}},
        "spec.rotation.restartTargets",
    ),
    ("secret-name-invalid", {"secret": {"name": "Bad_Name"}}, "spec.secret.name"),
    ("secret-name-too-long", {"secret": {"name": "a" * 254}}, "spec.secret.name"),
    ("secret-label-managed-by", {"secret": {"labels": {"app.kubernetes.io/managed-by": "me"}}}, "spec.secret.labels"),
    ("secret-label-value", {"secret": {"labels": {"app": "has spaces"}}}, "spec.secret.labels.app"),
    ("secret-too-many-labels", {"secret": {"labels": _labels(33)}}, "spec.secret.labels"),
    (
        "secret-annotation-reserved",
        {"secret": {"annotations": {"penguinmails.io/key-id": "x"}}},
        "spec.secret.annotations",
    ),
    ("unknown-field", {"colour": "blue"}, "spec.colour"),
]


@pytest.mark.parametrize(("change", "field"), [(c, f) for _, c, f in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_manifest_is_refused_naming_the_field(kube: Kube, change: Any, field: str) -> None:
    manifest = key("bad", "acme", tenant="acme")
    kube.apply(yaml.safe_load((REPO / "examples" / "00-tenant-namespace.yaml").read_text()))
    if callable(change):
        change(manifest)
    else:
        manifest = with_spec(manifest, **change)
    result = kube.apply(manifest, dry_run=True)
    assert result.returncode != 0, f"accepted: {manifest}"
    assert field in result.stderr, result.stderr


def test_invalid_corpus_is_large() -> None:
    assert len(INVALID) >= 25


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tenant": "other"}, "tenant is immutable"),
        ({"environment": "test"}, "environment is immutable"),
        ({"rotation": {"counter": 0}}, "rotation.counter can only increase"),
        ({"secret": {"name": "renamed"}}, "secret.name is immutable"),
    ],
    ids=["tenant", "environment", "counter-down", "secret-name"],
)
def test_transition_rules(kube: Kube, tenant: str, change: dict[str, Any], message: str) -> None:
    original = key("frozen", tenant, environment="live", rotation={"counter": 2}, secret={"name": "orig"})
    assert kube.apply(original).returncode == 0
    result = kube.apply(with_spec(original, **change), dry_run=True)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_revocation_cannot_be_undone(kube: Kube, tenant: str) -> None:
    manifest = key("final", tenant, revoked=True)
    assert kube.apply(manifest).returncode == 0
    result = kube.apply(with_spec(manifest, revoked=False), dry_run=True)
    assert result.returncode != 0
    assert "spec.revoked" in result.stderr and "revocation is final" in result.stderr


def test_defaults_are_explicit_in_the_stored_object(kube: Kube, tenant: str) -> None:
    assert kube.apply(key("defaults", tenant)).returncode == 0
    spec = kube.get_key(tenant, "defaults")["spec"]
    assert spec["environment"] == "live"
    assert "tier" not in spec, "a key without a tier follows its TenantPlan's tier"
    assert spec["revoked"] is False
    assert spec["rotation"] == {"interval": "0", "gracePeriod": "24h", "counter": 0, "restartTargets": []}
    assert spec["secret"] == {"labels": {}, "annotations": {}}


def test_printer_columns(kube: Kube, tenant: str, operator: ServerProcess) -> None:
    assert kube.apply(key("columns", tenant, tier="pro")).returncode == 0
    kube.wait_phase(tenant, "columns", "Active")  # the tier column shows the tier in force (status)
    out = kube.kubectl("get", "tak", "-n", tenant).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "TENANT", "TIER", "PHASE", "PREFIX", "LAST-USED", "AGE"]
    assert "pro" in out.splitlines()[1]
