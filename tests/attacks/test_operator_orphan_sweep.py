"""Attack: outlive your key's object by deleting it while the operator is down.

A tenant admin (or a restore from backup) removes a TenantApiKey without its finalizer running,
so nothing revokes its records; the orphan sweep would find them, but it first ran one sweep
interval (6 h by default) after the operator started. It runs at start now.
"""

from __future__ import annotations

import time

import pytest

from tests.builders import key
from tests.faults.conftest import OperatorControl
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView

pytestmark = pytest.mark.integration


def test_operator_revokes_orphans_when_it_starts(
    ops: OperatorControl, okube: Kube, ovault: VaultView, otenant: str
) -> None:
    ops.start()
    okube.create_key(key("vanishing", otenant))
    okube.create_key(key("staying", otenant))
    okube.wait_phase(otenant, "vanishing", "Active")
    okube.wait_phase(otenant, "staying", "Active")
    vanishing, staying = okube.plaintext(otenant, "vanishing"), okube.plaintext(otenant, "staying")
    ops.stop()
    okube.patch_key(otenant, "vanishing", {"metadata": {"finalizers": None}})
    okube.delete_key(otenant, "vanishing")
    wait_for(lambda: okube.key_gone(otenant, "vanishing"), what="object gone without its finalizer")
    record = ovault.record_for(vanishing)
    assert record is not None and record.state == "active", "nothing revoked it while the operator was down"
    time.sleep(2)  # older than the orphan age below, so only the sweep's schedule decides

    started = time.monotonic()
    ops.start(PMKEYS_ORPHAN_MIN_AGE_SECONDS="1")  # the sweep interval keeps its 6 h default
    revoked = wait_for(
        lambda: (r := ovault.record_for(vanishing)) is not None and r.state == "revoked" and r,
        timeout=30,
        what="the orphan revoked soon after the operator started",
    )
    assert time.monotonic() - started < 30
    assert revoked.revoked_reason == "its TenantApiKey no longer exists"
    kept = ovault.record_for(staying)
    assert kept is not None and kept.state == "active", "a key whose object exists is not an orphan"
