"""The operator's Secret cache (the managed-Secret watch) saves a Secret read per object on a
restart, and never decides anything on its own: a cached copy only confirms the steady state
the owner index describes; a lagging copy makes the reconciler read the Secret, or confirms the
state just before a change whose own event reconciles the object again.
"""

from __future__ import annotations

import base64
import time

import pytest
from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.reconcile import secretwatch
from pmkeys.reconcile.reconciler import Reconciler, Result
from tests.unit.world import HASHER, World


def _restart(world: World) -> None:
    """A new operator process: nothing remembered, the watch caught up."""
    world.reconciler = Reconciler(
        kube=world.kube, store=world.store, hasher=HASHER, jitter_fraction=0.0, clock=lambda: world.now
    )
    world.kube.watch_caught_up()


def _reads(world: World) -> int:
    return world.kube.fail.calls.count("read_secret")


async def test_a_restart_reads_no_secret_when_the_watch_confirms_it() -> None:
    world = World()
    world.create()
    await world.reconcile()
    key, patches, hashes = world.secret_key_id(), world.kube.status_patches, HASHER.calls
    _restart(world)
    reads = _reads(world)
    assert (await world.reconcile()).result is Result.OK
    assert _reads(world) == reads, "the watched copy confirmed the key: no read"
    assert world.secret_key_id() == key and world.kube.status_patches == patches and HASHER.calls == hashes
    assert world.violations() == []


async def test_a_copy_behind_the_operators_own_rotation_is_read_again_and_changes_nothing() -> None:
    world = World()
    world.create(rotation={"counter": 0, "gracePeriod": "1h"})
    await world.reconcile()
    first = world.secret_key_id()
    _restart(world)  # the cache holds the first key ...
    world.change("mail", rotation={"counter": 1, "gracePeriod": "1h"})
    await world.reconcile()  # ... and keeps holding it after the rotation
    second = world.secret_key_id()
    assert second != first
    reads = _reads(world)
    await world.reconcile()
    assert _reads(world) == reads + 1, "the cached key is retiring, not active: the Secret is read"
    assert world.secret_key_id() == second and world.usable() == {first, second}
    assert world.violations() == []


async def test_a_copy_behind_a_deleted_secret_confirms_only_the_state_before_it() -> None:
    world = World()
    world.create()
    await world.reconcile()
    first = world.secret_key_id()
    _restart(world)
    del world.kube.secrets[("acme", "mail")]  # a tenant deletes it; the event is still on its way
    await world.reconcile()
    assert world.usable() == {first} and world.kube.reasons().count("KeyIssued") == 1, "nothing was decided"
    world.kube.watch_caught_up()  # the deletion's event arrives, and reconciles the object
    await world.reconcile()
    assert world.secret_key_id() not in (None, first) and world.usable() == {world.secret_key_id()}
    assert world.violations() == []


async def test_an_altered_key_in_the_copy_is_read_and_repaired() -> None:
    world = World()
    world.create()
    await world.reconcile()
    first = world.secret_key_id()
    world.kube.secrets[("acme", "mail")].data = {v.SECRET_DATA_KEY: base64.b64encode(b"pm_live_" + b"x" * 32).decode()}
    _restart(world)
    reads = _reads(world)
    await world.reconcile()
    assert _reads(world) == reads + 1
    assert world.secret_key_id() not in (None, first) and first not in world.usable()
    assert world.violations() == []


async def test_an_interrupted_rotation_is_finished_from_a_read_not_from_the_copy() -> None:
    world = World()
    world.create(rotation={"counter": 0, "gracePeriod": "1h"})
    await world.reconcile()
    first = world.secret_key_id()
    world.change("mail", rotation={"counter": 1, "gracePeriod": "1h"})
    world.kube.fail.add("replace_secret", OSError("connection reset"))
    assert (await world.reconcile()).result is Result.RETRY  # a pending entry, the Secret unchanged
    _restart(world)
    reads = _reads(world)
    await world.converge()
    assert _reads(world) > reads, "a pending entry: the Secret is read"
    current = world.secret_key_id()
    assert current != first and current in world.usable() and world.usable() <= {first, current}
    assert world.violations() == []


async def test_a_list_that_never_comes_delays_the_first_reconciles_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secretwatch, "LIST_WAIT_SECONDS", 0.5)
    cache = secretwatch.SecretCache(lambda *_: None, ours=lambda *_: False)
    nowhere = client.ApiClient(client.Configuration(host="http://127.0.0.1:1"))  # nothing listens there
    cache.start(client.CoreV1Api(nowhere), namespaces=["tenant"])
    try:
        assert await cache.listed() is False
        started = time.monotonic()
        assert await cache.listed() is False
        assert time.monotonic() - started < 0.2, "a later caller waited the whole bound again"
    finally:
        cache.stop()


def test_a_watched_secret_never_shows_its_key() -> None:
    encoded = base64.b64encode(b"pm_live_" + b"k" * 32).decode()
    body = {"metadata": {"uid": "u", "namespace": "acme", "name": "mail", "resourceVersion": "7"}}
    watched = secretwatch.WatchedSecret.from_body({**body, "data": {v.SECRET_DATA_KEY: encoded}})
    assert watched.key == encoded and encoded not in repr(watched) and "pm_live_" not in repr(watched)
