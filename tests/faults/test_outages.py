"""OpenBao stopped, OpenBao sealed, the API server restarted: status tells the truth while it
lasts, and everything converges afterwards with the invariants intact."""

from __future__ import annotations

import time

import pytest

from pmkeys_dev.environment import LocalEnvironment
from tests import report
from tests.builders import key
from tests.faults.conftest import OperatorControl
from tests.invariants import check_key, check_vault
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def ready_reason(kube: Kube, ns: str, name: str) -> str | None:
    conditions = kube.status(ns, name).get("conditions") or []
    return next((c["reason"] for c in conditions if c["type"] == "Ready"), None)


def test_openbao_down_for_30s_during_creation_and_rotation(
    fault_env: LocalEnvironment, control: OperatorControl, fkube: Kube, fvault: VaultView, ftenant: str
) -> None:
    control.start()
    fkube.create_key(key("existing", ftenant, rotation={"gracePeriod": "1h"}))
    before = fkube.wait_phase(ftenant, "existing", "Active")
    fault_env.openbao.stop()
    down_at = time.monotonic()
    try:
        fkube.create_key(key("during", ftenant))
        fkube.patch_key(ftenant, "existing", {"spec": {"rotation": {"counter": 1}}})
        wait_for(
            lambda: ready_reason(fkube, ftenant, "during") == "VaultUnavailable",
            timeout=20,
            what="status reports VaultUnavailable",
        )
        during = fkube.status(ftenant, "during")
        truthful = during.get("phase") == "Pending" and fkube.secret(ftenant, "during") is None
        existing = fkube.status(ftenant, "existing")
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
    finally:
        fault_env.openbao.restart()
    fkube.wait_phase(ftenant, "during", "Active", timeout=60)
    fkube.wait_status(
        ftenant, "existing", lambda s: s.get("keyId") != before["keyId"], timeout=60, what="rotation after the outage"
    )
    violations = check_key(fkube, fvault, ftenant, "during", max_records=1)
    violations += check_key(fkube, fvault, ftenant, "existing", max_records=2)
    violations += check_vault(fkube, fvault)
    if not truthful:
        violations.append(f"while down: phase {during.get('phase')}, a Secret exists or status lies")
    if existing.get("keyId") != before["keyId"]:
        violations.append("the existing key changed while Vault was down")
    if "VaultUnavailable" not in fkube.event_reasons(ftenant, "during"):
        violations.append("no VaultUnavailable Event")
    report.record(
        "OpenBao stopped 30 s during a creation and a rotation",
        violations,
        "Pending + VaultUnavailable while down, converged after",
    )
    assert not violations, violations


def test_openbao_sealed_then_unsealed(
    fault_env: LocalEnvironment, control: OperatorControl, fkube: Kube, fvault: VaultView, ftenant: str
) -> None:
    control.start()
    fault_env.openbao.seal()
    try:
        fkube.create_key(key("sealed", ftenant))
        wait_for(
            lambda: ready_reason(fkube, ftenant, "sealed") == "VaultSealed",
            timeout=20,
            what="status reports VaultSealed",
        )
        secret_while_sealed = fkube.secret(ftenant, "sealed")
    finally:
        fault_env.openbao.unseal()
    fkube.wait_phase(ftenant, "sealed", "Active", timeout=60)
    violations = check_key(fkube, fvault, ftenant, "sealed", max_records=1)
    if secret_while_sealed is not None:
        violations.append("a Secret was written while Vault was sealed")
    report.record("OpenBao sealed, then unsealed", violations, "VaultSealed while sealed, converged after")
    assert not violations, violations


def test_api_server_restart(
    fault_env: LocalEnvironment, control: OperatorControl, fkube: Kube, fvault: VaultView, ftenant: str
) -> None:
    control.start()
    fkube.create_key(key("before", ftenant))
    fkube.wait_phase(ftenant, "before", "Active")
    fault_env.restart_apiserver()
    fkube.create_key(key("after", ftenant))
    fkube.patch_key(ftenant, "before", {"spec": {"scopes": ["send_email", "read_analytics"]}})
    fkube.wait_phase(ftenant, "after", "Active", timeout=90)
    plaintext = fkube.plaintext(ftenant, "before")
    wait_for(lambda: len(fvault.record_for(plaintext).scopes) == 2, timeout=90, what="update after restart")
    violations = check_key(fkube, fvault, ftenant, "before", max_records=1)
    violations += check_key(fkube, fvault, ftenant, "after", max_records=1)
    report.record("kube-apiserver restarted", violations, "watches resumed; new and updated keys converge")
    assert not violations, violations


def test_revoked_records_are_destroyed_after_retention(
    control: OperatorControl, fkube: Kube, fvault: VaultView, ftenant: str
) -> None:
    control.start(PMKEYS_RETENTION_DAYS="0.0001", PMKEYS_RETENTION_SWEEP_SECONDS="2")  # ~9 s
    fkube.create_key(key("kept", ftenant))
    fkube.create_key(key("dropped", ftenant))
    fkube.wait_phase(ftenant, "kept", "Active")
    fkube.wait_phase(ftenant, "dropped", "Active")
    kept, dropped = fkube.plaintext(ftenant, "kept"), fkube.plaintext(ftenant, "dropped")
    fkube.patch_key(ftenant, "dropped", {"spec": {"revoked": True}})
    fkube.wait_phase(ftenant, "dropped", "Revoked")
    assert fvault.record_for(dropped) is not None, "revoked records stay during retention"
    wait_for(lambda: fvault.record_for(dropped) is None, timeout=30, what="retention sweep")
    assert fvault.record_for(kept) is not None and fvault.record_for(kept).state == "active"


def test_orphaned_records_are_revoked(control: OperatorControl, fkube: Kube, fvault: VaultView, ftenant: str) -> None:
    """A cluster rebuilt from backup: the object vanished without its finalizer running."""
    control.start()
    fkube.create_key(key("vanishing", ftenant))
    fkube.create_key(key("staying", ftenant))
    fkube.wait_phase(ftenant, "vanishing", "Active")
    fkube.wait_phase(ftenant, "staying", "Active")
    vanishing, staying = fkube.plaintext(ftenant, "vanishing"), fkube.plaintext(ftenant, "staying")
    control.stop()
    fkube.patch_key(ftenant, "vanishing", {"metadata": {"finalizers": None}})
    fkube.delete_key(ftenant, "vanishing")
    wait_for(lambda: fkube.key_gone(ftenant, "vanishing"), what="object gone without its finalizer")
    assert fvault.record_for(vanishing).state == "active"
    control.start(PMKEYS_ORPHAN_MIN_AGE_SECONDS="1", PMKEYS_RETENTION_SWEEP_SECONDS="2")
    wait_for(lambda: fvault.record_for(vanishing).state == "revoked", timeout=30, what="orphan revoked")
    assert fvault.record_for(vanishing).revoked_reason == "its TenantApiKey no longer exists"
    assert fvault.record_for(staying).state == "active"
    violations = check_vault(fkube, fvault)
    report.record("TenantApiKey vanished without its finalizer (restore)", violations, "orphan record revoked")
    assert not violations, violations


def test_vault_denying_is_reported_and_recovers(
    fault_env: LocalEnvironment, control: OperatorControl, fkube: Kube, fvault: VaultView, ftenant: str
) -> None:
    """Someone breaks the operator's Vault policy: VaultDenied in status, then recovery."""
    root = fault_env.openbao.client()
    policy = root.sys.read_policy("pmkeys-operator")["data"]["rules"]
    control.start()
    root.sys.create_or_update_policy("pmkeys-operator", 'path "sys/nothing" { capabilities = ["read"] }')
    try:
        fkube.create_key(key("denied", ftenant))
        wait_for(
            lambda: ready_reason(fkube, ftenant, "denied") == "VaultDenied",
            timeout=30,
            what="status reports VaultDenied",
        )
        secret_while_denied = fkube.secret(ftenant, "denied")
    finally:
        root.sys.create_or_update_policy("pmkeys-operator", policy)
    fkube.wait_phase(ftenant, "denied", "Active", timeout=60)
    violations = check_key(fkube, fvault, ftenant, "denied", max_records=1)
    if secret_while_denied is not None:
        violations.append("a Secret was written while Vault denied the operator")
    report.record("Vault policy broken, then fixed", violations, "VaultDenied while broken, converged after")
    assert not violations, violations
