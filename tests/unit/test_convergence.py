"""Every convergence path of the reconciler, against in-memory fakes, in milliseconds.

Each test is one row of the table a reviewer would write for the operator: a starting state
(fresh, issued, rotating, refused, Secret lost or altered, a write failing half-way) and what
a user must see after reconciling (phase, which keys work, which Events, when the next look
is). The same behaviour is tested end to end in ``tests/operator`` and ``tests/faults``.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v
from pmkeys.api.vocabulary import Environment
from pmkeys.keys import material
from pmkeys.reconcile.reconciler import Result
from pmkeys.vault.errors import VaultSealed, VaultUnavailable
from pmkeys.vault.records import EntryState, KeyState
from tests.unit.world import HASHER, T0, World

# -- issuing -------------------------------------------------------------------------------


async def test_fresh_object_gets_one_key_in_secret_record_and_status() -> None:
    world = World()
    world.create(tier="pro", scopes=["send_email", "read_analytics"])
    outcome = await world.reconcile()
    assert outcome.result is Result.OK and outcome.wake is None, "no rotation, no expiry: nothing to wake for"
    assert world.violations() == []
    assert world.phase() == "Active" and world.ready()["status"] == "True"
    record = world.secret_record()
    assert record is not None and record.rate_limit == 300 and sorted(record.scopes) == ["read_analytics", "send_email"]
    assert world.kube.reasons() == ["KeyIssued"]
    assert world.status()["displayPrefix"].startswith("pm_live_")


async def test_test_environment_gets_a_test_prefix() -> None:
    world = World()
    world.create(environment="test")
    await world.reconcile()
    assert world.status()["displayPrefix"].startswith("pm_test_")


async def test_consistent_key_costs_no_bcrypt_and_no_writes() -> None:
    world = World()
    world.create()
    await world.reconcile()
    hashes, patches, events = HASHER.calls, world.kube.status_patches, len(world.kube.events)
    records = dict(world.store.records)
    outcome = await world.reconcile()
    assert outcome.result is Result.OK
    assert HASHER.calls == hashes, "a consistent key is not re-hashed"
    assert world.kube.status_patches == patches, "nothing changed: status is not patched"
    assert len(world.kube.events) == events and world.store.records == records


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenants", "reason"),
    [({"acme": "globex"}, "TenantMismatch"), ({"acme": None}, "NamespaceNotBound")],
    ids=["other-tenant", "unlabelled"],
)
async def test_refused_namespace_gets_nothing_and_is_rechecked(tenants: dict[str, str | None], reason: str) -> None:
    world = World(tenants)
    world.create()
    outcome = await world.reconcile()
    assert outcome.result is Result.REFUSED and outcome.wake == T0 + dt.timedelta(seconds=60)
    assert world.store.owners == {} and world.store.records == {} and world.kube.secrets == {}
    assert world.phase() == "Failed" and world.ready()["reason"] == reason
    await world.reconcile()
    assert world.kube.reasons() == [reason], "the refusal is announced once, not on every recheck"
    assert [ns for ns, _, _ in world.reconciler.memories.refused_in("acme")] == ["acme"]


async def test_refusal_lifted_when_namespace_is_relabelled() -> None:
    world = World({"acme": None})
    world.create()
    await world.reconcile()
    world.kube.tenants["acme"] = "acme"
    outcome = await world.reconcile()
    assert outcome.result is Result.OK and world.violations() == []
    assert world.reconciler.memories.refused_in("acme") == []


@pytest.mark.parametrize("owner", ["globex", None], ids=["another-tenant", "no-tenant"])
async def test_namespace_handed_to_another_tenant_withdraws_live_keys(owner: str | None) -> None:
    world = World()
    world.create(rotation={"counter": 0, "gracePeriod": "1h"})
    await world.reconcile()
    world.change("mail", rotation={"counter": 1, "gracePeriod": "1h"})
    await world.reconcile()
    assert len(world.usable()) == 2
    world.kube.tenants["acme"] = owner
    outcome = await world.reconcile()
    assert outcome.result is Result.REFUSED
    assert world.usable() == set() and world.kube.secrets == {}, "no key keeps working for the old tenant"
    assert world.phase() == "Failed" and world.status()["keyId"] is None and world.status()["previousKeys"] == []
    assert "KeyRevoked" in world.kube.reasons()
    world.kube.tenants["acme"] = "acme"
    await world.reconcile()
    assert world.violations() == [] and len(world.records()) == 3, "back with its tenant: a fresh key"


async def test_secret_name_held_by_someone_else_is_refused_and_never_overwritten() -> None:
    world = World()
    world.kube.put_foreign_secret("acme", "mail")
    world.create()
    outcome = await world.reconcile()
    assert outcome.result is Result.REFUSED and world.ready()["reason"] == "SecretConflict"
    assert world.kube.secrets[("acme", "mail")].data == {}, "the foreign Secret is untouched"
    assert world.usable() == set(), "no key works for a refused object"
    await world.reconcile()
    assert world.ready()["reason"] == "SecretConflict", "with index entries the Secret is read and still refused"
    del world.kube.secrets[("acme", "mail")]
    await world.reconcile()
    assert world.violations() == [], "once the name is free, the pending intent is dropped and one key issued"


# -- terminal states -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "phase", "reason"),
    [({"revoked": True}, "Revoked", "KeyRevoked"), ({"expiresAt": "2026-12-01T12:30:00Z"}, "Expired", "KeyExpired")],
    ids=["revoked", "expired"],
)
async def test_end_revokes_every_key_and_removes_the_secret(change: dict[str, Any], phase: str, reason: str) -> None:
    world = World()
    world.create(rotation={"counter": 0, "gracePeriod": "1h"})
    await world.reconcile()
    world.change("mail", rotation={"counter": 1, "gracePeriod": "1h"})
    await world.reconcile()
    assert len(world.usable()) == 2, "a rotated key and its predecessor in grace"
    world.change("mail", **change)
    world.advance(hours=1)
    outcome = await world.reconcile()
    assert outcome.result is Result.OK and outcome.wake is None
    assert world.usable() == set() and set(world.states().values()) == {"revoked"}
    assert world.kube.secrets == {}
    assert world.phase() == phase and world.ready()["reason"] == reason
    assert world.status()["keyId"] is None and world.status()["previousKeys"] == []
    assert world.kube.reasons()[-1] == reason


async def test_expiry_wakes_the_object_and_extending_it_keeps_the_key() -> None:
    world = World()
    world.create(expiresAt="2026-12-01T13:00:00Z")
    outcome = await world.reconcile()
    assert outcome.wake == dt.datetime(2026, 12, 1, 13, tzinfo=dt.UTC)
    key_id = world.secret_key_id()
    world.change("mail", expiresAt="2026-12-02T13:00:00Z")
    outcome = await world.reconcile()
    assert world.secret_key_id() == key_id and outcome.wake == dt.datetime(2026, 12, 2, 13, tzinfo=dt.UTC)
    record = world.secret_record()
    assert record is not None and record.not_after == dt.datetime(2026, 12, 2, 13, tzinfo=dt.UTC)
    assert world.kube.reasons()[-1] == "KeyUpdated"


# -- rotation ------------------------------------------------------------------------------


async def test_scheduled_rotation_keeps_the_old_key_for_its_grace_then_revokes_it() -> None:
    world = World()
    world.create(rotation={"interval": "1h", "gracePeriod": "10m"})
    outcome = await world.reconcile()
    assert outcome.wake == T0 + dt.timedelta(hours=1)
    first = world.secret_key_id()
    world.advance(hours=1)
    outcome = await world.reconcile()
    second = world.secret_key_id()
    assert second != first and world.usable() == {first, second}
    assert world.phase() == "Rotating" and world.violations() == []
    assert world.status()["previousKeys"][0]["notAfter"] == "2026-12-01T13:10:00Z"
    assert outcome.wake == T0 + dt.timedelta(hours=1, minutes=10), "woken for the end of the grace"
    assert world.kube.reasons()[-1] == "KeyRotated"
    world.advance(minutes=10)
    outcome = await world.reconcile()
    assert world.usable() == {second} and world.phase() == "Active"
    assert world.kube.reasons()[-1] == "GraceExpired"
    assert outcome.wake == T0 + dt.timedelta(hours=2), "next rotation an interval after the last"


@pytest.mark.parametrize(
    "trigger",
    [
        {"spec": {"rotation": {"counter": 1, "gracePeriod": "1h"}}},
        {"annotations": {v.ROTATE_ANNOTATION: "2026-12-01"}},
    ],
    ids=["counter", "annotation"],
)
async def test_manual_rotation_happens_once_per_trigger(trigger: dict[str, Any]) -> None:
    world = World()
    world.create(rotation={"counter": 0, "gracePeriod": "1h"})
    await world.reconcile()
    first = world.secret_key_id()
    world.change("mail", annotations=trigger.get("annotations"), **trigger.get("spec", {}))
    await world.reconcile()
    second = world.secret_key_id()
    assert second != first and world.usable() == {first, second}
    await world.reconcile()
    assert world.secret_key_id() == second, "the same trigger does not rotate twice"
    assert world.status()["rotation"]["observedCounter"] == world.objects["mail"]["spec"]["rotation"]["counter"]


async def test_zero_grace_revokes_the_previous_key_at_once() -> None:
    world = World()
    world.create(rotation={"counter": 0, "gracePeriod": "0"})
    await world.reconcile()
    world.change("mail", rotation={"counter": 1, "gracePeriod": "0"})
    await world.reconcile()
    assert world.usable() == {world.secret_key_id()} and world.phase() == "Active"


async def test_grace_never_outlives_expiry() -> None:
    world = World()
    world.create(rotation={"counter": 0, "gracePeriod": "24h"}, expiresAt="2026-12-01T12:30:00Z")
    await world.reconcile()
    world.change("mail", rotation={"counter": 1, "gracePeriod": "24h"})
    await world.reconcile()
    assert world.status()["previousKeys"][0]["notAfter"] == "2026-12-01T12:30:00Z"


async def test_spec_change_reaches_the_retiring_key_too() -> None:
    world = World()
    world.create(rotation={"counter": 0, "gracePeriod": "1h"})
    await world.reconcile()
    world.change("mail", rotation={"counter": 1, "gracePeriod": "1h"})
    await world.reconcile()
    world.change("mail", scopes=["read_analytics"], expiresAt="2026-12-01T12:20:00Z")
    await world.reconcile()
    records = world.records()
    assert {tuple(r.scopes) for r in records.values()} == {("read_analytics",)}
    retiring = [r for r in records.values() if r.state is KeyState.RETIRING]
    assert retiring[0].not_after == dt.datetime(2026, 12, 1, 12, 20, tzinfo=dt.UTC), "expiry shortens the grace"


async def test_restart_targets_restart_once_per_new_key_never_on_first_issue() -> None:
    world = World()
    targets = [
        {"kind": "Deployment", "name": "mailer"},
        {"kind": "StatefulSet", "name": "gone"},
        {"kind": "Deployment", "name": "payments"},
    ]
    opted_in = {v.RESTART_OPT_IN_ANNOTATION: "mail"}
    world.kube.workloads[("acme", "Deployment", "mailer")] = dict(opted_in)
    world.kube.workloads[("acme", "Deployment", "payments")] = {}
    world.create(rotation={"counter": 0, "restartTargets": targets})
    await world.reconcile()
    assert world.kube.workloads[("acme", "Deployment", "mailer")] == opted_in, "the first key restarts nothing"
    world.change("mail", rotation={"counter": 1, "restartTargets": targets})
    await world.reconcile()
    assert world.kube.workloads[("acme", "Deployment", "mailer")] == {**opted_in, "restartedAt": "2026-12-01T12:00:00Z"}
    assert world.kube.workloads[("acme", "Deployment", "payments")] == {}, "not opted in: not restarted"
    reasons = world.kube.reasons()
    assert {"RestartTriggered", "RestartFailed", "RestartRefused"} <= set(reasons)
    restarts = world.kube.fail.calls.count("restart_workload")
    await world.reconcile()
    assert world.kube.fail.calls.count("restart_workload") == restarts, "once per key, not per reconcile"


# -- repairs -------------------------------------------------------------------------------


def _alter(world: World, data: str) -> None:
    world.kube.secrets[("acme", "mail")].data = {v.SECRET_DATA_KEY: base64.b64encode(data.encode()).decode()}


@pytest.mark.parametrize(
    "damage",
    [
        lambda w: w.kube.secrets.pop(("acme", "mail")),
        lambda w: _alter(w, "not-a-key"),
        lambda w: _alter(w, material.generate(Environment.LIVE).value),
        lambda w: setattr(w.kube.secrets[("acme", "mail")], "data", {}),
    ],
    ids=["deleted", "malformed", "foreign-key", "emptied"],
)
async def test_lost_or_altered_secret_gets_a_new_key_and_the_old_one_is_revoked(
    damage: Callable[[World], object],
) -> None:
    world = World()
    world.create(rotation={"gracePeriod": "1h"})
    await world.reconcile()
    first = world.secret_key_id()
    damage(world)
    await world.reconcile()
    assert world.violations() == []
    assert world.states()[first] == "revoked", "a key that left its Secret stops working at once, grace or not"
    assert "SecretRepaired" in world.kube.reasons()


async def test_stray_active_key_is_revoked() -> None:
    world = World()
    world.create()
    await world.reconcile()
    index, version = world.store.owners[world.uid()]
    stray = next(iter(index.keys.values())).model_copy(update={"digest": "0" * 64})
    world.store.owners[world.uid()] = (index.model_copy(update={"keys": {**index.keys, "kstray": stray}}), version)
    await world.reconcile()
    assert world.violations() == [] and "KeyRevoked" in world.kube.reasons()


# -- failures half-way ---------------------------------------------------------------------

# Every write of the issuance and rotation paths, failing once (as a crash or an outage there
# would leave it); the next reconciles must converge to exactly one usable key.
HALF_WAY = [
    ("store", "current_pepper"),
    ("store", "put_owner"),
    ("kube", "create_secret"),
    ("kube", "replace_secret"),
    ("store", "create_record"),
    ("store", "update_record"),
    ("store", "get_record"),
    ("kube", "patch_status"),
    ("kube", "read_secret"),
]


def _fail(world: World, side: str, method: str) -> None:
    exc: Exception = VaultUnavailable("Vault unreachable") if side == "store" else ApiException(status=503)
    (world.store if side == "store" else world.kube).fail.add(method, exc)


@pytest.mark.parametrize(("side", "method"), HALF_WAY, ids=[m for _, m in HALF_WAY])
async def test_issuance_interrupted_at_any_write_converges(side: str, method: str) -> None:
    world = World()
    world.create()
    _fail(world, side, method)
    await world.converge()
    assert world.violations() == []
    assert len(world.usable()) == 1


@pytest.mark.parametrize(("side", "method"), HALF_WAY, ids=[m for _, m in HALF_WAY])
async def test_rotation_interrupted_at_any_write_converges(side: str, method: str) -> None:
    world = World()
    world.create(rotation={"counter": 0, "gracePeriod": "1h"})
    await world.reconcile()
    first = world.secret_key_id()
    world.change("mail", rotation={"counter": 1, "gracePeriod": "1h"})
    _fail(world, side, method)
    await world.converge()
    assert world.violations() == []
    current = world.secret_key_id()
    assert current != first and world.usable() <= {first, current}
    assert current in world.usable()


async def test_record_lost_after_the_secret_is_restored_from_the_secret() -> None:
    world = World()
    world.create()
    world.store.fail.add("create_record", VaultUnavailable("Vault unreachable"))
    outcome = await world.reconcile()
    assert outcome.result is Result.RETRY and world.secret_record() is None
    hashes = HASHER.calls
    await world.converge()
    assert world.violations() == [] and HASHER.calls == hashes + 1, "the Secret's key hashed once, not replaced"
    assert len(world.records()) == 1


async def test_pending_intent_that_never_reached_the_secret_is_dropped() -> None:
    world = World()
    world.create()
    world.kube.fail.add("create_secret", ApiException(status=500))
    await world.reconcile()
    index = world.store.owners[world.uid()][0]
    assert [e.state for e in index.keys.values()] == [EntryState.PENDING]
    await world.converge()
    assert world.violations() == [] and len(world.store.owners[world.uid()][0].keys) == 2


# -- transient failures --------------------------------------------------------------------


async def test_vault_outage_backs_off_reports_once_and_recovers() -> None:
    world = World()
    world.create()
    world.store.fail.add("get_owner", VaultSealed("Vault is sealed"), times=3)
    delays = []
    for _ in range(3):
        outcome = await world.reconcile()
        assert outcome.result is Result.RETRY and outcome.wake is not None
        delays.append((outcome.wake - T0).total_seconds())
    assert 0.5 <= delays[0] <= 1.5 and 1 <= delays[1] <= 3 and 2 <= delays[2] <= 6, delays
    assert world.phase() == "Pending"
    vault = next(c for c in world.status()["conditions"] if c["type"] == "VaultAvailable")
    assert vault["status"] == "False" and vault["reason"] == "VaultSealed"
    assert world.kube.reasons() == ["VaultSealed"], "one Event per outage, not one per retry"
    await world.reconcile()
    assert world.violations() == [] and world.reconciler.memories.recall(world.uid()).failures == 0


async def test_unexpected_error_is_reported_by_type_only() -> None:
    world = World()
    world.create()
    world.store.fail.add("get_owner", RuntimeError("token s.abcdef leaked in a message"))
    outcome = await world.reconcile()
    assert outcome.result is Result.RETRY
    assert world.ready()["reason"] == "ReconcileError"
    assert "s.abcdef" not in world.ready()["message"] and "RuntimeError" in world.ready()["message"]


# -- deletion and memory -------------------------------------------------------------------


async def test_finalize_revokes_everything_removes_the_secret_and_forgets_the_object() -> None:
    world = World()
    world.create(rotation={"counter": 0, "gracePeriod": "1h"})
    await world.reconcile()
    world.change("mail", rotation={"counter": 1, "gracePeriod": "1h"})
    await world.reconcile()
    assert world.uid() in world.reconciler.memories
    await world.finalize()
    assert world.usable() == set() and world.kube.secrets == {}
    assert world.uid() not in world.reconciler.memories, "nothing is remembered about a deleted object"


async def test_finalize_leaves_a_foreign_secret_alone() -> None:
    world = World()
    world.kube.put_foreign_secret("acme", "mail")
    world.create()
    await world.reconcile()
    await world.finalize()
    assert ("acme", "mail") in world.kube.secrets
    assert world.uid() not in world.reconciler.memories


async def test_written_secret_is_remembered_so_its_echo_is_ignored() -> None:
    world = World()
    world.create()
    await world.reconcile()
    memory = world.reconciler.memories.recall(world.uid())
    assert memory.written_secret == world.kube.secrets[("acme", "mail")].metadata.resource_version


async def test_a_reconcile_that_read_the_object_before_its_finalizer_does_nothing_after() -> None:
    world = World()
    world.create()
    await world.reconcile()
    stale = world.body("mail")
    await world.finalize()
    world.delete()
    outcome = await world.reconciler.reconcile(stale)
    assert outcome.result is Result.GONE and outcome.wake is None
    assert world.usable() == set() and len(world.records()) == 1, "no key issued for a deleted object"
    assert world.uid() not in world.reconciler.memories, "and nothing remembered for it"


async def test_no_key_is_issued_for_an_object_the_api_server_no_longer_has() -> None:
    world = World()
    world.create()
    await world.reconcile()
    world.kube.secrets.clear()  # a new key would be due
    world.delete()  # gone without its finalizer (stripped), no tombstone in this process
    outcome = await world.reconcile()
    assert outcome.result is Result.GONE
    assert len(world.records()) == 1 and world.kube.secrets == {}


async def test_a_key_is_issued_only_to_an_object_that_carries_the_finalizer() -> None:
    world = World()
    world.create()
    await world.reconcile()
    assert world.kube.objects[("acme", "mail")]["metadata"]["finalizers"] == [v.FINALIZER], (
        "deleting the object must revoke its key: the finalizer is there before the key is"
    )
    assert world.kube.fail.calls.index("add_finalizer") < world.kube.fail.calls.index("create_secret")
