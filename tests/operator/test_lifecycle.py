"""The operator's main scenario against the real API server and OpenBao: issue, update in
place, revoke, delete, refuse a foreign tenant, repair a lost or altered Secret."""

from __future__ import annotations

import base64
import time

import pytest
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.keys import material
from pmkeys.vault.records import KeyState
from tests.builders import key
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView, bcrypt_matches

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator")]


def issued(kube: Kube, ns: str, name: str, *, secret: str | None = None) -> tuple[dict, str]:
    status = kube.wait_phase(ns, name, "Active")
    return status, kube.plaintext(ns, secret or name)


def test_create_issues_secret_record_and_status(kube: Kube, vault: VaultView, tenant: str) -> None:
    manifest = key(
        "mail",
        tenant,
        tier="pro",
        scopes=["send_email", "read_analytics"],
        secret={"name": "mail-key", "labels": {"app": "mailer"}, "annotations": {"team": "growth"}},
    )
    manifest["metadata"]["labels"] = {"argocd.argoproj.io/instance": "acme-keys"}
    started = time.monotonic()
    kube.create_key(manifest)
    status, plaintext = issued(kube, tenant, "mail", secret="mail-key")
    assert time.monotonic() - started < 10

    parsed = material.parse(plaintext)
    assert parsed.environment == "live"
    assert status["displayPrefix"] == parsed.display_prefix
    assert status["secretName"] == "mail-key"
    assert status["effectiveRateLimit"] == 300
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == 1

    record = vault.record_for(plaintext)
    assert record is not None, "the digest of the Secret's key must name its Vault record"
    assert bcrypt_matches(plaintext, record)
    assert record.key_id == status["keyId"]
    assert (record.tenant, record.namespace, record.name) == (tenant, tenant, "mail")
    assert record.state is KeyState.ACTIVE and record.rate_limit == 300
    assert sorted(record.scopes) == ["read_analytics", "send_email"]

    secret = kube.secret(tenant, "mail-key")
    assert secret.type == "Opaque" and list(secret.data) == [v.SECRET_DATA_KEY]
    assert secret.metadata.labels == {"app": "mailer", v.MANAGED_BY_LABEL: v.MANAGED_BY_VALUE}
    annotations = secret.metadata.annotations
    assert annotations[v.KEY_ID_ANNOTATION] == status["keyId"]
    assert annotations[v.TENANT_ANNOTATION] == tenant and annotations["team"] == "growth"
    owner = secret.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("TenantApiKey", "mail", True)
    assert "KeyIssued" in kube.event_reasons(tenant, "mail")


def test_test_environment_key_has_test_prefix(kube: Kube, tenant: str) -> None:
    kube.create_key(key("staging", tenant, environment="test"))
    _, plaintext = issued(kube, tenant, "staging")
    assert plaintext.startswith("pm_test_") and len(plaintext) == 40


def test_spec_change_updates_record_in_place(kube: Kube, vault: VaultView, tenant: str) -> None:
    kube.create_key(key("crm", tenant, scopes=["manage_contacts"]))
    status, plaintext = issued(kube, tenant, "crm")
    kube.patch_key(
        tenant,
        "crm",
        {
            "spec": {
                "scopes": ["manage_contacts", "read_analytics"],
                "tier": "pro",
                "rateLimit": 120,
                "displayName": "CRM",
            }
        },
    )
    wait_for(
        lambda: (r := vault.record_for(plaintext)) and r.rate_limit == 120 and len(r.scopes) == 2,
        what="record updated in place",
    )
    assert kube.plaintext(tenant, "crm") == plaintext, "the key must stay the same"
    after = kube.wait_status(tenant, "crm", lambda s: s.get("observedGeneration") == 2)
    assert after["keyId"] == status["keyId"] and after["effectiveRateLimit"] == 120
    wait_for(lambda: "KeyUpdated" in kube.event_reasons(tenant, "crm"), what="KeyUpdated event")


def test_revoke_is_final(kube: Kube, vault: VaultView, tenant: str) -> None:
    kube.create_key(key("old", tenant))
    status, plaintext = issued(kube, tenant, "old")
    kube.patch_key(tenant, "old", {"spec": {"revoked": True}})
    revoked = kube.wait_phase(tenant, "old", "Revoked")
    assert "final" in revoked["message"]
    record = vault.record_for(plaintext)
    assert record.state is KeyState.REVOKED and record.revoked_at is not None
    assert record.revoked_reason == "revoked by spec"
    wait_for(lambda: kube.secret(tenant, "old") is None, what="Secret removed")
    assert status["keyId"] in revoked["revokedKeyIds"]
    assert "KeyRevoked" in kube.event_reasons(tenant, "old")


def test_delete_revokes_records_and_removes_secret(kube: Kube, vault: VaultView, tenant: str) -> None:
    kube.create_key(key("gone", tenant))
    _, plaintext = issued(kube, tenant, "gone")
    kube.delete_key(tenant, "gone")
    wait_for(lambda: kube.key_gone(tenant, "gone"), what="object deleted")
    wait_for(lambda: kube.secret(tenant, "gone") is None, what="Secret deleted")
    record = vault.record_for(plaintext)
    assert record is not None, "revoked records stay in Vault as the audit trail"
    assert record.state is KeyState.REVOKED and record.revoked_reason == "TenantApiKey deleted"


def test_tenant_mismatch_is_refused(kube: Kube, vault: VaultView, tenant: str) -> None:
    body = kube.create_key(key("intruder", tenant, tenant="someone-else"))
    status = kube.wait_phase(tenant, "intruder", "Failed")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "TenantMismatch" and "someone-else" in ready["message"]
    assert kube.secret(tenant, "intruder") is None
    assert vault.owner(body["metadata"]["uid"]) is None, "nothing is written to Vault for a refused key"
    assert "TenantMismatch" in kube.event_reasons(tenant, "intruder")


def test_unlabelled_namespace_is_refused(kube: Kube, namespace_factory) -> None:  # type: ignore[no-untyped-def]
    ns = namespace_factory(None)
    kube.create_key(key("k", ns, tenant="acme"))
    status = kube.wait_phase(ns, "k", "Failed")
    assert "penguinmails.io/tenant" in status["message"]


def test_deleted_secret_gets_a_new_key_and_old_one_is_revoked(kube: Kube, vault: VaultView, tenant: str) -> None:
    kube.create_key(key("lost", tenant))
    status, old = issued(kube, tenant, "lost")
    kube.core.delete_namespaced_secret("lost", tenant)
    after = kube.wait_status(
        tenant, "lost", lambda s: s.get("keyId") not in (None, status["keyId"]), what="new key after Secret deletion"
    )
    new = kube.plaintext(tenant, "lost")
    assert new != old
    assert vault.record_for(old).state is KeyState.REVOKED
    assert vault.record_for(new).state is KeyState.ACTIVE
    assert after["phase"] == "Active"
    assert "SecretRepaired" in kube.event_reasons(tenant, "lost")


def test_altered_secret_is_repaired(kube: Kube, vault: VaultView, tenant: str) -> None:
    kube.create_key(key("edited", tenant))
    status, old = issued(kube, tenant, "edited")
    chosen = material.generate(material.Environment.LIVE).value
    kube.issued.add(chosen)
    encoded = base64.b64encode(chosen.encode()).decode()
    kube.core.patch_namespaced_secret("edited", tenant, {"data": {v.SECRET_DATA_KEY: encoded}})
    kube.wait_status(tenant, "edited", lambda s: s.get("keyId") != status["keyId"], what="repair")
    repaired = kube.plaintext(tenant, "edited")
    assert repaired not in (old, chosen), "a hand-written key is never adopted"
    assert vault.record_for(chosen) is None
    assert vault.record_for(old).state is KeyState.REVOKED


def test_foreign_secret_is_not_overwritten(kube: Kube, tenant: str) -> None:
    kube.core.create_namespaced_secret(
        tenant, client.V1Secret(metadata=client.V1ObjectMeta(name="taken"), string_data={"password": "hunter2"})
    )
    kube.create_key(key("squatter", tenant, secret={"name": "taken"}))
    status = kube.wait_phase(tenant, "squatter", "Failed")
    assert "not owned" in status["message"]
    secret = kube.secret(tenant, "taken")
    assert list(secret.data) == ["password"]
    assert "SecretConflict" in kube.event_reasons(tenant, "squatter")
