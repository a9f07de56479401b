"""``kubectl pmkeys`` against the real stack: kubectl finds the plugin on PATH and runs it as a
user would, the operator acts on what it changes. Plaintext keys are compared, never printed."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pmkeys.api import vocabulary as v
from pmkeys_dev import binaries, bootstrap, chart
from pmkeys_dev.environment import LocalEnvironment
from tests.builders import key
from tests.kube import Kube, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator")]
VENV_BIN = Path(sys.executable).parent


def pmkeys(kubeconfig: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``kubectl pmkeys ARGS``: kubectl discovers kubectl-pmkeys on PATH, as after pip install."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    return subprocess.run(
        [str(binaries.built("kubectl")), "pmkeys", *args],
        input=input,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


@pytest.fixture
def issued(kube: Kube, tenant: str) -> str:
    """A TenantApiKey "mailer" with an Active key in the tenant's namespace."""
    kube.create_key(key("mailer", tenant, tier="pro", scopes=["send_email", "read_analytics"]))
    kube.wait_phase(tenant, "mailer", "Active")
    return "mailer"


def test_plugin_is_found_by_kubectl(kube: Kube) -> None:
    plugins = subprocess.run(
        [str(binaries.built("kubectl")), "plugin", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"},
        check=False,
    )
    assert "kubectl-pmkeys" in plugins.stdout


def test_list_as_table_json_and_across_namespaces(kube: Kube, tenant: str, issued: str) -> None:
    kube.create_key(key("analytics", tenant, scopes=["read_analytics"]))
    kube.wait_phase(tenant, "analytics", "Active")
    lines = ok(pmkeys(kube.kubeconfig, "-n", tenant, "list")).splitlines()
    assert lines[0].split() == ["NAME", "TENANT", "TIER", "PHASE", "KEY-ID", "PREFIX", "LAST-USED", "AGE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"analytics", "mailer"}
    status = kube.status(tenant, "mailer")
    assert rows["mailer"][1:6] == [tenant, "pro", "Active", status["keyId"], status["displayPrefix"]]
    assert rows["mailer"][6] == "<never>"

    listed = json.loads(ok(pmkeys(kube.kubeconfig, "list", "-n", tenant, "-o", "json")))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["analytics", "mailer"]
    everywhere = ok(pmkeys(kube.kubeconfig, "list", "-A"))
    assert everywhere.splitlines()[0].startswith("NAMESPACE")
    assert any(line.split()[:2] == [tenant, "mailer"] for line in everywhere.splitlines())


def test_describe_shows_status_conditions_and_events(kube: Kube, tenant: str, issued: str) -> None:
    text = ok(pmkeys(kube.kubeconfig, "describe", issued, "-n", tenant))
    status = kube.status(tenant, issued)
    assert "Phase:         Active" in text
    assert f"Key:           {status['keyId']} ({status['displayPrefix']})" in text
    assert "Scopes:        send_email, read_analytics" in text
    assert "Tier:          pro (300 requests/minute)" in text
    assert "KeyIssued" in text and "Ready" in text
    described = yaml.safe_load(ok(pmkeys(kube.kubeconfig, "describe", issued, "-n", tenant, "-o", "yaml")))
    assert described["status"]["keyId"] == status["keyId"]


def test_rotate_issues_a_new_key_and_keeps_the_old_one_for_the_grace(kube: Kube, tenant: str, issued: str) -> None:
    before = kube.status(tenant, issued)
    old = kube.plaintext(tenant, issued)
    out = ok(pmkeys(kube.kubeconfig, "rotate", issued, "-n", tenant, "--grace", "1h", "--wait", "-o", "json"))
    after = json.loads(out)
    assert after["spec"]["rotation"]["counter"] == 1 and after["spec"]["rotation"]["gracePeriod"] == "1h"
    assert after["status"]["keyId"] != before["keyId"]
    assert after["status"]["rotation"]["observedCounter"] == 1
    previous = {p["keyId"]: p for p in after["status"]["previousKeys"]}
    assert before["keyId"] in previous
    not_after = dt.datetime.fromisoformat(previous[before["keyId"]]["notAfter"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=55) < not_after - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)
    changed = kube.plaintext(tenant, issued) != old
    assert changed, "the Secret must hold the new key"
    assert "KeyRotated" in kube.event_reasons(tenant, issued)


def test_rotate_refuses_a_bad_grace_and_a_missing_key(kube: Kube, tenant: str, issued: str) -> None:
    bad = pmkeys(kube.kubeconfig, "rotate", issued, "-n", tenant, "--grace", "1week")
    assert bad.returncode == 1 and "--grace: invalid duration '1week'" in bad.stderr
    assert kube.get_key(tenant, issued)["spec"]["rotation"]["counter"] == 0
    missing = pmkeys(kube.kubeconfig, "rotate", "nope", "-n", tenant)
    assert missing.returncode == 1 and f"tenantapikey {tenant}/nope not found" in missing.stderr


def test_revoke_asks_first(kube: Kube, tenant: str, issued: str) -> None:
    declined = pmkeys(kube.kubeconfig, "revoke", issued, "-n", tenant, input="n\n")
    assert declined.returncode == 1 and "Revocation is final" in declined.stderr
    assert kube.get_key(tenant, issued)["spec"]["revoked"] is False
    no_answer = pmkeys(kube.kubeconfig, "revoke", issued, "-n", tenant, input="")
    assert no_answer.returncode == 1 and kube.get_key(tenant, issued)["spec"]["revoked"] is False

    ok(pmkeys(kube.kubeconfig, "revoke", issued, "-n", tenant, input="y\n"))
    assert kube.get_key(tenant, issued)["spec"]["revoked"] is True
    kube.wait_phase(tenant, issued, "Revoked")
    wait_for(lambda: kube.secret(tenant, issued) is None, what="Secret removed after revocation")


def test_revoke_yes_waits_for_the_operator(kube: Kube, tenant: str, issued: str) -> None:
    out = ok(pmkeys(kube.kubeconfig, "revoke", issued, "-n", tenant, "--yes", "--wait"))
    assert out.splitlines()[1].split()[:2] == [issued, "Revoked"]
    again = pmkeys(kube.kubeconfig, "revoke", issued, "-n", tenant, "--yes")
    assert again.returncode == 0 and "already revoked" in again.stderr
    rotate = pmkeys(kube.kubeconfig, "rotate", issued, "-n", tenant)
    assert rotate.returncode == 1 and "revocation is final" in rotate.stderr


def test_reveal_once_then_again_after_rotation(kube: Kube, tenant: str, issued: str) -> None:
    shown = pmkeys(kube.kubeconfig, "reveal", issued, "-n", tenant)
    assert shown.returncode == 0, shown.stderr
    same = shown.stdout == kube.plaintext(tenant, issued) + "\n"
    assert same, "reveal must print exactly the key in the Secret, on its own line"
    key_id = kube.status(tenant, issued)["keyId"]
    assert f"key {key_id}: this is the only time it is shown" in shown.stderr
    assert v.REVEALED_ANNOTATION in kube.secret(tenant, issued).metadata.annotations

    second = pmkeys(kube.kubeconfig, "reveal", issued, "-n", tenant)
    assert second.returncode == 1 and second.stdout == ""
    assert "already revealed" in second.stderr and "rotate it" in second.stderr

    ok(pmkeys(kube.kubeconfig, "rotate", issued, "-n", tenant, "--wait"))
    third = pmkeys(kube.kubeconfig, "reveal", issued, "-n", tenant, "-o", "json")
    assert third.returncode == 0, third.stderr
    revealed = json.loads(third.stdout)
    assert revealed["keyId"] == kube.status(tenant, issued)["keyId"] != key_id
    same = revealed["apiKey"] == kube.plaintext(tenant, issued)
    assert same, "after a rotation the new key can be revealed once"


def test_usage_reports_what_the_verifier_flushed(kube: Kube, tenant: str, issued: str) -> None:
    last_used = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.custom.patch_namespaced_custom_object_status(
        v.GROUP,
        v.VERSION,
        tenant,
        v.PLURAL,
        issued,
        {"status": {"usage": {"requests": 1234, "errors": 7, "lastUsedAt": last_used}}},
    )
    rows = ok(pmkeys(kube.kubeconfig, "usage", "-n", tenant)).splitlines()
    assert rows[0].split() == ["NAMESPACE", "NAME", "KEY-ID", "REQUESTS", "ERRORS", "LAST-USED", "LIMIT/MIN"]
    assert rows[1].split()[:7] == [tenant, issued, kube.status(tenant, issued)["keyId"], "1234", "7", "5m", "300"]
    records = json.loads(ok(pmkeys(kube.kubeconfig, "usage", issued, "-n", tenant, "-o", "json")))
    assert records == [
        {
            "namespace": tenant,
            "name": issued,
            "keyId": kube.status(tenant, issued)["keyId"],
            "requests": 1234,
            "errors": 7,
            "lastUsedAt": last_used,
            "rateLimitPerMinute": 300,
        }
    ]


@pytest.fixture
def viewer_kubeconfig(env: LocalEnvironment, kube: Kube, tenant: str, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig of an identity bound to the chart's tenant-viewer role in the tenant's namespace."""
    release = f"pl{secrets.token_hex(2)}"
    docs = chart.apply_rbac(
        kube.kubeconfig,
        {"operator": {"enabled": False}, "verifier": {"enabled": False}, "ui": {"enabled": False}},
        release=release,
        namespace=tenant,
    )
    kube.core.create_namespaced_service_account(tenant, {"metadata": {"name": "viewer"}})
    ok_binding = kube.kubectl(
        "create",
        "rolebinding",
        "viewer",
        f"--clusterrole={release}-pmkeys-tenant-viewer",
        f"--serviceaccount={tenant}:viewer",
        "-n",
        tenant,
    )
    assert ok_binding.returncode == 0, ok_binding.stderr
    yield env.kubeconfig_for_token(
        bootstrap.token(kube.api, "viewer", namespace=tenant, hours=1), tmp_path / "viewer.kubeconfig"
    )
    chart.delete_rbac(kube.kubeconfig, docs)


def test_a_viewer_can_list_but_not_reveal_rotate_or_revoke(
    kube: Kube, tenant: str, issued: str, viewer_kubeconfig: Path
) -> None:
    assert issued in ok(pmkeys(viewer_kubeconfig, "list", "-n", tenant))
    refused = pmkeys(viewer_kubeconfig, "reveal", issued, "-n", tenant)
    assert refused.returncode == 1 and "forbidden" in refused.stderr and refused.stdout == ""
    assert v.REVEALED_ANNOTATION not in (kube.secret(tenant, issued).metadata.annotations or {})
    for command in (["rotate", issued], ["revoke", issued, "--yes"]):
        result = pmkeys(viewer_kubeconfig, *command, "-n", tenant)
        assert result.returncode == 1 and "forbidden" in result.stderr, command
    spec = kube.get_key(tenant, issued)["spec"]
    assert (spec["revoked"], spec["rotation"]["counter"]) == (False, 0)
