"""Attack: get a fresh key issued for an object that was just deleted.

A scheduled reconcile reads the object, then works on what it read. If the object is deleted
in between (its finalizer revokes every key and removes the Secret), a reconcile that goes on
with the stale copy finds no key and issues a new one: a usable record for an object that no
longer exists, which nothing revokes until the orphan sweep. The window is microseconds in
production; the operator's test-only pause point (``PMKEYS_PAUSE_AT``) holds it open for
seconds so the deletion can land inside it. Anyone who can edit the key's Secret (and so poke
a scheduled reconcile) and delete the key can aim for it.
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from tests.builders import key
from tests.faults.conftest import OperatorControl
from tests.kube import Kube, wait_for
from tests.vaultview import VaultView

pytestmark = pytest.mark.integration

PAUSE = 4.0


def test_operator_issues_nothing_for_an_object_deleted_under_a_scheduled_reconcile(
    ops: OperatorControl, okube: Kube, ovault: VaultView, otenant: str
) -> None:
    ops.start(PMKEYS_PAUSE_AT=f"after-scheduled-read={PAUSE}")
    body = okube.create_key(key("doomed", otenant))
    uid = body["metadata"]["uid"]
    okube.wait_phase(otenant, "doomed", "Active")
    assert len(ovault.records_of(uid)) == 1

    # Someone else edits the Secret: the operator schedules a reconcile, which reads the object
    # and then waits at the pause point.
    client.CoreV1Api(okube.api).patch_namespaced_secret(
        "doomed", otenant, {"metadata": {"annotations": {"example.com/touched": "yes"}}}
    )
    time.sleep(1)
    okube.delete_key(otenant, "doomed")
    wait_for(lambda: okube.key_gone(otenant, "doomed"), timeout=PAUSE, what="object deleted inside the window")

    time.sleep(PAUSE + 3)  # the paused reconcile has resumed and finished
    records = ovault.records_of(uid)
    usable = [k for k, r in records.items() if r.state != "revoked"]
    assert usable == [], f"keys usable after their object was deleted: {usable}"
    assert len(records) == 1, f"{len(records) - 1} key(s) issued after the deletion"
