"""SIGKILL the operator at every crash point, and at random moments during bursts; after a
restart the invariants of tests/invariants.py must hold for every key."""

from __future__ import annotations

import random
import time

import pytest

from pmkeys.reconcile.crashpoints import POINTS
from tests import report
from tests.builders import key
from tests.faults.conftest import OperatorControl
from tests.invariants import check_key, check_vault
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ISSUE_POINTS = ["after-hash", "after-index", "after-secret", "after-record", "after-status"]
ROTATE_POINTS = ["after-hash", "after-index", "after-secret", "after-record", "after-supersede", "after-status"]


def test_every_crash_point_is_exercised() -> None:
    assert set(ISSUE_POINTS) | set(ROTATE_POINTS) | {"after-revoke-record"} == set(POINTS)


@pytest.mark.parametrize("point", ISSUE_POINTS)
def test_crash_during_issuance(
    point: str, control: OperatorControl, fkube: Kube, fvault: VaultView, ftenant: str
) -> None:
    control.start(crash_at=point)
    fkube.create_key(key("k", ftenant))
    assert control.wait_dead(), f"the operator did not reach {point}"
    control.start()
    fkube.wait_phase(ftenant, "k", "Active")
    violations = check_key(fkube, fvault, ftenant, "k", max_records=1)
    report.record(f"SIGKILL {point} during issuance", violations, "one key, Secret = record = status")
    assert not violations


@pytest.mark.parametrize("point", ROTATE_POINTS)
def test_crash_during_rotation(
    point: str, control: OperatorControl, fkube: Kube, fvault: VaultView, ftenant: str
) -> None:
    control.start()
    fkube.create_key(key("r", ftenant, rotation={"gracePeriod": "1h"}))
    first = fkube.wait_phase(ftenant, "r", "Active")
    control.start(crash_at=point)
    fkube.patch_key(ftenant, "r", {"spec": {"rotation": {"counter": 1}}})
    assert control.wait_dead(), f"the operator did not reach {point}"
    control.start()
    after = fkube.wait_status(
        ftenant,
        "r",
        lambda s: s.get("keyId") != first["keyId"] and s.get("rotation", {}).get("observedCounter") == 1,
        what="rotation finished",
    )
    violations = check_key(fkube, fvault, ftenant, "r", max_records=2)
    previous = [p["keyId"] for p in after.get("previousKeys") or []]
    if previous != [first["keyId"]]:
        violations.append(f"previous keys {previous}, expected the first key in grace")
    report.record(f"SIGKILL {point} during rotation", violations, "new key current, old one retiring 1h")
    assert not violations


def test_crash_while_revoking(control: OperatorControl, fkube: Kube, fvault: VaultView, ftenant: str) -> None:
    control.start()
    fkube.create_key(key("rv", ftenant))
    fkube.wait_phase(ftenant, "rv", "Active")
    plaintext = fkube.plaintext(ftenant, "rv")
    control.start(crash_at="after-revoke-record")
    fkube.patch_key(ftenant, "rv", {"spec": {"revoked": True}})
    assert control.wait_dead()
    control.start()
    fkube.wait_phase(ftenant, "rv", "Revoked")
    record = fvault.record_for(plaintext)
    violations = [] if record.state == "revoked" else [f"record is {record.state}"]
    if fkube.secret(ftenant, "rv") is not None:
        violations.append("Secret still exists")
    report.record("SIGKILL after-revoke-record during revocation", violations, "record revoked, Secret gone")
    assert not violations


def test_random_kills_during_a_burst(control: OperatorControl, fkube: Kube, fvault: VaultView, ftenant: str) -> None:
    """30 creations, then rotations and revocations, with the operator SIGKILLed at random."""
    control.bcrypt_cost = "10"  # slow enough (~80 ms) that kills land mid-issuance
    rng = random.Random(20261128)
    names = [f"b{i}" for i in range(30)]
    control.start()
    for name in names:
        fkube.create_key(key(name, ftenant, rotation={"gracePeriod": "1h"}))
    kills = 0
    for _ in range(4):
        time.sleep(rng.uniform(0.3, 1.5))
        control.kill()
        kills += 1
        control.start()
    wait_for(
        lambda: all(fkube.status(ftenant, n).get("phase") == "Active" for n in names), timeout=120, what="burst settled"
    )
    for name in names[:10]:
        fkube.patch_key(ftenant, name, {"spec": {"rotation": {"counter": 1}}})
    for name in names[10:15]:
        fkube.patch_key(ftenant, name, {"spec": {"revoked": True}})
    for _ in range(3):
        time.sleep(rng.uniform(0.2, 1.0))
        control.kill()
        kills += 1
        control.start()
    wait_for(
        lambda: all(fkube.status(ftenant, n).get("rotation", {}).get("observedCounter") == 1 for n in names[:10]),
        timeout=120,
        what="rotations settled",
    )
    wait_for(
        lambda: all(fkube.status(ftenant, n).get("phase") == "Revoked" for n in names[10:15]),
        timeout=120,
        what="revocations settled",
    )
    violations: list[str] = []
    for name in names[:10]:
        violations += check_key(fkube, fvault, ftenant, name, max_records=2)
    for name in names[15:]:
        violations += check_key(fkube, fvault, ftenant, name, max_records=1)
    violations += check_vault(fkube, fvault)
    report.record(
        f"{kills} random SIGKILLs during 30 creations, 10 rotations, 5 revocations", violations, "all invariants hold"
    )
    assert not violations, violations
