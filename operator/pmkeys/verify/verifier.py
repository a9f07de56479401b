"""The verifier: is this key valid, for which tenant, may it do this, is it over its limit?

The hot path, in order (DESIGN.md, "Verification")::

    parse ─► digest ─► cache ─┬─ hit ──────────────────────────┐
      │ malformed: 401        └─ miss ─► negative cache (401)  │
      │ (no I/O)                   ─► failed-attempt gate (429)│
      │                            ─► Vault read (single-flight)
      │                            ─► bcrypt once per key ─────┤
      ▼                                                        ▼
                    revoked / expired (401) ─► scope (403) ─► rate limit (429) ─► count usage

A cached verification does no I/O and takes no lock: one parse, one HMAC, one dict lookup,
integer comparisons, one GCRA step and its :class:`Decision` — a few microseconds, so one core
does well over 100,000 per second (``bench/verify.py``). Everything slow happens at most once per key per cache TTL:

* **Vault** is read on a miss, and concurrent misses for one key share one read
  (single-flight). A failed read answers 503 ``vault_unavailable`` and is not cached; cached
  keys keep working while Vault is down.
* **bcrypt** checks the key against its record once per key per process: finding the record
  by digest already needs the key, and bcrypt is the defence in depth DESIGN.md asks for (a
  record is trusted only if the presented key matches its hash). Its result is remembered by
  ``(digest, hash)``, so a cache invalidation costs a Vault read, not another bcrypt. The pool is
  bounded: beyond its queue the answer is 503 ``busy``, never an unbounded queue.
* **Unknown digests** are cached as negatives for ``negative_ttl``; **failures** (malformed,
  unknown, revoked, expired) are limited per client with a GCRA at
  ``failed_attempts_per_minute``: a client over it gets 429 for any key this process has not
  already verified, so random keys cannot make us read Vault or run bcrypt. Keys already
  cached keep working for everyone.

Freshness: :mod:`pmkeys.verify.watching` drops an object's entries when it changes, and marks
objects revoked by spec or being deleted, so revocation and rotation reach every replica within
the watch's latency; the cache TTL bounds staleness when the watch is down. A key in its grace
period carries its ``not_after`` deadline, which the hot path compares on every request, so it
stops at its deadline whatever the cache holds.

Clocks: the hot path uses monotonic microseconds; wall-clock deadlines from Vault are converted
when an entry is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import time
from collections.abc import Awaitable
from types import TracebackType
from typing import Any

from kubernetes import client as kube_client

from pmkeys.config import VerifierSettings
from pmkeys.keys.digest import Pepper, digest
from pmkeys.keys.hashing import PRODUCTION_COST, Hasher, HashingBusy
from pmkeys.keys.material import MalformedKey, parse
from pmkeys.kubeclient import api_client
from pmkeys.vault.errors import VaultError
from pmkeys.vault.records import KeyRecord
from pmkeys.vault.session import VaultSession
from pmkeys.vault.store import KeyStore
from pmkeys.verify.cache import Entry, KeyCache
from pmkeys.verify.decision import Decision, Outcome
from pmkeys.verify.gcra import LocalLimiter
from pmkeys.verify.metrics import VAULT_ERRORS, VAULT_SECONDS
from pmkeys.verify.ratelimit import Policy, RedisHealth, SharedLimiter, connect
from pmkeys.verify.usage import SharedUsage, StatusWriter, UsageCounter, UsageFlusher
from pmkeys.verify.watching import ObjectFacts, ObjectWatch

logger = logging.getLogger(__name__)
_monotonic_ns = time.monotonic_ns
_wall = time.time
_hmac = hmac.digest
HOUSEKEEPING_SECONDS = 10.0
PEPPER_RETRY_MAX = 10.0
#: Before the operator has created the pepper (a new installation), how often a request may
#: look for it again: a Vault read per interval at most, and the first key works at once.
PEPPER_RECHECK_SECONDS = 0.1


class Stats:
    """Counters the hot path bumps with a plain integer add (no lock, no label lookup);
    :mod:`pmkeys.verify.metrics` exports them when Prometheus scrapes."""

    __slots__ = ("cache_hits", "cache_misses", "invalidations", "negative_hits", "outcomes", "rate_limited")

    def __init__(self) -> None:
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self.rate_limited: dict[str, int] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self.negative_hits = 0
        self.invalidations = 0


class Verifier:
    """Verify API keys; async, one instance per process (it holds the caches).

    Build it with :meth:`from_settings` and use it as an async context manager, or call
    :meth:`start` and :meth:`close` yourself.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        hasher: Hasher | None = None,
        cache_ttl: float = 30.0,
        negative_ttl: float = 5.0,
        failed_attempts_per_minute: int = 30,
        redis_url: str = "",
        redis_prefix: str = "pmkeys",
        redis_timeout: float = 0.25,
        redis_failure_policy: Policy = "open",
        kube: kube_client.ApiClient | None = None,
        watch: bool = True,
        namespaces: list[str] | None = None,
        usage_flush_seconds: float = 10.0,
    ) -> None:
        self.store = store
        self.hasher = hasher or Hasher(cost=PRODUCTION_COST)
        self.stats = Stats()
        self._cache = KeyCache(ttl=cache_ttl, negative_ttl=negative_ttl)
        self._entries = self._cache.entries
        self._local = LocalLimiter()
        self._failures = LocalLimiter()
        self._failure_limit = failed_attempts_per_minute
        self._peppers: list[Pepper] = []
        self._pepper: bytes | None = None
        self._pepper_read_at = 0.0
        self._pepper_flight: asyncio.Future[bool] | None = None
        self._vault_answered = False
        self._flights: dict[str, asyncio.Future[Entry | Outcome]] = {}
        #: digest → the bcrypt hash this key was checked against (bcrypt once per key).
        self._checked: dict[str, str] = {}
        self._revoked_uids: set[str] = set()
        self._objects: dict[str, ObjectFacts] = {}
        self._key_owners: dict[str, str] = {}
        self._usage = UsageCounter()
        self._tasks: list[asyncio.Task[None]] = []
        self._kube = kube
        self._want_watch = watch and kube is not None
        self._namespaces = namespaces or []
        self.watch: ObjectWatch | None = None
        self.redis_health: RedisHealth | None = None
        self._redis = None
        self._shared: SharedLimiter | None = None
        shared_usage: SharedUsage | None = None
        if redis_url:
            self._redis = connect(redis_url, timeout=redis_timeout)
            self.redis_health = RedisHealth()
            self._shared = SharedLimiter(
                self._redis,
                prefix=redis_prefix,
                policy=redis_failure_policy,
                local=self._local,
                health=self.redis_health,
            )
            shared_usage = SharedUsage(self._redis, prefix=redis_prefix, health=self.redis_health)
        self.flusher: UsageFlusher | None = None
        if kube is not None:
            self.flusher = UsageFlusher(
                self._usage, StatusWriter(kube), interval=usage_flush_seconds, shared=shared_usage
            )

    @classmethod
    def from_settings(cls, settings: VerifierSettings, *, kube: kube_client.ApiClient | None = None) -> Verifier:
        """A verifier wired as ``settings`` say: Vault (its own role), Kubernetes (watch and usage
        writes; ``settings.kubeconfig`` or in-cluster), Redis if ``redis_url`` is set."""
        hasher = Hasher(
            cost=PRODUCTION_COST, workers=settings.bcrypt_workers or None, max_queue=settings.bcrypt_max_queue
        )
        return cls(
            KeyStore(VaultSession(settings.vault)),
            hasher=hasher,
            cache_ttl=settings.cache_ttl,
            negative_ttl=settings.negative_ttl,
            failed_attempts_per_minute=settings.failed_attempts_per_minute,
            redis_url=settings.redis_url,
            redis_prefix=settings.redis_prefix,
            redis_timeout=settings.redis_timeout,
            redis_failure_policy=settings.redis_failure_policy,
            kube=kube or api_client(settings.kubeconfig),
            watch=settings.watch,
            namespaces=settings.namespaces,
            usage_flush_seconds=settings.usage_flush_seconds,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the peppers (retrying in the background if Vault is not there yet), start the
        watch, the usage flusher and housekeeping."""
        if not await self._load_peppers():
            self._spawn(self._load_peppers_until_done())
        if self._want_watch and self._kube is not None:
            self.watch = ObjectWatch(
                self._kube, self.object_changed, namespaces=self._namespaces, loop=asyncio.get_running_loop()
            )
            self.watch.start()
        if self.flusher is not None:
            self._spawn(self.flusher.run())
        self._spawn(self._housekeeping())

    async def close(self) -> None:
        """Stop background work and flush pending usage once more."""
        if self.watch is not None:
            self.watch.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.flusher is not None:
            try:
                await self.flusher.flush()
            except Exception:  # shutting down: report, do not raise
                logger.exception("final usage flush failed")
            self.flusher.writer.close()
        if self._redis is not None:
            await self._redis.aclose()
        self.store.session.close()
        self.hasher.close()

    async def __aenter__(self) -> Verifier:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    async def _load_peppers(self) -> bool:
        """Read the peppers; True once Vault has answered (even "none yet": then no key exists,
        and a request retries the read, at most every PEPPER_RECHECK_SECONDS, until the operator made one)."""
        self._pepper_read_at = time.monotonic()
        try:
            peppers = await self.store.read_peppers()
        except VaultError as exc:
            logger.warning("cannot read the digest pepper from Vault yet: %s", exc)
            return False
        self._vault_answered = True
        if peppers:
            self._peppers = peppers
            self._pepper = peppers[0].secret
        return True

    async def _load_peppers_until_done(self) -> None:
        delay = 0.5
        while not await self._load_peppers():
            await asyncio.sleep(delay)
            delay = min(PEPPER_RETRY_MAX, delay * 2)
        logger.info("Vault answered; verifying keys")

    async def _without_pepper(self, key: str, scope: str | None, client: str | None, now: int) -> Decision:
        if self._pepper_flight is None and time.monotonic() - self._pepper_read_at >= PEPPER_RECHECK_SECONDS:
            flight = self._pepper_flight = asyncio.ensure_future(self._load_peppers())
            flight.add_done_callback(lambda _: setattr(self, "_pepper_flight", None))
        if self._pepper_flight is not None:  # one read for every request waiting on it
            await asyncio.shield(self._pepper_flight)
        if self._pepper is not None:
            return await self.verify(key, scope, client=client)
        if self._vault_answered:
            return self._failure(Outcome.UNKNOWN, client, now)
        return self._refusal(Outcome.VAULT_UNAVAILABLE, "the digest pepper could not be read yet", retry_after=1)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            now = _monotonic_ns() // 1000
            self._cache.sweep(now)
            self._local.prune(now)
            self._failures.prune(now)

    def readiness(self) -> dict[str, bool]:
        """What must hold before this verifier takes traffic (``/readyz``)."""
        checks = {"vault": self._vault_answered}
        if self._want_watch:
            checks["watch"] = self.watch is not None and self.watch.synced
        return checks

    @property
    def ready(self) -> bool:
        return all(self.readiness().values())

    # -- the hot path --------------------------------------------------------------------------
    async def verify(self, key: str, scope: str | None = None, *, client: str | None = None) -> Decision:
        """Decide one request.

        Args:
            key: the presented key, as sent (it is never logged or kept).
            scope: the scope the request needs (a :class:`~pmkeys.api.vocabulary.Scope` value);
                None: any valid key will do.
            client: who is asking (e.g. the caller's IP), for the failed-attempt limit; None
                turns that limit off for this call.
        """
        now = _monotonic_ns() // 1000
        try:
            parse(key)
        except MalformedKey as exc:
            return self._failure(Outcome.MALFORMED, client, now, str(exc))
        pepper = self._pepper
        if pepper is None:
            return await self._without_pepper(key, scope, client, now)
        primary = _hmac(pepper, key.encode(), "sha256").hex()
        entry = self._entries.get(primary)
        if entry is None or entry.expires <= now:
            found = await self._miss(key, primary, client, now)
            if isinstance(found, Decision):
                return found
            entry = found
            now = _monotonic_ns() // 1000
        else:
            self.stats.cache_hits += 1
        if entry.denial is not None:
            return self._failure(entry.denial, client, now)
        if now >= entry.not_after:
            return self._failure(Outcome.EXPIRED, client, now)
        tally = self._usage.tally(entry.uid, entry.namespace, entry.name)
        tally.requests += 1
        tally.last_used = _wall()
        if scope is not None and scope not in entry.scopes:
            tally.errors += 1
            return self._refused_for(entry, Outcome.SCOPE_MISSING, _scope_detail(scope, entry))
        if self._shared is None:
            state = self._local.hit(entry.key_id, entry.rate_limit, now)
        else:
            shared = await self._shared.hit(entry.key_id, entry.rate_limit, now)
            if shared is None:
                tally.errors += 1
                return self._refusal(Outcome.LIMITER_UNAVAILABLE, retry_after=1)
            state = shared
        if not state.allowed:
            tally.errors += 1
            self.stats.outcomes[Outcome.RATE_LIMITED] += 1
            self.stats.rate_limited[entry.tier] = self.stats.rate_limited.get(entry.tier, 0) + 1
            return Decision(
                Outcome.RATE_LIMITED, entry.tenant, entry.key_id, entry.scope_list, entry.tier,
                state.limit, 0, state.reset, state.retry_after,
            )  # fmt: skip
        self.stats.outcomes[Outcome.ALLOWED] += 1
        return Decision(
            Outcome.ALLOWED, entry.tenant, entry.key_id, entry.scope_list, entry.tier,
            state.limit, state.remaining, state.reset,
        )  # fmt: skip

    def _failure(self, outcome: Outcome, client: str | None, now: int, detail: str = "") -> Decision:
        """A refusal that counts against the client's failed-attempt budget."""
        self.stats.outcomes[outcome] += 1
        if client is not None:
            self._failures.hit(client, self._failure_limit, now)
        return Decision(outcome, detail=detail)

    def _refusal(self, outcome: Outcome, detail: str = "", *, retry_after: int = 0) -> Decision:
        self.stats.outcomes[outcome] += 1
        return Decision(outcome, detail=detail, retry_after=retry_after)

    def _refused_for(self, entry: Entry, outcome: Outcome, detail: str) -> Decision:
        self.stats.outcomes[outcome] += 1
        return Decision(outcome, entry.tenant, entry.key_id, entry.scope_list, entry.tier, detail=detail)

    # -- the miss path ---------------------------------------------------------------------------
    async def _miss(self, key: str, primary: str, client: str | None, now: int) -> Entry | Decision:
        if self._cache.is_negative(primary, now):
            self.stats.negative_hits += 1
            return self._failure(Outcome.UNKNOWN, client, now)
        if client is not None:
            gate = self._failures.peek(client, self._failure_limit, now)
            if not gate.allowed:
                return self._refusal(Outcome.TOO_MANY_FAILURES, retry_after=gate.retry_after)
        self.stats.cache_misses += 1
        flight = self._flights.get(primary)
        if flight is None:
            flight = asyncio.ensure_future(self._fetch(key, primary))
            self._flights[primary] = flight
            flight.add_done_callback(lambda done: self._land(primary, done))
        try:
            found = await asyncio.shield(flight)
        except HashingBusy:
            return self._refusal(Outcome.BUSY, "too many new keys at once", retry_after=1)
        except VaultError as exc:
            return self._refusal(Outcome.VAULT_UNAVAILABLE, exc.reason, retry_after=1)
        if isinstance(found, Outcome):
            return self._failure(found, client, _monotonic_ns() // 1000)
        return found

    def _land(self, primary: str, done: asyncio.Future[Entry | Outcome]) -> None:
        if self._flights.get(primary) is done:
            del self._flights[primary]
        if not done.cancelled():
            done.exception()  # retrieved here so an error nobody awaited is not reported as lost

    async def _fetch(self, key: str, primary: str) -> Entry | Outcome:
        """Read the key's record (trying each pepper), check it once with bcrypt, cache it."""
        epoch = self._cache.epoch
        found = await self._find_record(key, primary)
        now = _monotonic_ns() // 1000
        if found is None:
            self._cache.put_negative(primary, now)
            return Outcome.UNKNOWN
        record_digest, record = found
        revoked = record.uid in self._revoked_uids
        usable = not revoked and record.usable_at(dt.datetime.now(dt.UTC))
        if usable and self._checked.get(record_digest) != record.bcrypt:
            if not await self.hasher.check(key, record.bcrypt):
                logger.warning("key %s: digest matched but bcrypt did not; refusing it", record.key_id)
                self._cache.put_negative(primary, now)
                return Outcome.UNKNOWN
            self._checked[record_digest] = record.bcrypt
        now = _monotonic_ns() // 1000
        entry = Entry.from_record(record, now=now, ttl_us=self._cache.ttl_us, revoked=revoked)
        if self._cache.unchanged_since(record.uid, epoch):
            self._cache.put(primary, entry)
        return entry

    async def _find_record(self, key: str, primary: str) -> tuple[str, KeyRecord] | None:
        for index, pepper in enumerate(self._peppers):
            candidate = primary if index == 0 else digest(pepper, key)
            started = time.perf_counter()
            try:
                stored = await self.store.get_record(candidate)
            except VaultError as exc:
                VAULT_ERRORS.labels(exc.reason).inc()
                raise
            finally:
                VAULT_SECONDS.observe(time.perf_counter() - started)
            if stored is not None:
                return candidate, stored[0]
        return None

    # -- what the watch tells us ---------------------------------------------------------------
    def object_changed(self, uid: str, facts: ObjectFacts | None) -> None:
        """A TenantApiKey changed (facts) or was deleted (None): forget its cached keys."""
        previous = self._objects.get(uid)
        if previous is not None:
            for key_id in previous.key_ids:
                if self._key_owners.get(key_id) == uid:
                    del self._key_owners[key_id]
        if facts is None:
            self._objects.pop(uid, None)
            self._revoked_uids.add(uid)
        else:
            self._objects[uid] = facts
            for key_id in facts.key_ids:
                self._key_owners[key_id] = uid
            if facts.revoked:
                self._revoked_uids.add(uid)
            if previous is None or previous.key_ids != facts.key_ids:
                self._cache.clear_negative()
        self._cache.drop_uid(uid)
        self.stats.invalidations += 1

    # -- usage -----------------------------------------------------------------------------------
    def report_errors(self, key_id: str, count: int = 1) -> bool:
        """Count ``count`` errors the API had with requests made with key ``key_id``; False if
        this verifier does not know the key (neither cached nor seen by the watch)."""
        owner = self._objects.get(self._key_owners.get(key_id, ""))
        if owner is not None:
            self._usage.tally(owner.uid, owner.namespace, owner.name).errors += count
            return True
        entry = self._cache.by_key_id(key_id)
        if entry is not None:
            self._usage.tally(entry.uid, entry.namespace, entry.name).errors += count
            return True
        return False

    @property
    def pending_usage(self) -> int:
        return len(self._usage)

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def describe(self) -> dict[str, Any]:
        """Runtime facts for ``/readyz`` and debugging (no key material)."""
        return {
            "cacheEntries": len(self._cache),
            "redis": None if self.redis_health is None else ("down" if self.redis_health.down else "up"),
            "watchEvents": self.watch.events if self.watch else None,
        }


def _scope_detail(scope: str, entry: Entry) -> str:
    has = ", ".join(entry.scope_list)
    return f"the request needs {scope}; the key has {has}" if scope else f"the key has {has}"
