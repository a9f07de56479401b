"""Usage (``requests``, ``errors``, ``lastUsedAt``) counted on the hot path, flushed in batches
to the usage ledgers and, within a write budget, to ``status.usage``.

What is counted, per TenantApiKey (a rotation's old and new keys add to the same numbers):
every request that presented one of its usable keys is a *request*; those refused for a missing
scope or the rate limit, and those the API reports as failed (``POST /v1/keys/{id}/errors``),
are also *errors*. ``lastUsedAt`` is the last such request. Keys that are malformed, unknown,
revoked or expired belong to no usable object and count nowhere (metrics see them).

The hot path only adds to an in-memory :class:`Tally`. Every ``usage_flush_seconds``:

* with Redis, each replica adds its deltas to shared pending counters
  (:mod:`~pmkeys.verify.usage_redis`), and the replica holding the usage lock takes them and
  adds them to the ledgers (:mod:`~pmkeys.verify.usage_ledgers`): at most one write per shard
  per interval, however many keys and replicas. A verifier that dies loses at most one interval
  of its own counts. If Redis is down, replicas write their own deltas to the ledgers;
* without Redis, each replica adds its own deltas to the ledgers (guarded by
  ``resourceVersion``, so replicas sum without double-counting);
* the writer then copies changed ledger entries to ``status.usage``, at most
  ``usage_status_writes_per_second`` times the interval objects, oldest copy first
  (:mod:`~pmkeys.verify.usage_status`), and then the tenant-wide limit's current use into the
  plans of the tenants that had requests, within its own budget (:mod:`~pmkeys.verify.tenant_use`).

Only objects that saw traffic are written. A write that fails (API server down) keeps the deltas
to be retried next interval; an object that is gone (or was recreated: another uid) drops them.
On shutdown the verifier flushes once more.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from pmkeys.tasks import cancel_requested
from pmkeys.verify.ratelimit import REDIS_DOWN

if TYPE_CHECKING:
    from pmkeys.verify.tenant_use import TenantUseStatus
    from pmkeys.verify.usage_ledgers import Ledgers, Totals
    from pmkeys.verify.usage_redis import SharedUsage
    from pmkeys.verify.usage_status import Mirror, ObjectStatus

logger = logging.getLogger(__name__)
#: What an unreachable or failing API server looks like from here.
KUBE_DOWN = (ApiException, OSError, urllib3.exceptions.HTTPError)


@dataclass(slots=True)
class Tally:
    namespace: str
    name: str
    requests: int = 0
    errors: int = 0
    #: Epoch seconds of the last request (0: none in this tally).
    last_used: float = 0.0

    def merge(self, other: Tally) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.last_used = max(self.last_used, other.last_used)


class UsageCounter:
    """Pending usage deltas of this process, ``uid → Tally``."""

    def __init__(self) -> None:
        self._pending: dict[str, Tally] = {}

    def tally(self, uid: str, namespace: str, name: str) -> Tally:
        found = self._pending.get(uid)
        if found is None:
            found = self._pending[uid] = Tally(namespace, name)
        return found

    def take(self) -> dict[str, Tally]:
        taken, self._pending = self._pending, {}
        return taken

    def restore(self, tallies: dict[str, Tally]) -> None:
        for uid, tally in tallies.items():
            self.tally(uid, tally.namespace, tally.name).merge(tally)

    def __len__(self) -> int:
        return len(self._pending)


class UsageFlusher:
    """Every ``interval``: pending usage to the ledgers, then changed entries to status."""

    def __init__(
        self,
        counter: UsageCounter,
        ledgers: Ledgers,
        status: ObjectStatus,
        mirror: Mirror,
        *,
        interval: float,
        shared: SharedUsage | None = None,
        tenant_use: TenantUseStatus | None = None,
        concurrency: int = 8,
    ) -> None:
        self.counter = counter
        self.ledgers = ledgers
        self.status = status
        self.mirror = mirror
        self.interval = interval
        self.shared = shared
        self.tenant_use = tenant_use
        self._limit = asyncio.Semaphore(concurrency)
        #: Copies have their own permits, so a slow round of them never queues the ledger writes.
        self._copy_limit = asyncio.Semaphore(concurrency)
        self.flushes = 0
        self.failures = 0
        self._copying: asyncio.Future[None] | None = None

    @property
    def objects_written(self) -> int:
        """``status.usage`` writes so far."""
        return self.status.writes

    @property
    def ledger_writes(self) -> int:
        return self.ledgers.writes

    async def run(self) -> None:
        while not cancel_requested():
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # the loop must survive anything; the counts stay pending
                logger.exception("usage flush failed")

    async def flush(self) -> None:
        local = self.counter.take()
        shared = self.shared
        writer = True
        if shared is not None and shared.health.should_try():
            try:
                await shared.push(self.ledgers.group(local))
                local = {}
                writer = await shared.lock(3 * self.interval)
                if writer:
                    unwritten = await self._record(await shared.take(self.ledgers.shards))
                    await self._push_back(shared, unwritten)
                shared.health.succeeded()
            except REDIS_DOWN as exc:
                shared.health.failed(exc, what="writing usage to the ledgers directly")
                writer = True
        self.counter.restore(await self._record(self.ledgers.group(local)))
        if self.tenant_use is not None:
            await self.tenant_use.share()
        if writer:
            self._start_copying()
        self.flushes += 1

    def _start_copying(self) -> None:
        """Copy to status beside the ledger flushes, never in their way: a round of copies (up to
        the budget, each a read and a patch) can take longer than an interval on a busy API
        server, and the ledgers must still be written every interval. One round at a time."""
        if self._copying is None or self._copying.done():
            self._copying = asyncio.ensure_future(self._copy_to_status())

    async def finish_copying(self) -> None:
        """Wait for the round of status copies under way (shutting down)."""
        if self._copying is not None:
            await asyncio.gather(self._copying, return_exceptions=True)

    async def _push_back(self, shared: SharedUsage, unwritten: dict[str, Tally]) -> None:
        try:
            await shared.push(self.ledgers.group(unwritten))
        except REDIS_DOWN:
            self.counter.restore(unwritten)
            raise

    async def _record(self, grouped: dict[int, dict[str, Tally]]) -> dict[str, Tally]:
        """Add every shard's tallies to its ledger; returns the tallies that could not be written."""
        failed: dict[str, Tally] = {}
        seed = partial(self.status.seed, listed={})  # each namespace listed once per flush at most

        async def one(shard: int, tallies: dict[str, Tally]) -> None:
            async with self._limit:
                try:
                    await self.ledgers.add(shard, tallies, seed)
                except KUBE_DOWN as exc:
                    self.failures += 1
                    failed.update(tallies)
                    logger.warning("could not write usage ledger %d: %s", shard, _reason(exc))

        await asyncio.gather(*(one(shard, t) for shard, t in grouped.items() if t))
        return failed

    async def _copy_to_status(self) -> None:
        async def one(uid: str, totals: Totals) -> None:
            async with self._copy_limit:
                try:
                    if not await self.status.publish(uid, totals):
                        self.ledgers.forget(uid)
                except KUBE_DOWN as exc:
                    self.failures += 1
                    self.mirror.forget(uid)
                    logger.info(
                        "usage of %s/%s not copied to status yet: %s", totals.namespace, totals.name, _reason(exc)
                    )
                    return
                self.mirror.copied(uid, totals)

        await asyncio.gather(*(one(uid, totals) for uid, totals in self.mirror.due(self.ledgers.books)))
        if self.tenant_use is not None:
            await self.tenant_use.report()

    def close(self) -> None:
        if self._copying is not None:
            self._copying.cancel()
        self.ledgers.close()
        self.status.close()
        if self.tenant_use is not None:
            self.tenant_use.close()


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or type(exc).__name__)
