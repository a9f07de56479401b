"""One writer at a time, pure: the fence's reading of kopf's peering status, with fake clocks."""

from __future__ import annotations

import datetime as dt

import pytest

from pmkeys.reconcile.leadership import FRESH, Leadership, NotLeader, on_top

T0 = dt.datetime(2026, 12, 1, 19, 0, tzinfo=dt.UTC)


class Clocks:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = T0

    def tick(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += dt.timedelta(seconds=seconds)


def peer(clocks: Clocks, priority: int, *, age: float = 0.0, lifetime: int = 20) -> dict[str, object]:
    seen = clocks.wall - dt.timedelta(seconds=age)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def leader(clocks: Clocks, identity: str, priority: int) -> Leadership:
    async def never() -> list[dict[str, object] | None]:
        raise AssertionError("not read in these tests")

    return Leadership(
        identity=identity, priority=priority, read=never, clock=lambda: clocks.mono, wall=lambda: clocks.wall
    )


def test_standalone_always_writes() -> None:
    Leadership.standalone().check("anything")


def test_on_top_needs_us_alive_and_nobody_alive_at_or_above_our_priority() -> None:
    c = Clocks()
    assert on_top({"me": peer(c, 100), "b": peer(c, 50)}, identity="me", priority=100, now=c.wall)
    assert not on_top({"me": peer(c, 50), "b": peer(c, 100)}, identity="me", priority=50, now=c.wall)
    assert not on_top({"me": peer(c, 100), "b": peer(c, 100)}, identity="me", priority=100, now=c.wall), "a tie"
    assert on_top({"me": peer(c, 50), "b": peer(c, 100, age=21)}, identity="me", priority=50, now=c.wall), "b dead"
    assert not on_top({"b": peer(c, 10)}, identity="me", priority=100, now=c.wall), "we are not listed yet"
    assert not on_top({"me": peer(c, 100, age=19)}, identity="me", priority=100, now=c.wall), "about to expire"
    assert not on_top(None, identity="me", priority=100, now=c.wall)


def test_a_new_writer_waits_out_the_handover_then_writes_while_its_reads_are_fresh() -> None:
    c = Clocks()
    me = leader(c, "me", 100)
    for _ in range(int(FRESH)):
        me.observe([{"me": peer(c, 100)}], sent=c.mono)
        assert not me.may_write()
        c.tick(1)
    me.observe([{"me": peer(c, 100)}], sent=c.mono)
    assert me.may_write()
    c.tick(FRESH - 0.1)
    assert me.may_write(), "no read answered for a while, still within FRESH"
    c.tick(0.2)
    assert not me.may_write(), "no fresh read: stop by ourselves (partition)"
    with pytest.raises(NotLeader):
        me.check("a Secret")


def test_a_higher_priority_peer_stops_us_at_the_next_read() -> None:
    c = Clocks()
    me = leader(c, "me", 50)
    for _ in range(7):
        me.observe([{"me": peer(c, 50)}], sent=c.mono)
        c.tick(1)
    assert me.may_write()
    me.observe([{"me": peer(c, 50), "boss": peer(c, 100)}], sent=c.mono)
    assert not me.may_write()


@pytest.mark.parametrize("reads_first", [True, False], ids=["read-then-write", "write-then-read"])
def test_a_paused_writer_that_resumes_waits_again_and_the_standby_stops_before_it_writes(reads_first: bool) -> None:
    """SIGSTOP of the active operator, the standby takes over, SIGCONT: never two writers,
    whether the resumed process first reads the peering object or first tries a write."""
    c = Clocks()
    active, standby = leader(c, "a", 100), leader(c, "b", 50)
    lastseen = {"a": c.wall, "b": c.wall}

    def status() -> list[dict[str, object] | None]:
        return [
            {
                n: {"priority": p, "lifetime": 20, "lastseen": lastseen[n].isoformat()}
                for n, p in (("a", 100), ("b", 50))
            }
        ]

    def observe(paused: bool) -> None:
        if not paused:
            lastseen["a"] = c.wall
            active.observe(status(), sent=c.mono)
        lastseen["b"] = c.wall
        standby.observe(status(), sent=c.mono)

    writers: list[set[str]] = []
    for second in range(120):
        paused = 10 <= second < 60  # "a" is stopped: no keep-alive, no reads, no writes
        if reads_first:
            observe(paused)
        for _ in range(10):  # check the fence ten times a second
            now = {n for n, who in (("a", active), ("b", standby)) if who.may_write() and not (n == "a" and paused)}
            writers.append(now)
            c.tick(0.1)
        if not reads_first:
            observe(paused)
    assert all(len(w) <= 1 for w in writers), "never two writers"
    assert {"a"} in writers[:100] and {"b"} in writers[300:600] and {"a"} in writers[-100:]
