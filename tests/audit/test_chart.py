"""The chart ships the actor-stamping admission policy exactly as the code generates it, named
after the release, and hands each component its own audit DSN from one Secret."""

from __future__ import annotations

from pathlib import Path

import yaml

from pmkeys.audit import admission
from pmkeys_dev import chart

REPO = Path(__file__).resolve().parents[2]
POLICY_FILE = "audit-actor-admission-policy.yaml"


def test_the_policy_files_are_the_generated_policy() -> None:
    generated = yaml.safe_dump_all(admission.manifests(), sort_keys=False)
    assert (REPO / "crds" / POLICY_FILE).read_text() == generated, "run: pmkeys audit policy > crds/" + POLICY_FILE
    assert (REPO / "charts/pmkeys/files" / POLICY_FILE).read_text() == generated, (
        "cp crds/" + POLICY_FILE + " charts/pmkeys/files/"
    )


def test_the_chart_renders_the_policy_and_each_components_dsn() -> None:
    docs = chart.render({"audit": {"existingSecret": "audit-dsns", "stream": ["stdout"]}}, release="prod")
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "MutatingAdmissionPolicy"}
    bindings = {d["spec"]["policyName"] for d in docs if d["kind"] == "MutatingAdmissionPolicyBinding"}
    assert policies["prod-pmkeys-audit-actor"]["spec"] == admission.policy()["spec"]
    assert policies["prod-pmkeys-audit-plan-actor"]["spec"] == admission.plan_policy()["spec"]
    assert bindings == set(policies)
    keys = {}
    for d in docs:
        if d["kind"] == "Deployment":
            env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
            keys[d["metadata"]["labels"]["app.kubernetes.io/component"]] = env["PMKEYS_AUDIT__DSN"]["valueFrom"][
                "secretKeyRef"
            ]
            assert env["PMKEYS_AUDIT__STREAM"]["value"] == '["stdout"]'
    assert keys == {
        "operator": {"name": "audit-dsns", "key": "operator-dsn"},
        "ui": {"name": "audit-dsns", "key": "ui-dsn"},
        "verifier": {"name": "audit-dsns", "key": "verifier-dsn"},
    }
    without = chart.render({"audit": {"admissionPolicy": False}})
    assert not [d for d in without if d["kind"].startswith("MutatingAdmissionPolicy")]
