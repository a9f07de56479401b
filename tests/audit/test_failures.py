"""The verifier's failure tally on its own: one record per (minute, key, reason), counts and
clients, finished minutes only, a bounded client list."""

from __future__ import annotations

from dataclasses import dataclass

from pmkeys.audit.failures import MAX_CLIENTS, FailureTally


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
    tally.add("revoked", "gw|10.0.0.1", Key())  # the next minute
    records = {(e.key_id, e.reason): e for e in tally.drain()}
    assert set(records) == {("k1", "revoked"), ("", "unknown")}
    revoked = records["k1", "revoked"]
    assert revoked.details["count"] == 3 and revoked.details["clients"] == {"gw|10.0.0.1": 2, "gw|10.0.0.2": 1}
    assert (revoked.tenant, revoked.name) == ("acme", "checkout")
    assert revoked.details["minute_start"] == "2027-01-15T08:00:00Z"
    assert records["", "unknown"].tenant == ""
    (later,) = tally.drain(everything=True)
    assert later.details["count"] == 1


def test_the_client_list_is_bounded_but_the_count_is_not() -> None:
    tally = FailureTally(clock=Clock())
    for n in range(MAX_CLIENTS + 30):
        tally.add("unknown", f"gw|10.0.{n}.1")
    (record,) = tally.drain(everything=True)
    assert record.details["count"] == MAX_CLIENTS + 30
    assert len(record.details["clients"]) == MAX_CLIENTS and record.details["clients_truncated"] is True
