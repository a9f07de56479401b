"""Changes made with kubectl are recorded with the person who made them, whatever they write
into the object, and the records outlive restarts of the operator and of the store."""

from __future__ import annotations

import json

import pytest
import yaml

from pmkeys.audit import admission
from pmkeys_dev.environment import LocalEnvironment
from pmkeys_dev.processes import ServerProcess
from tests.audit.trail import as_person, dump, grant_people, records, wait_record
from tests.builders import key
from tests.deploy.test_plugin import pmkeys
from tests.kube import Kube

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator")]


@pytest.fixture
def auditor(env: LocalEnvironment) -> str:
    return env.postgres.component_dsn("auditor")


def _merge(person: str, kube: Kube, ns: str, name: str, patch: dict[str, object]) -> None:
    as_person(kube, person, "-n", ns, "patch", "tak", name, "--type=merge", "-p", json.dumps(patch))


def test_kubectl_as_alice_is_recorded_as_alice_and_a_forged_name_is_ignored(
    kube: Kube, env: LocalEnvironment, tenant: str, auditor: str
) -> None:
    grant_people(kube, tenant, "alice")
    manifest = key("mail", tenant)
    manifest["metadata"]["annotations"] = {admission.CHANGED_BY: "ceo@penguinmails.io"}
    as_person(kube, "alice", "apply", "-f", "-", input=yaml.safe_dump(manifest))
    status = kube.wait_phase(tenant, "mail", "Active")

    (created,) = wait_record(auditor, tenant, "create")
    assert created["actor"]["username"] == "alice", dump(auditor, tenant)
    assert created["actor"]["source"] == "admission"
    assert "system:authenticated" in created["actor"]["groups"]
    assert created["key_id"] == status["keyId"]
    assert (created["tenant"], created["namespace"], created["object"]["name"]) == (tenant, tenant, "mail")
    assert created["outcome"] == "success"
    streamed = [json.loads(line) for line in env.audit_stream.read_text().splitlines()]
    copy = next(r for r in streamed if r["seq"] == created["seq"])
    stored = records(auditor, tenant, "create")[0]
    assert copy["hash"] == stored.hash.hex() and copy["actor"] == created["actor"]

    _merge("alice", kube, tenant, "mail", {"spec": {"tier": "pro"}, "metadata": {"annotations": {
        admission.CHANGED_BY: "bob", admission.CHANGE_LOG: "1 tier bob"}}})  # fmt: skip
    (updated,) = wait_record(auditor, tenant, "update")
    assert updated["actor"]["username"] == "alice", dump(auditor, tenant)
    assert updated["details"]["changes"]["tier"] == {"from": "starter", "to": "pro"}
    assert [e["username"] for e in updated["details"]["edits"]] == ["alice"]
    assert "bob" not in json.dumps(updated)

    # kubectl pmkeys audit shows the same trail, and the trail verifies.
    shown = pmkeys(kube.kubeconfig, "audit", "mail", "-n", tenant, "--dsn", auditor, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    assert [(r["action"], r["actor"]["username"]) for r in json.loads(shown.stdout)] == [
        ("update", "alice"),
        ("create", "alice"),
    ]
    table = pmkeys(kube.kubeconfig, "audit", "-n", tenant, "--dsn", auditor, "--action", "update")
    assert table.stdout.splitlines()[0].split()[:5] == ["SEQ", "AT", "ACTION", "OUTCOME", "ACTOR"]
    assert [line.split()[2:5] for line in table.stdout.splitlines()[1:]] == [["update", "success", "alice"]]
    verified = pmkeys(kube.kubeconfig, "audit", "--verify", "--dsn", auditor)
    assert verified.returncode == 0 and verified.stdout.startswith("audit trail intact"), verified.stdout
    # The head it prints, kept by an auditor, is checked again later; a head the trail never had is not.
    head = verified.stdout.split("\nhead ", 1)[1].split()[0]
    again = pmkeys(kube.kubeconfig, "audit", "--verify", "--dsn", auditor, "--checkpoint", head)
    assert again.returncode == 0 and "agrees with 1 checkpoint" in again.stdout, again.stdout + again.stderr
    forged = f"{head.split(':')[0]}:{'0' * 64}"
    refused = pmkeys(kube.kubeconfig, "audit", "--verify", "--dsn", auditor, "--checkpoint", forged)
    assert refused.returncode != 0 and "NOT intact" in refused.stdout + refused.stderr, refused.stdout


def test_two_edits_between_reconciles_name_both_editors_and_survive_an_operator_restart(
    kube: Kube, tenant: str, auditor: str, operator: ServerProcess
) -> None:
    grant_people(kube, tenant, "alice", "bob")
    as_person(kube, "alice", "apply", "-f", "-", input=yaml.safe_dump(key("api", tenant)))
    kube.wait_phase(tenant, "api", "Active")
    wait_record(auditor, tenant, "create")

    operator.stop()
    try:
        _merge("alice", kube, tenant, "api", {"spec": {"tier": "pro"}})
        _merge("bob", kube, tenant, "api", {"spec": {"scopes": ["send_email", "read_analytics"]}})
    finally:
        operator.start()
    (updated,) = wait_record(auditor, tenant, "update", timeout=60)
    assert updated["actor"]["username"] == "bob"
    edits = {(e["username"], tuple(e["fields"])) for e in updated["details"]["edits"]}
    assert ("alice", ("tier",)) in edits and ("bob", ("scopes",)) in edits, updated["details"]
    # The tier's rate limit follows the tier.
    assert set(updated["details"]["changes"]) == {"tier", "scopes", "rate_limit"}
    # The create record written before the restart is still there, unchanged.
    assert [r.data["action"] for r in records(auditor, tenant)] == ["create", "update"]


def test_revoke_and_delete_are_recorded_and_the_store_can_restart_under_the_operator(
    kube: Kube, env: LocalEnvironment, tenant: str, auditor: str
) -> None:
    grant_people(kube, tenant, "carol")
    as_person(kube, "carol", "apply", "-f", "-", input=yaml.safe_dump(key("old", tenant)))
    kube.wait_phase(tenant, "old", "Active")
    wait_record(auditor, tenant, "create")
    env.postgres.restart()
    _merge("carol", kube, tenant, "old", {"spec": {"revoked": True}})
    kube.wait_phase(tenant, "old", "Revoked")
    (revoked,) = wait_record(auditor, tenant, "revoke")
    assert revoked["actor"]["username"] == "carol" and revoked["reason"].endswith("revoked by spec; Secret removed")
    as_person(kube, "carol", "-n", tenant, "delete", "tak", "old", "--wait=true")
    (deleted,) = wait_record(auditor, tenant, "delete")
    assert deleted["actor"]["username"] == "carol"
    assert [r.data["action"] for r in records(auditor, tenant)] == ["create", "revoke", "delete"]


def test_events_written_by_a_tenant_do_not_enter_the_trail(kube: Kube, tenant: str, auditor: str) -> None:
    grant_people(kube, tenant, "mallory")
    as_person(kube, "mallory", "apply", "-f", "-", input=yaml.safe_dump(key("k", tenant)))
    kube.wait_phase(tenant, "k", "Active")
    wait_record(auditor, tenant, "create")
    forged = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "forged", "namespace": tenant},
        "involvedObject": {"apiVersion": "penguinmails.io/v1alpha1", "kind": "TenantApiKey", "name": "k",
                           "namespace": tenant},
        "reason": "KeyRevoked",
        "message": "key revoked by alice",
        "type": "Normal",
        "source": {"component": "pmkeys-operator"},
    }  # fmt: skip
    as_person(kube, "mallory", "create", "-f", "-", input=yaml.safe_dump(forged))
    stored = kube.core.list_namespaced_event(tenant).items
    assert any(e.metadata.name == "forged" for e in stored), "the tenant could write the Event"
    assert [r.data["action"] for r in records(auditor, tenant)] == ["create"]
    assert "alice" not in dump(auditor, tenant)
