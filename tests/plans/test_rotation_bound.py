"""Manual rotations are bounded: a tenant admin who bumps ``spec.rotation.counter`` in a loop (what
the UI's regenerate and the plugin's rotate do) gets at most ``MANUAL_ROTATIONS`` new keys per key
in any ``MANUAL_ROTATION_WINDOW`` — each costs a bcrypt in the operator and in the verifiers —
and is told why and until when; the trigger is kept and runs once the window has room."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from pmkeys.reconcile import policies
from pmkeys.vault.records import EntryState, Intent, OwnerEntry
from pmkeys_dev.processes import ServerProcess
from tests.builders import key
from tests.kube import Kube
from tests.plans.conftest import TenantAdmin, tenant_admin
from tests.plans.test_front_ends import kubectl_pmkeys
from tests.vaultview import VaultView

__all__ = ["tenant_admin"]  # fixtures
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def entry(minutes_ago: float, *, counter: int, supersedes: str | None, intent: Intent = Intent.ROTATE) -> OwnerEntry:
    return OwnerEntry(
        digest="d",
        display_prefix="pm_live_x",
        state=EntryState.ACTIVE,
        intent=intent,
        supersedes=supersedes,
        issued_at=NOW - dt.timedelta(minutes=minutes_ago),
        counter=counter,
    )


def test_the_window_counts_manual_rotations_only() -> None:
    window = {
        "k0": entry(30, counter=0, supersedes=None, intent=Intent.ISSUE),
        "k1": entry(9, counter=1, supersedes="k0"),
        "k2": entry(5, counter=2, supersedes="k1"),
    }
    assert policies.manual_rotation_held_until(window, NOW) is None, "two in the window: a third may run"
    window["k3"] = entry(1, counter=3, supersedes="k2")
    assert policies.manual_rotation_held_until(window, NOW) == NOW + dt.timedelta(minutes=1), (
        "three in the window: the next waits until the oldest of them leaves it"
    )
    window["k4"] = entry(0.5, counter=3, supersedes="k3")  # scheduled: same counter as the key it replaced
    assert policies.manual_rotation_held_until(window, NOW) == NOW + dt.timedelta(minutes=1)
    assert policies.manual_rotation_held_until(window, NOW + dt.timedelta(minutes=2)) is None


def bump(admin: TenantAdmin, counter: int) -> None:
    patch = json.dumps({"spec": {"rotation": {"counter": counter}}})
    result = admin.kubectl("patch", "tenantapikey", "spinning", "--type=merge", "-p", patch)
    assert result.returncode == 0, result.stderr


@pytest.mark.integration
def test_a_tenant_admin_cannot_force_bcrypt_work_with_a_rotation_loop(
    kube: Kube, vault: VaultView, operator: ServerProcess, tenant_admin: TenantAdmin
) -> None:
    ns = tenant_admin.namespace
    kube.create_key(key("spinning", ns, rotation={"gracePeriod": "0"}))
    seen = [kube.wait_phase(ns, "spinning", "Active")["keyId"]]
    for counter in range(1, policies.MANUAL_ROTATIONS + 1):
        bump(tenant_admin, counter)
        status = kube.wait_status(
            ns, "spinning", lambda s, c=counter: s.get("keyId") not in seen and s["rotation"]["observedCounter"] >= c,
            what=f"rotation {counter}",
        )  # fmt: skip
        seen.append(status["keyId"])
    started = time.monotonic()
    for counter in range(policies.MANUAL_ROTATIONS + 1, policies.MANUAL_ROTATIONS + 21):
        bump(tenant_admin, counter)  # the attack: as fast as kubectl goes
    held = kube.wait_status(
        ns, "spinning", lambda s: "manual rotation deferred until" in str(s.get("message")), what="the hold said"
    )
    assert held["keyId"] == seen[-1], "no fourth rotation within the window"
    assert "at most 3 manual rotations per key in any 10 minutes" in held["message"]
    time.sleep(max(0.0, 5 - (time.monotonic() - started)))
    uid = kube.get_key(ns, "spinning")["metadata"]["uid"]
    assert len(vault.records_of(uid)) == 1 + policies.MANUAL_ROTATIONS, "one bcrypt per allowed rotation, no more"
    assert kube.status(ns, "spinning")["keyId"] == seen[-1]
    assert "RotationDeferred" in kube.event_reasons(ns, "spinning")
    refused = kubectl_pmkeys(tenant_admin.kubeconfig, "rotate", "spinning", "-n", ns)
    assert refused.returncode == 1 and "manual rotation deferred until" in refused.stderr, refused.stderr
