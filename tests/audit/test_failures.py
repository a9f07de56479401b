"""The verifier's failure tally on its own: one record per (minute, key, reason), counts and
clients, finished minutes only, a bounded client list, bounded memory under a flood with what
it could not attribute counted and recorded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from pmkeys.audit import failures
from pmkeys.audit.failures import DROPPED_REASON, MAX_CLIENTS, FailureRecorder, FailureTally
from pmkeys.audit.records import AuditEvent


@dataclass
class Clock:
    now: float = 1_800_000_000.0  # a minute boundary

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Key:
    key_id: str = "k1"
    tenant: str = "acme"
    namespace: str = "acme"
    name: str = "checkout"


def test_failures_are_written_per_key_reason_and_finished_minute() -> None:
    clock = Clock()
    tally = FailureTally(clock=clock)
    tally.add("revoked", "gw|10.0.0.1", Key())
    tally.add("revoked", "gw|10.0.0.1", Key())
    tally.add("revoked", "gw|10.0.0.2", Key())
    tally.add("unknown", "gw|10.0.0.9")
    assert tally.drain() == [], "the minute is not over yet"
    clock.now += 61
    tally.roll()  # the background task, at the boundary
    tally.add("revoked", "gw|10.0.0.1", Key())  # the next minute
    records = {(e.key_id, e.reason): e for e in tally.drain()}
    assert set(records) == {("k1", "revoked"), ("", "unknown")}
    revoked = records["k1", "revoked"]
    assert revoked.details["count"] == 3 and revoked.details["clients"] == {"gw|10.0.0.1": 2, "gw|10.0.0.2": 1}
    assert (revoked.tenant, revoked.name) == ("acme", "checkout")
    assert revoked.details["minute_start"] == "2027-01-15T08:00:00Z"
    assert revoked.details["clients_truncated"] is False and revoked.details["count_exact"] is True
    assert records["", "unknown"].tenant == ""
    (later,) = tally.drain(everything=True)
    assert later.details["count"] == 1 and later.details["minute_start"] == "2027-01-15T08:01:00Z"


def test_a_late_roll_keeps_each_minute_apart() -> None:
    """Minutes the task missed (a stalled loop) are one record, labelled with the minute the
    tally started in; the next minute is a record of its own."""
    clock = Clock()
    tally = FailureTally(clock=clock)
    tally.add("unknown", "a")
    clock.now += 150
    tally.add("unknown", "a")  # the loop was stalled: still the first tally
    tally.roll()
    tally.add("unknown", "a")
    first, second = tally.drain(everything=True)
    assert (first.details["minute_start"], first.details["count"]) == ("2027-01-15T08:00:00Z", 2)
    assert (second.details["minute_start"], second.details["count"]) == ("2027-01-15T08:02:00Z", 1)


def test_the_client_list_is_bounded_but_the_count_is_not() -> None:
    tally = FailureTally(clock=Clock())
    for n in range(MAX_CLIENTS + 30):
        tally.add("unknown", f"gw|10.0.{n}.1")
        tally.add("unknown", f"gw|10.0.{n}.1")
    (record,) = tally.drain(everything=True)
    assert record.details["count"] == 2 * (MAX_CLIENTS + 30)
    assert len(record.details["clients"]) == MAX_CLIENTS and record.details["clients_truncated"] is True
    assert set(record.details["clients"].values()) == {2}


def test_a_flood_of_distinct_clients_is_bounded_and_still_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attacker with many addresses: slots stop at MAX_SLOTS, then per-key overflow counts
    without clients, then a dropped count; every failure is in some record's count."""
    monkeypatch.setattr(failures, "MAX_SLOTS", 50)
    monkeypatch.setattr(failures, "MAX_OVERFLOW", 3)
    tally = FailureTally(clock=Clock())
    keys = [Key(key_id=f"k{n}") for n in range(6)]
    for n in range(1000):
        tally.add("revoked", f"10.{n}", keys[n % len(keys)])
    minute = tally._minute
    assert len(minute.slots) == 50 and len(minute.overflow) == 3, "memory is bounded"
    records = tally.drain(everything=True)
    assert sum(r.details["count"] for r in records) == 1000, "every failure is counted somewhere"
    (dropped,) = [r for r in records if r.reason == DROPPED_REASON]
    assert dropped.key_id == "" and dropped.tenant == ""
    by_key = {r.key_id: r for r in records if r.reason == "revoked"}
    assert all(r.details["clients_truncated"] for r in by_key.values())
    # Keys that got an overflow slot are counted exactly; the others lost what came after.
    overflowed = {key_id for _, key_id in minute.overflow}
    assert overflowed == {"k2", "k3", "k4"}  # the first keys seen once the slots were full
    assert {k for k, r in by_key.items() if r.details["count_exact"]} == overflowed
    for key_id in overflowed:
        assert by_key[key_id].details["count"] == sum(1 for n in range(1000) if f"k{n % 6}" == key_id)
    assert dropped.details["count"] == sum(1 for n in range(50, 1000) if f"k{n % 6}" not in overflowed)


class Log:
    """The AuditLog's one call the recorder makes, kept in memory."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.closed = False

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed = True


async def test_a_clean_stop_writes_the_current_minute() -> None:
    log = Log()
    recorder = FailureRecorder(log, every_seconds=3600)  # type: ignore[arg-type]
    task = asyncio.create_task(recorder.run())
    for _ in range(5):
        recorder.add("unknown", "gw|192.0.2.1")
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record,) = log.events
    assert record.details["count"] == 5 and log.closed
