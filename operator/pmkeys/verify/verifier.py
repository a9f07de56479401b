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
integer comparisons, the key's and the tenant's sliding-window checks and the
:class:`Decision` — a few microseconds, so one core does well over 100,000 per second
(``bench/verify.py``). Everything slow happens at most once per key per cache TTL:

* **Vault** is read on a miss, and concurrent misses for one key share one read
  (single-flight). Past its TTL, while the watch is live, an entry answers and is re-read behind
  the request at a bounded rate (:mod:`~pmkeys.verify.refreshing`). A failed read is not cached:
  a key verified before answers from its old entry (stale while unavailable, bounded by
  ``stale_for`` and a live watch, :mod:`pmkeys.verify.staleness`); any other key gets 503
  ``vault_unavailable``.
* **bcrypt** checks the key against its record once per key for the whole fleet
  (:mod:`~pmkeys.verify.possession`: the verifier that ran it leaves a receipt in Redis that
  other processes check instead; a new process reads the records of keys with receipts before it
  reports ready, :mod:`~pmkeys.verify.preloading`, so they are hits from its first request):
  finding the record by digest already needs the key, and bcrypt is the defence in depth
  DESIGN.md asks for (a record is trusted only if the presented key matches its hash). Its
  result is remembered by ``(digest, hash)``, so a cache invalidation costs a Vault read, not
  another bcrypt. The pool is bounded: beyond its queue the answer is 503 ``busy``, never an
  unbounded queue.
* **Unknown digests** are cached as negatives for ``negative_ttl``; **failures** (malformed,
  unknown, revoked, expired) are limited per client with a GCRA at
  ``failed_attempts_per_minute``: a client over it gets 429 for any key this process has not
  already verified, so random keys cannot make us read Vault or run bcrypt. Keys already
  cached keep working for everyone. A caller that names its clients (the HTTP service's
  callers) could walk around that gate with made-up client names, so unknown keys are also
  limited per *caller* (``caller_unknown_keys_per_minute``), which bounds the Vault reads any
  one caller can cause.

Freshness: :mod:`pmkeys.verify.watching` reports every change of an object; the cache applies it
to the object's entries (revoked, deleted, superseded, grace deadline, plan) and has them re-read,
so revocation and rotation reach every replica within the watch's latency, with or without
Vault; the cache TTL bounds staleness when the watch is down. A key is only
as alive as its TenantApiKey: once the watch has listed the record's namespace, a record whose
object is not there (deleted while the operator was down and its finalizer stripped, or before
this replica started) is refused as revoked, whatever Vault still says. Until the watch has
listed, entries live at most ``UNLISTED_TTL`` seconds, so a replica that served before its
first listing stops trusting a deleted object's key as soon as it has listed. A key in its grace
period carries its ``not_after`` deadline, which the hot path compares on every request, so it
stops at its deadline whatever the cache holds.

Clocks: the hot path uses monotonic microseconds; wall-clock deadlines from Vault are converted
when an entry is built.

This module is the pipeline and nothing else, in the order a request meets it: :meth:`Verifier.verify`,
then the miss path, then the refusals. What it leans on lives beside it: peppers, single-flight,
the object index the watch feeds, caches, Redis and Kubernetes (``connections``), counters
(``metrics``), the start-up preload (``preloading``), start and stop (``lifecycle``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import time

from kubernetes import client as kube_client

from pmkeys.audit.failures import NO_TALLY, FailureRecorder
from pmkeys.config import VerifierSettings
from pmkeys.keys.digest import digest
from pmkeys.keys.hashing import PRODUCTION_COST, Hasher, HashingBusy
from pmkeys.keys.material import MalformedKey, parse
from pmkeys.vault.errors import VaultError
from pmkeys.vault.records import KeyRecord
from pmkeys.vault.session import VaultSession
from pmkeys.vault.store import KeyStore
from pmkeys.verify.cache import Entry, KeyCache
from pmkeys.verify.connections import Kubernetes, Redis
from pmkeys.verify.decision import Decision, Outcome
from pmkeys.verify.flights import SingleFlight
from pmkeys.verify.gcra import LocalLimiter
from pmkeys.verify.lifecycle import Lifecycle
from pmkeys.verify.limiting import Limits, admitted, limited
from pmkeys.verify.metrics import Stats, observe_vault
from pmkeys.verify.objects import ObjectIndex
from pmkeys.verify.peppers import Peppers
from pmkeys.verify.plans import PlanBook, PlanWatch
from pmkeys.verify.possession import Possession
from pmkeys.verify.preloading import Preload
from pmkeys.verify.ratelimit import RedisHealth
from pmkeys.verify.refreshing import Refresher
from pmkeys.verify.reporting import ErrorReports
from pmkeys.verify.staleness import DEFAULT_STALE_FOR, VaultHealth
from pmkeys.verify.startup import StartupClock
from pmkeys.verify.usage import UsageCounter, UsageFlusher
from pmkeys.verify.watching import ObjectFacts, ObjectWatch
from pmkeys.verify.windows import WindowLimiter

logger = logging.getLogger(__name__)
_monotonic_ns = time.monotonic_ns
_wall = time.time
_hmac = hmac.digest
#: Seconds an entry built before the watch listed every object may be used (see above).
UNLISTED_TTL = 1.0
#: Per-caller gate entries live in the failure limiter beside per-client ones; clients are
#: prefixed by their caller's name, so this character (not allowed in either) keeps them apart.
_CALLER = "\x00"


class Verifier(Lifecycle, ErrorReports):
    """Verify API keys; async, one instance per process (it holds the caches).

    Build it with :meth:`from_settings` and use it as an async context manager, or call
    :meth:`start` and :meth:`close` yourself. Without ``redis`` limits are kept in memory;
    without ``kubernetes`` nothing is watched and usage is only counted.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        hasher: Hasher | None = None,
        cache_ttl: float = 30.0,
        negative_ttl: float = 5.0,
        stale_for: float = DEFAULT_STALE_FOR,
        failed_attempts_per_minute: int = 30,
        caller_unknown_keys_per_minute: int = 600,
        local: WindowLimiter | None = None,
        redis: Redis | None = None,
        kubernetes: Kubernetes | None = None,
        failures: FailureRecorder | None = None,
        preload: Preload | None = None,
        refresher: Refresher | None = None,
    ) -> None:
        self.store = store
        self.startup = StartupClock()
        self.failures, self._tally = failures, (failures.tally if failures else NO_TALLY)
        self.hasher = hasher or Hasher(cost=PRODUCTION_COST)
        self.stats = Stats()
        #: Entries past their TTL re-read in the background while the watch is live.
        self.refresher = refresher or Refresher()
        self._cache = KeyCache(
            ttl=cache_ttl, negative_ttl=negative_ttl, stale_for=stale_for, behind=self.refresher.enabled
        )
        self._ttl = cache_ttl
        self.vault = VaultHealth()
        self._entries = self._cache.entries
        self._peppers = Peppers(store)
        self._flights: SingleFlight[Entry | Outcome] = SingleFlight()
        #: bcrypt once per key for the whole fleet (receipts in Redis when there is one).
        self.possession = Possession(receipts=redis.receipts if redis else None)
        #: The records of proven keys, read before this replica reports ready.
        self.preload = preload or Preload(redis.receipts if redis else None)
        self._objects = ObjectIndex()
        self._failures = LocalLimiter()
        self.plans = PlanBook()
        self._failure_limit = failed_attempts_per_minute
        self._caller_limit = caller_unknown_keys_per_minute
        self._usage = UsageCounter()
        self._tasks: list[asyncio.Task[None]] = []
        self._redis = redis
        self._limits = Limits(local=local or WindowLimiter(), shared=redis.limiter if redis else None, plans=self.plans)
        self.redis_health: RedisHealth | None = redis.health if redis else None
        self._kubernetes = kubernetes
        self.watch: ObjectWatch | None = None
        self.plan_watch: PlanWatch | None = None
        self.flusher: UsageFlusher | None = None
        if kubernetes is not None:
            self.flusher = kubernetes.flusher(self._usage, redis=redis, limits=self._limits)

    @classmethod
    def from_settings(cls, settings: VerifierSettings, *, kube: kube_client.ApiClient | None = None) -> Verifier:
        """A verifier wired as ``settings`` say: Vault (its own role, calls timed into the
        metrics), Kubernetes (watch and usage writes; ``settings.kubeconfig`` or in-cluster),
        Redis if ``redis_url`` is set."""
        hasher = Hasher(
            cost=PRODUCTION_COST, workers=settings.bcrypt_workers or None, max_queue=settings.bcrypt_max_queue
        )
        local = WindowLimiter()
        redis = Redis.connect(settings, local=local) if settings.redis_url else None
        receipts = redis.receipts if redis else None
        preload = Preload(receipts, concurrency=settings.preload_concurrency, deadline=settings.preload_seconds)
        return cls(
            KeyStore(VaultSession(settings.vault, observe=observe_vault)),
            hasher=hasher,
            cache_ttl=settings.cache_ttl,
            negative_ttl=settings.negative_ttl,
            stale_for=settings.stale_for_seconds,
            failed_attempts_per_minute=settings.failed_attempts_per_minute,
            caller_unknown_keys_per_minute=settings.caller_unknown_keys_per_minute,
            local=local,
            redis=redis,
            kubernetes=Kubernetes.from_settings(settings, api=kube),
            failures=FailureRecorder.from_settings(settings.audit),
            preload=preload,
            refresher=Refresher(per_second=settings.refresh_per_second),
        )

    # -- the hot path --------------------------------------------------------------------------
    async def verify(
        self, key: str, scope: str | None = None, *, client: str | None = None, caller: str | None = None
    ) -> Decision:
        """Decide one request.

        Args:
            key: the presented key, as sent (it is never logged or kept).
            scope: the scope the request needs (a :class:`~pmkeys.api.vocabulary.Scope` value);
                None: any valid key will do.
            client: who is asking (e.g. the caller's IP), for the failed-attempt limit; None
                turns that limit off for this call.
            caller: who relays the request (an authenticated caller of the HTTP service), for
                the per-caller limit on unknown keys; None turns that limit off.
        """
        now = _monotonic_ns() // 1000
        try:
            parse(key)
        except MalformedKey as exc:
            return self._failure(Outcome.MALFORMED, client, now, str(exc))
        pepper = self._peppers.current
        if pepper is None:
            return await self._without_pepper(key, scope, client, caller, now)
        primary = _hmac(pepper, key.encode(), "sha256").hex()
        entry = self._entries.get(primary)
        if entry is None or (entry.expires <= now and not self._answer_behind(primary, entry, now)):
            found = await self._miss(key, primary, client, caller, now)
            if isinstance(found, Decision):
                return found
            entry = found
            now = _monotonic_ns() // 1000
        else:
            self.stats.cache_hits += 1
        if entry.denial is not None:
            return self._failure(entry.denial, client, now, entry=entry)
        if now >= entry.not_after:
            return self._failure(Outcome.EXPIRED, client, now, entry=entry)
        tally = self._usage.tally(entry.uid, entry.namespace, entry.name)
        tally.requests += 1
        tally.last_used = _wall()
        if scope is not None and scope not in entry.scopes:
            tally.errors += 1
            return self._refused_for(entry, Outcome.SCOPE_MISSING, _scope_detail(scope, entry), client)
        verdict = await self._limits.check(entry, now)
        if verdict is None:
            tally.errors += 1
            return self._refusal(Outcome.LIMITER_UNAVAILABLE, retry_after=1)
        if not verdict.allowed:
            tally.errors += 1
            self.stats.outcomes[Outcome.RATE_LIMITED] += 1
            self.stats.rate_limited[entry.tier] = self.stats.rate_limited.get(entry.tier, 0) + 1
            return limited(entry, verdict)
        self.stats.outcomes[Outcome.ALLOWED] += 1
        return admitted(entry, verdict)

    # -- the miss path ---------------------------------------------------------------------------
    async def _miss(self, key: str, primary: str, client: str | None, caller: str | None, now: int) -> Entry | Decision:
        if self._cache.is_negative(primary, now):
            self.stats.negative_hits += 1
            return self._failure(Outcome.UNKNOWN, client, now)
        if client is not None:
            gate = self._failures.peek(client, self._failure_limit, now)
            if not gate.allowed:
                return self._refusal(Outcome.TOO_MANY_FAILURES, retry_after=gate.retry_after)
        if caller is not None:
            gate = self._failures.peek(_CALLER + caller, self._caller_limit, now)
            if not gate.allowed:
                return self._refusal(Outcome.TOO_MANY_FAILURES, retry_after=gate.retry_after)
        self.stats.cache_misses += 1
        if not self.vault.worth_asking() and (stale := self._stale(primary)) is not None:
            return stale
        try:
            found = await self._flights.run(primary, lambda: self._fetch(key, primary))
        except HashingBusy:
            return self._refusal(Outcome.BUSY, "too many new keys at once", retry_after=1)
        except VaultError as exc:
            if (stale := self._stale(primary)) is not None:
                return stale
            return self._refusal(Outcome.VAULT_UNAVAILABLE, exc.reason, retry_after=1)
        if isinstance(found, Outcome):
            now = _monotonic_ns() // 1000
            if caller is not None:
                self._failures.hit(_CALLER + caller, self._caller_limit, now)
            return self._failure(found, client, now)
        return found

    def _stale(self, primary: str) -> Entry | None:
        """The entry to answer from while Vault cannot be read, if the staleness rules allow."""
        if not self._watch_live():
            return None
        entry = self._cache.stale(primary, _monotonic_ns() // 1000)
        if entry is not None:
            self.vault.stale_answers += 1
        return entry

    async def _fetch(self, key: str, primary: str) -> Entry | Outcome:
        """Read the key's record (trying each pepper), check it once with bcrypt, cache it."""
        epoch = self._cache.epoch
        found = await self._find_record(key, primary)
        now = _monotonic_ns() // 1000
        if found is None:
            self._cache.put_negative(primary, now)
            return Outcome.UNKNOWN
        record_digest, record, pepper = found
        revoked = self._revoked(record)
        usable = not revoked and record.usable_at(dt.datetime.now(dt.UTC))
        if usable and not await self.possession.proven(key, record_digest, record, pepper=pepper, hasher=self.hasher):
            logger.warning("key %s: digest matched but bcrypt did not; refusing it", record.key_id)
            self._cache.put_negative(primary, now)
            return Outcome.UNKNOWN
        entry = self._remember(primary, record, epoch, revoked=revoked, behind=record_digest == primary)
        if usable:
            self._hand_over(primary, record, epoch)
        return entry

    def _revoked(self, record: KeyRecord) -> bool:
        """Refused whatever Vault says: the watch saw its object revoked, or listed it as gone."""
        return self._objects.revoked(record.uid) or (
            self._listed(record.namespace) and not self._objects.exists(record.uid)
        )

    def _remember(self, primary: str, record: KeyRecord, epoch: int, *, revoked: bool, behind: bool = False) -> Entry:
        """Cache ``record``'s entry under ``primary`` unless its object was invalidated since ``epoch``."""
        now = _monotonic_ns() // 1000
        watching = self._kubernetes is not None and self._kubernetes.watch
        unlisted = watching and not self._listed(record.namespace)
        ttl_us = int(UNLISTED_TTL * 1_000_000) if unlisted else self._cache.ttl_us
        entry = Entry.from_record(record, now=now, ttl_us=ttl_us, revoked=revoked, behind=behind)
        if self._cache.unchanged_since(record.uid, epoch):
            self._cache.put(primary, entry)
        return entry

    async def _find_record(self, key: str, primary: str) -> tuple[str, KeyRecord, bytes] | None:
        """The record's digest, the record and the pepper that found it."""
        for index, pepper in enumerate(self._peppers.all):
            candidate = primary if index == 0 else digest(pepper, key)
            try:
                stored = await self.store.get_record(candidate)
            except VaultError:
                self.vault.failed()
                raise
            self.vault.answered()
            if stored is not None:
                return candidate, stored[0], pepper.secret
        return None

    async def _without_pepper(
        self, key: str, scope: str | None, client: str | None, caller: str | None, now: int
    ) -> Decision:
        """No pepper yet: look again (shared, rate-bounded); none means no key exists."""
        await self._peppers.recheck()
        if self._peppers.current is not None:
            return await self.verify(key, scope, client=client, caller=caller)
        if self._peppers.answered:
            return self._failure(Outcome.UNKNOWN, client, now)
        return self._refusal(Outcome.VAULT_UNAVAILABLE, "the digest pepper could not be read yet", retry_after=1)

    # -- refusals ------------------------------------------------------------------------------
    def _failure(
        self, outcome: Outcome, client: str | None, now: int, detail: str = "", entry: Entry | None = None
    ) -> Decision:
        """A refusal that counts against the client's failed-attempt budget and the audit tally."""
        self.stats.outcomes[outcome] += 1
        if client is not None:
            self._failures.hit(client, self._failure_limit, now)
        self._tally.add(outcome, client, entry)
        return Decision(outcome, detail=detail)

    def _refusal(self, outcome: Outcome, detail: str = "", *, retry_after: int = 0) -> Decision:
        self.stats.outcomes[outcome] += 1
        return Decision(outcome, detail=detail, retry_after=retry_after)

    def _refused_for(self, entry: Entry, outcome: Outcome, detail: str, client: str | None = None) -> Decision:
        self.stats.outcomes[outcome] += 1
        self._tally.add(outcome, client, entry)
        return Decision(outcome, entry.tenant, entry.key_id, entry.scope_list, entry.tier, detail=detail)

    # -- what the watch tells us ---------------------------------------------------------------
    def object_changed(self, uid: str, facts: ObjectFacts | None) -> None:
        """A TenantApiKey changed (facts) or was deleted (None): apply that to its cached keys
        at once and have them re-read from Vault."""
        if self._objects.changed(uid, facts):
            self._cache.clear_negative()
        self._cache.invalidate(uid, facts, _monotonic_ns() // 1000)
        self.stats.invalidations += 1
        if facts is None and self.flusher is not None:
            self.flusher.ledgers.forget(uid)  # its usage leaves the ledgers with it


def _scope_detail(scope: str, entry: Entry) -> str:
    has = ", ".join(entry.scope_list)
    return f"the request needs {scope}; the key has {has}" if scope else f"the key has {has}"
