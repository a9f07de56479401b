"""Wake objects when something falls due: a rotation, the end of a grace period, an expiry.

One heap and one task for the whole operator instead of a timer per object: with thousands of
keys and nothing due, the operator sleeps (no per-object polling). Each object has at most one
pending wake-up; scheduling an earlier one replaces it, a later one is ignored until the
earlier has fired (the reconcile that follows schedules the next).

Scheduled rotations get a deterministic jitter per key, so a thousand keys created together do
not hit Vault in the same second, and a restart does not reshuffle anyone's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import heapq
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

#: Jitter never exceeds this, however long the interval.
MAX_JITTER = dt.timedelta(hours=1)


def rotation_jitter(key_id: str, interval: dt.timedelta, fraction: float) -> dt.timedelta:
    """A stable delay in ``[0, min(interval * fraction, 1h))`` derived from the key id."""
    spread = min(interval * fraction, MAX_JITTER)
    unit = int.from_bytes(hashlib.sha256(key_id.encode()).digest()[:8], "big") / 2**64
    return spread * unit


@dataclass(frozen=True, order=True)
class ObjectRef:
    namespace: str
    name: str
    uid: str


@dataclass(order=True)
class _Wake:
    at: float
    ref: ObjectRef = field(compare=False)


Callback = Callable[[ObjectRef], Awaitable[None]]


class Scheduler:
    def __init__(self, callback: Callback, *, concurrency: int = 16) -> None:
        self._callback = callback
        self._heap: list[_Wake] = []
        self._due: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, ref: ObjectRef, when: dt.datetime) -> None:
        at = when.timestamp()
        current = self._due.get(ref.uid)
        if current is not None and current <= at:
            return
        self._due[ref.uid] = at
        heapq.heappush(self._heap, _Wake(at, ref))
        self._changed.set()

    def cancel(self, uid: str) -> None:
        self._due.pop(uid, None)

    async def run(self) -> None:
        while True:
            self._changed.clear()
            self._fire_due(_wall())
            timeout = max(0.0, self._heap[0].at - _wall()) if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=timeout)

    def _fire_due(self, now: float) -> None:
        while self._heap and self._heap[0].at <= now:
            wake = heapq.heappop(self._heap)
            if self._due.get(wake.ref.uid) != wake.at:
                continue  # superseded or cancelled
            del self._due[wake.ref.uid]
            task = asyncio.create_task(self._run_one(wake.ref))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_one(self, ref: ObjectRef) -> None:
        async with self._slots:
            try:
                await self._callback(ref)
            except Exception:
                logger.exception("scheduled reconcile of %s/%s failed", ref.namespace, ref.name)


def _wall() -> float:
    return dt.datetime.now(dt.UTC).timestamp()
