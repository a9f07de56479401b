"""Who may write: one operator at a time, also across a pause of the active one.

kopf peering picks the active operator (the live peer with the highest priority) and pauses the
others' watches. That is not enough to promise a single writer:

* our own background work — the rotation scheduler, the retention sweep — runs whether kopf is
  paused or not, so a standby would revoke orphans and rotate keys next to the active one;
* a paused process (``SIGSTOP``, a long GC or VM pause, a network partition) that resumes after
  the standby took over carries on with the reconcile it was in the middle of, and kopf only
  pauses the resumed (higher-priority) one's rival after the next peering event.

So every write of key material — Secrets, status, Events, Vault records, the owner index,
retention — first asks :meth:`Leadership.check`, a local test of two monotonic durations:

``last_top``
    when this process last *sent* a read of the peering object whose answer showed it alive (its
    ``lastseen`` + ``lifetime`` - ``SKEW_MARGIN`` not passed) with no other live peer of equal or
    higher priority. Writing stops ``FRESH`` seconds after that read was sent: a process that
    cannot read the object (partitioned), or was paused, stops writing by itself.
``since``
    when the current run of such reads began. Writing starts only ``FRESH`` seconds after it
    (the handover wait): by then the previous writer's own ``FRESH`` has run out, because it
    could not have read itself on top after the read that showed us on top. A gap of more than
    ``FRESH`` between reads (a pause) starts a new run, so a resumed process waits again.

Reads are sent every ``POLL`` seconds; each is a quorum read, so the two processes' views are
ordered by the API server. As in kopf, clocks must agree: liveness compares a peer's
``lastseen`` with the local wall clock; ``SKEW_MARGIN`` absorbs that much skew. What remains —
a process paused between a check and the request it guards — is what the stores' own fences
catch: Vault writes use check-and-set, Secret creates fail on conflict.

Takeover after the active operator dies: its entry expires ``lifetime`` seconds after its last
keep-alive (kopf touches it every ``lifetime`` - 5…10 s), then one ``POLL`` and ``FRESH`` — with
the default ``lifetime`` of 15 s, between about 11 and 21 seconds (``SKEW_MARGIN`` must stay below
the 5 s kopf leaves between a keep-alive and the lifetime, or a healthy writer would stop). Work refused while not the
writer is remembered and redone when this process becomes the writer (:attr:`on_gained`).
Standalone operators (no peering) always write.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

POLL = 1.0
FRESH = 5.0
SKEW_MARGIN = 2.0


class NotLeader(Exception):
    """This process may not write now: another operator is (or may still be) the writer."""


def own_identity() -> str:
    """A peering identity unique to this process (pod name when set, as kopf does)."""
    where = os.environ.get("POD_ID") or socket.gethostname()
    return f"{where}/{os.getpid()}/{secrets.token_hex(3)}"


def on_top(status: dict[str, Any] | None, *, identity: str, priority: int, now: dt.datetime) -> bool:
    """Whether the peering status shows us alive and no other live peer at our priority or above."""
    peers = status or {}
    mine = peers.get(identity)
    if not isinstance(mine, dict) or _deadline(mine) - dt.timedelta(seconds=SKEW_MARGIN) <= now:
        return False
    for other, info in peers.items():
        if other == identity or not isinstance(info, dict):
            continue
        if _deadline(info) > now and int(info.get("priority", 0)) >= priority:
            return False
    return True


def _deadline(info: dict[str, Any]) -> dt.datetime:
    try:
        seen = dt.datetime.fromisoformat(str(info["lastseen"]))
    except (KeyError, ValueError):
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=dt.UTC)
    return seen + dt.timedelta(seconds=int(info.get("lifetime", 60)))


class Leadership:
    def __init__(
        self,
        *,
        identity: str,
        priority: int,
        read: Callable[[], Awaitable[list[dict[str, Any] | None]]] | None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        journal: str = "",
    ) -> None:
        self.identity = identity
        self.priority = priority
        self._read = read
        self._clock = clock
        self._wall = wall
        self._since: float | None = None
        self._last_top: float | None = None
        #: Counts the runs of on-top reads (terms); journalled with every write.
        self.term = 0
        self._was_writer = False
        self._journal = Path(journal) if journal else None
        #: Called (on the event loop) when this process becomes the writer.
        self.on_gained: Callable[[], None] = lambda: None
        self.refused = 0

    @classmethod
    def standalone(cls, *, journal: str = "") -> Leadership:
        return cls(identity="standalone", priority=0, read=None, journal=journal)

    @property
    def peered(self) -> bool:
        return self._read is not None

    def observe(self, statuses: list[dict[str, Any] | None], *, sent: float) -> None:
        """Take in one read of the peering objects' status (one cluster-wide object, or one per
        watched namespace: we must be on top in each), sent at monotonic ``sent``."""
        now = self._wall()
        tops = [on_top(s, identity=self.identity, priority=self.priority, now=now) for s in statuses]
        if not tops or not all(tops):
            self._since = self._last_top = None
            return
        if self._since is None or self._last_top is None or sent - self._last_top > FRESH:
            self._since = sent
            self.term += 1
        self._last_top = sent

    def may_write(self) -> bool:
        if self._read is None:
            return True
        now = self._clock()
        if self._since is None or self._last_top is None:
            return False
        return now - self._last_top < FRESH and now - self._since >= FRESH

    def check(self, what: str) -> None:
        """Raise :class:`NotLeader` unless this process may write now; ``what`` names the write."""
        if not self.may_write():
            self.refused += 1
            raise NotLeader(f"not the active operator; {what} left to the one that is")
        if self._journal is not None:
            with self._journal.open("a") as journal:
                journal.write(f"{time.time_ns()} {self.identity} {self.term} {what}\n")

    async def run(self) -> None:
        """Read the peering object every ``POLL`` seconds and track whether we are the writer."""
        if self._read is None:
            return
        while True:
            sent = self._clock()
            try:
                self.observe(await self._read(), sent=sent)
            except Exception as exc:  # cannot read: the FRESH window runs out by itself
                logger.warning("could not read the peering object: %s", type(exc).__name__)
            self._announce()
            await asyncio.sleep(POLL)

    def _announce(self) -> None:
        writer = self.may_write()
        if writer and not self._was_writer:
            logger.info("this operator (%s) is now the active writer", self.identity)
            self._was_writer = True
            self.on_gained()
        elif not writer and self._was_writer:
            logger.info("this operator (%s) stopped writing: another operator is active", self.identity)
            self._was_writer = False
