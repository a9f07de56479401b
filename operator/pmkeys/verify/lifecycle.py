"""The verifier's lifecycle: what starts and stops around the pipeline of
:mod:`pmkeys.verify.verifier`, and what tells the world it is ready.

Kept apart so the pipeline reads top to bottom without it: loading the peppers (retried in the
background while Vault is not there), the TenantApiKey and TenantPlan watches, the preload of
proven keys once both the pepper and the watch's first listing are in
(:mod:`~pmkeys.verify.preloading`), the seals handed over to the next replica
(:mod:`~pmkeys.verify.handover`), the re-reads of entries past their TTL behind the request path
(:mod:`~pmkeys.verify.refreshing`), the usage flusher, housekeeping (expired cache entries and
limiter state), and on the way out a last usage flush and closing every client.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from pmkeys.audit.failures import FailureRecorder
from pmkeys.keys.hashing import Hasher
from pmkeys.tasks import cancel_requested, stop
from pmkeys.vault.errors import VaultError
from pmkeys.vault.records import KeyRecord
from pmkeys.vault.store import KeyStore
from pmkeys.verify.cache import INVALIDATED, Entry, KeyCache
from pmkeys.verify.connections import Kubernetes, Redis
from pmkeys.verify.gcra import LocalLimiter
from pmkeys.verify.handover import FLUSH_SECONDS, RedisHandover, Sealed, age_if_fresh
from pmkeys.verify.limiting import Limits
from pmkeys.verify.objects import ObjectIndex
from pmkeys.verify.peppers import Peppers
from pmkeys.verify.plans import PlanBook, PlanWatch
from pmkeys.verify.possession import Possession
from pmkeys.verify.preloading import Preload
from pmkeys.verify.ratelimit import RedisHealth
from pmkeys.verify.refreshing import Refresher
from pmkeys.verify.staleness import VaultHealth
from pmkeys.verify.startup import StartupClock
from pmkeys.verify.usage import UsageCounter, UsageFlusher
from pmkeys.verify.watching import ObjectFacts, ObjectWatch

logger = logging.getLogger(__name__)
HOUSEKEEPING_SECONDS = 10.0
#: How often a verifier whose keys are all cached checks that Vault still answers.
VAULT_PROBE_SECONDS = 10.0


class Lifecycle:
    """Start, stop and readiness of a :class:`~pmkeys.verify.verifier.Verifier`."""

    if TYPE_CHECKING:  # set by the Verifier
        store: KeyStore
        hasher: Hasher
        watch: ObjectWatch | None
        plan_watch: PlanWatch | None
        plans: PlanBook
        flusher: UsageFlusher | None
        failures: FailureRecorder | None
        redis_health: RedisHealth | None
        _peppers: Peppers
        _kubernetes: Kubernetes | None
        _redis: Redis | None
        _tasks: list[asyncio.Task[None]]
        _cache: KeyCache
        _objects: ObjectIndex
        _limits: Limits
        _failures: LocalLimiter
        _ttl: float
        _usage: UsageCounter
        vault: VaultHealth
        preload: Preload
        possession: Possession
        refresher: Refresher
        startup: StartupClock

        def _revoked(self, record: KeyRecord) -> bool: ...

        def _remember(
            self, primary: str, record: KeyRecord, epoch: int, *, revoked: bool, behind: bool = False
        ) -> Entry: ...

        def object_changed(self, uid: str, facts: ObjectFacts | None) -> None: ...

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the watches and the preload, load the peppers (retrying in the background if
        Vault is not there yet), start the usage flusher and housekeeping."""
        self._spawn(self.startup.follow(self.readiness))
        if self._redis is not None:
            await self._redis.prepare()
        # The watches list first, in their threads: a listing of 10,000 objects takes seconds,
        # and so can a Vault login; neither needs the other, nor does fetching the preload's
        # seals and receipts from Redis.
        if self._kubernetes is not None and self._kubernetes.watch:
            self.watch = self._kubernetes.watcher(self.object_changed)
            self.watch.start()
            self.plan_watch = self._kubernetes.plan_watcher(self.plans)
            self.plan_watch.start()
        self._spawn(self._preload())
        if not await self._peppers.load():
            self._spawn(self._peppers.load_until_done())
        self._spawn(self.refresher.run(self._refresh))
        if self.handover is not None:
            self._spawn(self._handing_over(self.handover))
        if self.flusher is not None:
            self._spawn(self.flusher.run())
        if self.failures is not None:
            # Failed verifications to the audit trail; cancelled by close, it writes what is left.
            self._spawn(self.failures.run())
        self._spawn(self._housekeeping())
        self._spawn(self._probe_vault())

    async def close(self) -> None:
        """Stop background work and flush pending usage once more."""
        if self.watch is not None:
            self.watch.stop()
        if self.plan_watch is not None:
            self.plan_watch.stop()
        await stop(self._tasks)  # bounded: a task that swallows its cancel is left behind
        self._tasks.clear()
        if self.handover is not None:
            with contextlib.suppress(Exception):
                await self.handover.flush()
        if self.flusher is not None:
            try:
                await self.flusher.flush()
                await asyncio.wait_for(self.flusher.finish_copying(), timeout=10)
            except Exception:  # shutting down: report, do not raise
                logger.exception("final usage flush failed")
            self.flusher.close()
        if self._redis is not None:
            await self._redis.client.aclose()
        self.store.session.close()
        self.hasher.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    async def _housekeeping(self) -> None:
        while not cancel_requested():
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            now = time.monotonic_ns() // 1000
            self._cache.sweep(now)
            self._limits.local.prune(now)
            self._failures.prune(now)

    @property
    def handover(self) -> RedisHandover | None:
        """Where this replica leaves the records it read for the next one (None: no Redis)."""
        return self._redis.handover if self._redis is not None else None

    async def _handing_over(self, handover: RedisHandover) -> None:
        while not cancel_requested():
            await asyncio.sleep(FLUSH_SECONDS)
            await handover.flush()

    def _hand_over(self, digest: str, record: KeyRecord, epoch: int) -> None:
        """Seal ``record`` (just read from Vault, its key proven, cached under ``digest``) for the
        next replica, with the fingerprint of its object as the watch knows it — if the watch has
        listed its namespace and saw no change of the object since ``epoch`` (before the read)."""
        handover, peppers = self.handover, self._peppers.all
        if handover is None or not peppers or not self._listed(record.namespace):
            return
        facts = self._objects.facts(record.uid)
        if facts is None or facts.revoked or not self._cache.unchanged_since(record.uid, epoch):
            return
        handover.offer(digest, peppers[0], Sealed(record, facts.fingerprint, time.time()))

    def _adopt(self, digest: str, sealed: Sealed) -> bool:
        """Cache a record another replica handed over, if it is still what that replica saw: its
        object's fingerprint unchanged, and no older than that replica would answer from (its
        :attr:`~pmkeys.verify.cache.KeyCache.trusted_seconds`; the entry ages from that
        replica's read, so it expires, and is re-read behind, when that replica's would)."""
        record = sealed.record
        age = age_if_fresh(sealed, self._cache.trusted_seconds)
        facts = self._objects.facts(record.uid)
        if age is None or facts is None or facts.fingerprint != sealed.fingerprint:
            return False
        if not self._listed(record.namespace):
            return False
        entry = self._remember(digest, record, self._cache.epoch, revoked=self._revoked(record), behind=True)
        entry.expires = max(INVALIDATED + 1, entry.expires - int(age * 1_000_000))
        entry.verified_at -= int(age * 1_000_000)
        if self._peppers.all and record.pepper_version == self._peppers.all[0].version:
            self.possession.handed_over(digest, record)
        return True

    async def _probe_vault(self) -> None:
        """Keep :attr:`vault` current even when every key is cached: a pepper read every
        ``VAULT_PROBE_SECONDS``, every second during an outage (so recovery shows at once)."""
        while not cancel_requested():
            await asyncio.sleep(1.0 if self.vault.down else VAULT_PROBE_SECONDS)
            if not self._peppers.answered:
                continue  # the start-up retry loop is on it
            try:
                await self.store.read_peppers()
            except VaultError:
                self.vault.failed()
            else:
                self.vault.answered()

    def _listed(self, namespace: str) -> bool:
        """Whether the watch has listed ``namespace`` (and watches it now)."""
        watch = self.watch
        if watch is None or not watch.synced or self._kubernetes is None:
            return False
        watched = self._kubernetes.namespaces
        return not watched or namespace in watched

    async def _preload(self) -> None:
        """Read the records of proven keys into the cache: from Redis while the watch lists,
        cached once the pepper is read and the watch has listed (a preloaded entry must know
        what the watch knows)."""
        if self.preload.finished:
            return  # off: no Redis, or PMKEYS_PRELOAD_SECONDS=0
        await self.preload.run(
            store=self.store,
            peppers=self._peppers,
            possession=self.possession,
            cache=self._cache,
            remember=self._preloaded,
            vault=self.vault,
            cacheable=lambda: self._peppers.answered and (self.watch is None or self.watch.listed),
            handover=self.handover,
            adopt=self._adopt,
        )

    def _preloaded(self, record_digest: str, record: KeyRecord, epoch: int) -> None:
        """The preload read ``record`` and its receipt vouched for it."""
        revoked = self._revoked(record)
        self._remember(record_digest, record, epoch, revoked=revoked, behind=True)
        if not revoked:
            self._hand_over(record_digest, record, epoch)

    def _answer_behind(self, digest: str, entry: Entry, now: int) -> bool:
        """Whether ``entry``, past its TTL, answers this request while its record is re-read in
        the background (:mod:`~pmkeys.verify.refreshing`); if so the re-read is asked for."""
        if not self._cache.answers_behind(entry, now) or not self._watch_live():
            return False
        self.refresher.want(digest)
        if self.vault.down:
            self.vault.stale_answers += 1  # what Vault cannot confirm now, as the outage path counts
        return True

    async def _refresh(self, digest: str) -> None:
        """Re-read the record of the entry under ``digest`` behind the request path. What the
        read finds takes effect as on a miss; a record that is gone, under another pepper, or
        whose hash this process never saw the key match sends the next request down the miss
        path (with the key in hand, which a background read lacks)."""
        entry, now, peppers = self._cache.entries.get(digest), time.monotonic_ns() // 1000, self._peppers.all
        if entry is None or entry.expires > now or not self._cache.answers_behind(entry, now) or not peppers:
            return  # gone, re-read meanwhile, or no longer to be answered from
        if not self.vault.worth_asking():
            return  # answers within stale_for as in any outage; asked for again on its next use
        epoch = self._cache.epoch
        try:
            stored = await self.store.get_record(digest)
        except VaultError:
            self.vault.failed()
            self.refresher.failed += 1
            return
        self.vault.answered()
        record = stored[0] if stored is not None else None
        if record is None or record.pepper_version != peppers[0].version or not self.possession.holds(digest, record):
            entry.expires = INVALIDATED
            self.refresher.dropped += 1
            return
        revoked = self._revoked(record)
        self._remember(digest, record, epoch, revoked=revoked, behind=True)
        self.refresher.refreshed += 1
        if not revoked and record.usable_at(dt.datetime.now(dt.UTC)):
            self._hand_over(digest, record, epoch)

    @property
    def pending_usage(self) -> int:
        return len(self._usage)

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    @property
    def stale_entries(self) -> int:
        """Entries past their TTL: answering from them now if Vault is down, or re-read behind
        while the watch is live, else re-read on use."""
        return self._cache.stale_count(time.monotonic_ns() // 1000)

    def _watch_live(self) -> bool:
        """Whether watch events are current (within one cache TTL of losing the watch)."""
        return self.watch is not None and self.watch.live(self._ttl)

    def readiness(self) -> dict[str, bool]:
        """What must hold before this verifier takes traffic (``/readyz``): it can answer
        correctly. ``vault``: the pepper was read (nothing can be verified before). ``watch``:
        every watched scope was fully listed once (before that a revoked key could pass);
        ``plans``: likewise for TenantPlans (the last-known plans keep applying while their watch
        is down). ``fresh``: Vault answers now, or the watch is live so cached keys may answer stale;
        when both are lost, cached keys stop at their TTL and the replica steps aside.
        ``preload``: the records of proven keys are cached (or the preload's bound passed)."""
        checks = {"vault": self._peppers.answered, "preload": self.preload.finished}
        if self._kubernetes is not None and self._kubernetes.watch:
            checks["watch"] = self.watch is not None and self.watch.listed
            checks["plans"] = self.plan_watch is not None and self.plan_watch.listed
            checks["fresh"] = not self.vault.down or self._watch_live()
        if not self.startup.done:
            self.startup.look(checks, reached=self.preload.reached)
        return checks

    @property
    def ready(self) -> bool:
        return all(self.readiness().values())

    def describe(self) -> dict[str, Any]:
        """Runtime facts for ``/readyz`` and debugging (no key material)."""
        return {
            "cacheEntries": len(self._cache),
            "redis": None if self.redis_health is None else ("down" if self.redis_health.down else "up"),
            "watchEvents": self.watch.events if self.watch else None,
            "watch": None if self.watch is None else ("synced" if self.watch.synced else "lost"),
            "vault": "down" if self.vault.down else "up",
            "vaultDownSeconds": round(self.vault.outage_seconds(), 1),
            "staleEntries": self.stale_entries,
            "servingStale": self.vault.down and self._watch_live(),
            "staleAnswers": self.vault.stale_answers,
            "preload": {
                "state": self.preload.state,
                "proven": self.preload.candidates,
                "loaded": self.preload.cached,
                "handedOver": self.preload.handed_over,
                "seconds": round(self.preload.seconds, 1),
            },
            "refresh": {"backlog": self.refresher.backlog, "perSecond": self.refresher.per_second},
            "startup": self.startup.phases,
        }
