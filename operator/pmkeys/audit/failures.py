"""Failed verifications, aggregated per key per minute, off the hot path.

A failed verification is a security fact an auditor asks for (someone tried a revoked key,
a key without the scope, a guessed key), but writing one record per failure would put a
database round trip on the verifier's hot path and let an attacker flood the trail. So the
verifier's failure path only calls :meth:`FailureTally.add`, and a background task
(:meth:`FailureRecorder.run`) writes one record per (minute, key, reason) with the count and up
to :data:`MAX_CLIENTS` client addresses. Unknown keys (no record matched) are tallied under an
empty key id, per minute and reason, with no tenant.

What the hot path pays, and why it is this shape (``bench/audit.py`` measures it against the
verifier's whole failure path, bar 5 %):

* one counter per *(reason, client, key id)* in a plain dict of the current minute: build a
  3-tuple, one dict lookup, one integer increment in a 2-item list. No clock read: the minute
  a failure belongs to is the dict it landed in, and the background task starts a new dict at
  each minute boundary (:meth:`FailureTally.roll`). A failure in the event loop's lag after a
  boundary (milliseconds) is counted in the minute before.
* everything per record — summing a key's clients, capping them at :data:`MAX_CLIENTS`, the
  timestamps, the JSON — happens once per minute in :meth:`FailureTally.drain`, per distinct
  slot, not per failure. A flood of one guessed key from one address costs one slot.

Memory is bounded whatever arrives: at most :data:`MAX_SLOTS` distinct (reason, client, key)
per minute; past that a failure is still counted, without its client, per (reason, key id) in
at most :data:`MAX_OVERFLOW` slots, and past that it is only counted as dropped. The dropped
count is written as a record of its own (reason :data:`DROPPED_REASON`), so a count is exact
unless both bounds were hit, and the trail says when they were (``count_exact``). Finished
minutes wait for the writer at most :data:`MAX_HELD_MINUTES`, whatever the flush period.

Records of minutes not yet written are written when the verifier stops (``Verifier.close``
cancels :meth:`FailureRecorder.run`, which writes everything tallied, the current minute too);
a verifier that is killed loses at most the minutes it had not written (one flush period).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pmkeys.audit.lifecycle import audit_log
from pmkeys.audit.records import Action, Actor, AuditEvent, Outcome
from pmkeys.audit.store import AuditLog
from pmkeys.config import AuditSettings
from pmkeys.tasks import cancel_requested
from pmkeys.tenantapikey import TIME_FORMAT

logger = logging.getLogger(__name__)

MAX_CLIENTS = 20
#: Distinct (reason, client, key) counted with their client in one minute.
MAX_SLOTS = 10_000
#: Distinct (reason, key) counted without a client once MAX_SLOTS is reached.
MAX_OVERFLOW = 10_000
DROPPED_REASON = "not_tallied"
#: Finished minutes held before they are written whatever ``every_seconds`` says.
MAX_HELD_MINUTES = 5
MINUTE = 60


class KeyFacts(Protocol):
    """What the verifier's cache entry tells about a key (no key material)."""

    key_id: str
    tenant: str
    namespace: str
    name: str


#: (reason, client, key id) → [count, the key's facts or None]
_Slots = dict[tuple[str, str | None, str], list[Any]]


@dataclass(slots=True)
class _Minute:
    """What one minute tallied."""

    start: int
    slots: _Slots = field(default_factory=dict)
    #: (reason, key id) → [count, facts]: failures counted after ``slots`` was full.
    overflow: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    dropped: int = 0


@dataclass(slots=True)
class _Group:
    """One record being assembled: a key's failures for one reason in one minute."""

    facts: KeyFacts | None
    count: int = 0
    clients: dict[str, int] = field(default_factory=dict)
    truncated: bool = False
    exact: bool = True

    def add(self, client: str | None, count: int) -> None:
        self.count += count
        name = client or ""
        clients = self.clients
        if name in clients:
            clients[name] += count
        elif len(clients) < MAX_CLIENTS:
            clients[name] = count
        else:
            self.truncated = True


class FailureTally:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._minute = _Minute(self._now())
        self._slots = self._minute.slots
        self._finished: list[_Minute] = []

    def add(self, reason: str, client: str | None, key: KeyFacts | None = None) -> None:
        """One failure; ``key`` is the key's cached facts when the presented key was found.
        On the verifier's failure path: one tuple, one dict lookup, one increment."""
        slot = (reason, client, key.key_id if key is not None else "")
        cell = self._slots.get(slot)
        if cell is not None:
            cell[0] += 1
        elif len(self._slots) < MAX_SLOTS:
            self._slots[slot] = [1, key]
        else:
            self._overflowed(slot[0], slot[2], key)

    def _overflowed(self, reason: str, key_id: str, key: KeyFacts | None) -> None:
        minute = self._minute
        cell = minute.overflow.get((reason, key_id))
        if cell is not None:
            cell[0] += 1
        elif len(minute.overflow) < MAX_OVERFLOW:
            minute.overflow[(reason, key_id)] = [1, key]
        else:
            minute.dropped += 1

    def roll(self) -> None:
        """Start a new minute if the clock says the current one has ended (the background
        task calls this at every minute boundary)."""
        now = self._now()
        if now != self._minute.start:
            self._finished.append(self._minute)
            self._minute = _Minute(now)
            self._slots = self._minute.slots

    @property
    def held_minutes(self) -> int:
        """Finished minutes not drained yet."""
        return len(self._finished)

    def seconds_to_next_minute(self) -> float:
        return MINUTE - self.clock() % MINUTE

    def drain(self, *, everything: bool = False) -> list[AuditEvent]:
        """Records for every finished minute (and the current one when ``everything``)."""
        self.roll()
        minutes, self._finished = self._finished, []
        if everything:
            minutes.append(self._minute)
            self._minute = _Minute(self._now())
            self._slots = self._minute.slots
        return [event for minute in minutes for event in _events(minute)]

    def _now(self) -> int:
        return int(self.clock() // MINUTE) * MINUTE


def _events(minute: _Minute) -> list[AuditEvent]:
    groups: dict[tuple[str, str], _Group] = {}
    for (reason, client, key_id), (count, facts) in minute.slots.items():
        group = groups.get((reason, key_id))
        if group is None:
            group = groups[(reason, key_id)] = _Group(facts)
        group.add(client, count)
    for (reason, key_id), (count, facts) in minute.overflow.items():
        group = groups.get((reason, key_id))
        if group is None:
            group = groups[(reason, key_id)] = _Group(facts)
        group.count += count
        group.truncated = True
    if minute.dropped:  # some of these keys' failures are only in the dropped count
        for slot, group in groups.items():
            if slot not in minute.overflow:
                group.exact, group.truncated = False, True
    events = [_event(minute.start, reason, key_id, group) for (reason, key_id), group in groups.items()]
    if minute.dropped:
        events.append(_dropped(minute.start, minute.dropped))
    return events


def _minute_start(start: int) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(start))


def _event(start: int, reason: str, key_id: str, group: _Group) -> AuditEvent:
    facts = group.facts
    return AuditEvent(
        action=Action.VERIFY_FAILED,
        outcome=Outcome.DENIED,
        actor=Actor(username=""),
        tenant=facts.tenant if facts else "",
        namespace=facts.namespace if facts else "",
        name=facts.name if facts else "",
        key_id=key_id,
        reason=str(reason),
        source_address=",".join(sorted(group.clients)),
        details={
            "count": group.count,
            "minute_start": _minute_start(start),
            "clients": dict(sorted(group.clients.items())),
            "clients_truncated": group.truncated,
            #: False when the tally was full and some of this key's failures are only in the
            #: minute's dropped count (reason DROPPED_REASON).
            "count_exact": group.exact,
        },
    )


def _dropped(start: int, count: int) -> AuditEvent:
    return AuditEvent(
        action=Action.VERIFY_FAILED,
        outcome=Outcome.DENIED,
        actor=Actor(username=""),
        reason=DROPPED_REASON,
        details={
            "count": count,
            "minute_start": _minute_start(start),
            "note": f"failures past the tally's bounds ({MAX_SLOTS} key/reason/client and {MAX_OVERFLOW} "
            "key/reason slots a minute): counted here, not attributed to a key",
        },
    )


class FailureRecorder:
    """The tally and the writer together: what the verifier holds."""

    def __init__(self, log: AuditLog, *, every_seconds: float = MINUTE) -> None:
        self.log = log
        self.tally = FailureTally()
        self.every_seconds = every_seconds

    def add(self, reason: str, client: str | None, key: KeyFacts | None = None) -> None:
        self.tally.add(reason, client, key)

    async def run(self) -> None:
        """Start each minute's tally on its boundary and write finished minutes every
        ``every_seconds``; when cancelled (``Verifier.close``), write everything tallied, the
        current minute too, and close the connection."""
        loop = asyncio.get_running_loop()
        next_write = loop.time() + self.every_seconds
        try:
            while not cancel_requested():  # a cancel swallowed below still ends the loop
                wait = min(self.tally.seconds_to_next_minute(), next_write - loop.time())
                await asyncio.sleep(max(wait, 0.0) + 0.001)
                self.tally.roll()
                if loop.time() >= next_write or self.tally.held_minutes >= MAX_HELD_MINUTES:
                    next_write = loop.time() + self.every_seconds
                    await self.flush()
        finally:  # cancelled, or the loop saw a cancel swallowed below it
            await self.close()

    async def flush(self, *, everything: bool = False) -> int:
        events = self.tally.drain(everything=everything)
        if events:
            await asyncio.to_thread(self._write, events)
        return len(events)

    async def close(self) -> None:
        """Write what is tallied, the current minute too, and close the connection."""
        try:
            await self.flush(everything=True)
        except Exception:  # shutting down: report, do not raise
            logger.exception("final audit flush of failed verifications failed")
        self.log.close()

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> FailureRecorder | None:
        log = audit_log(settings, component="verifier")
        return cls(log, every_seconds=settings.failures_flush_seconds) if log else None

    def _write(self, events: list[AuditEvent]) -> None:
        for event in events:
            self.log.record(event)


class _NoTally:
    """What the verifier tallies into when no audit store is configured: nothing."""

    def add(self, reason: str, client: str | None, key: KeyFacts | None = None) -> None:
        return None


NO_TALLY: FailureTally | _NoTally = _NoTally()
