"""Pure parts of the operator: status conditions, rotation jitter, the scheduler's heap."""

from __future__ import annotations

import asyncio
import datetime as dt

from pmkeys.api.model import Condition
from pmkeys.api.vocabulary import ConditionType
from pmkeys.reconcile.scheduling import MAX_JITTER, ObjectRef, Scheduler, rotation_jitter
from pmkeys.reconcile.status import CondSpec, merge_conditions

T0 = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)


def test_transition_time_moves_only_when_status_changes() -> None:
    before = [Condition(type="Ready", status="True", reason="Active", last_transition_time=T0)]
    later = T0 + dt.timedelta(hours=1)
    same = merge_conditions(before, [CondSpec(ConditionType.READY, True, "Active")], generation=3, now=later)
    assert same[0]["lastTransitionTime"] == "2026-11-28T00:00:00Z" and same[0]["observedGeneration"] == 3
    flipped = merge_conditions(
        before, [CondSpec(ConditionType.READY, False, "VaultUnavailable")], generation=3, now=later
    )
    assert flipped[0]["lastTransitionTime"] == "2026-11-28T01:00:00Z" and flipped[0]["status"] == "False"


def test_rotation_jitter_is_stable_bounded_and_spread() -> None:
    interval = dt.timedelta(days=90)
    jitters = [rotation_jitter(f"k{i:011d}", interval, 0.05) for i in range(1000)]
    assert jitters[0] == rotation_jitter("k00000000000", interval, 0.05)
    assert all(dt.timedelta(0) <= j < MAX_JITTER for j in jitters)
    seconds = {int(j.total_seconds()) for j in jitters}
    assert len(seconds) > 800, "a thousand keys spread over an hour: few share a second"
    short = rotation_jitter("k1", dt.timedelta(seconds=10), 0.05)
    assert short < dt.timedelta(seconds=0.5)


def test_scheduler_fires_each_object_once_at_its_earliest_time() -> None:
    fired: list[tuple[str, float]] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def callback(ref: ObjectRef) -> None:
            fired.append((ref.name, loop.time() - start))

        scheduler = Scheduler(callback)
        runner = asyncio.create_task(scheduler.run())
        now = dt.datetime.now(dt.UTC)
        a, b = ObjectRef("ns", "a", "uid-a"), ObjectRef("ns", "b", "uid-b")
        scheduler.schedule(a, now + dt.timedelta(seconds=0.3))
        scheduler.schedule(a, now + dt.timedelta(seconds=0.1))  # earlier replaces later
        scheduler.schedule(a, now + dt.timedelta(seconds=0.5))  # later is ignored
        scheduler.schedule(b, now + dt.timedelta(seconds=0.2))
        scheduler.schedule(ObjectRef("ns", "c", "uid-c"), now + dt.timedelta(seconds=0.2))
        scheduler.cancel("uid-c")
        await asyncio.sleep(0.7)
        runner.cancel()

    asyncio.run(scenario())
    assert [name for name, _ in fired] == ["a", "b"]
    assert 0.05 < fired[0][1] < 0.25
