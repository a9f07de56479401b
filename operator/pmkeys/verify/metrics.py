"""Prometheus metrics of the verifier.

The hot path never touches a Prometheus object: it bumps plain integers on :class:`Stats` (a
label lookup and a lock per request would cost more than the verification itself), and
:class:`VerifierCollector` turns them into metric families when Prometheus scrapes. Vault calls
are timed by :class:`~pmkeys.vault.session.VaultSession` itself, through the ``observe=`` hook
the operator uses too (:func:`observe_vault`). This module knows the verifier only through the
:class:`Observed` protocol, so it imports nothing of the pipeline it reports on.

Every label is bounded: ``outcome`` (the :class:`~pmkeys.verify.decision.Outcome` values),
``tier`` (starter, pro, enterprise), ``result`` (hit, miss, negative). No key ids, tenants or
paths, whose number has no bound.

=================================================  =====================================================
``pmkeys_verifier_verifications_total{outcome}``   decisions, by outcome (allowed, unknown, rate_limited…)
``pmkeys_verifier_rate_limited_total{tier}``       requests refused by a key's rate limit
``pmkeys_verifier_cache_lookups_total{result}``    hot-path cache hits, misses (Vault reads), negative hits
``pmkeys_verifier_cache_entries``                  keys cached now
``pmkeys_verifier_cache_invalidations_total``      objects whose keys were dropped on a watch event
``pmkeys_verifier_bcrypt_checks_total``            bcrypt checks run (first use of a key per process)
``pmkeys_verifier_bcrypt_pending``                 bcrypt jobs queued or running (the pool's queue)
``pmkeys_verifier_vault_request_duration_seconds`` Vault read latency (records on a cache miss, peppers)
``pmkeys_verifier_vault_errors_total{reason}``     Vault reads that failed, by reason
``pmkeys_verifier_redis_up``                       1 when Redis answers (absent without Redis)
``pmkeys_verifier_redis_errors_total``             Redis calls that failed
``pmkeys_verifier_watch_synced``                   1 while the TenantApiKey watch is listed and watching
``pmkeys_verifier_watch_events_total``             TenantApiKey watch events seen
``pmkeys_verifier_watch_restarts_total``           watch re-lists (errors, 410 Gone, timeouts)
``pmkeys_verifier_watch_lost_seconds``             how long the watch has been broken (0 while it works)
``pmkeys_verifier_vault_up``                       1 while Vault answers the verifier's reads
``pmkeys_verifier_stale_answers_total``            answers from entries Vault could not confirm (outage)
``pmkeys_verifier_stale_entries``                  entries past their TTL (what an outage answers from)
``pmkeys_verifier_usage_flushes_total``            usage flush rounds
``pmkeys_verifier_usage_objects_written_total``    status.usage writes
``pmkeys_verifier_usage_write_failures_total``     status.usage writes that failed (retried later)
``pmkeys_verifier_usage_pending_objects``          objects with usage not yet flushed by this replica
``pmkeys_verifier_preload_keys_total{result}``     start-up preload by result (handed over, loaded from Vault, ...)
``pmkeys_verifier_preload_proven_keys``            receipts the preload found (keys proven before)
``pmkeys_verifier_preload_seconds``                how long the preload ran (so far)
``pmkeys_verifier_preload_finished``               1 once readiness no longer waits for the preload
``pmkeys_verifier_handover_seals_total``           records sealed in Redis for the next replica
``pmkeys_verifier_refreshes_total{result}``        re-reads behind the request path, by result
``pmkeys_verifier_refresh_backlog``                entries past their TTL waiting for a re-read behind
=================================================  =====================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pmkeys.keys.hashing import Hasher
from pmkeys.verify.decision import Outcome
from pmkeys.verify.handover import RedisHandover
from pmkeys.verify.preloading import Preload
from pmkeys.verify.ratelimit import RedisHealth
from pmkeys.verify.refreshing import Refresher
from pmkeys.verify.staleness import VaultHealth
from pmkeys.verify.usage import UsageFlusher
from pmkeys.verify.watching import ObjectWatch

PREFIX = "pmkeys_verifier"

VAULT_SECONDS = Histogram(
    f"{PREFIX}_vault_request_duration_seconds",
    "Latency of the verifier's Vault reads (records on a cache miss, peppers).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
VAULT_ERRORS = Counter(f"{PREFIX}_vault_errors_total", "Verifier Vault reads that failed.", ["reason"])


def observe_vault(seconds: float, error: str | None) -> None:
    """``VaultSession(observe=...)``: called after each Vault call (in the session's pool)."""
    VAULT_SECONDS.observe(seconds)
    if error:
        VAULT_ERRORS.labels(error).inc()


class Stats:
    """Counters the hot path bumps with a plain integer add (no lock, no label lookup);
    :class:`VerifierCollector` exports them when Prometheus scrapes."""

    __slots__ = ("cache_hits", "cache_misses", "invalidations", "negative_hits", "outcomes", "rate_limited")

    def __init__(self) -> None:
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self.rate_limited: dict[str, int] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self.negative_hits = 0
        self.invalidations = 0


class Observed(Protocol):
    """What the collector reads of a verifier."""

    stats: Stats
    hasher: Hasher
    redis_health: RedisHealth | None
    watch: ObjectWatch | None
    flusher: UsageFlusher | None
    vault: VaultHealth
    preload: Preload
    refresher: Refresher

    @property
    def cache_size(self) -> int: ...

    @property
    def stale_entries(self) -> int: ...

    @property
    def pending_usage(self) -> int: ...

    @property
    def handover(self) -> RedisHandover | None: ...


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


class VerifierCollector(Collector):
    def __init__(self, verifier: Observed) -> None:
        self.verifier = verifier

    def collect(self) -> Iterator[Metric]:
        v = self.verifier
        stats = v.stats
        outcomes = CounterMetricFamily(
            f"{PREFIX}_verifications", "Verification decisions, by outcome.", labels=["outcome"]
        )
        for outcome, count in stats.outcomes.items():
            outcomes.add_metric([outcome.value], count)
        yield outcomes
        limited = CounterMetricFamily(
            f"{PREFIX}_rate_limited", "Requests refused by a key's rate limit, by tier.", labels=["tier"]
        )
        for tier, count in sorted(stats.rate_limited.items()):
            limited.add_metric([tier], count)
        yield limited
        lookups = CounterMetricFamily(
            f"{PREFIX}_cache_lookups", "Hot-path cache lookups, by result.", labels=["result"]
        )
        lookups.add_metric(["hit"], stats.cache_hits)
        lookups.add_metric(["miss"], stats.cache_misses)
        lookups.add_metric(["negative"], stats.negative_hits)
        yield lookups
        yield _gauge("cache_entries", "Keys cached now.", v.cache_size)
        yield _counter("cache_invalidations", "Objects whose cached keys a watch event dropped.", stats.invalidations)
        yield _gauge("bcrypt_pending", "bcrypt jobs queued or running.", v.hasher.pending)
        yield _counter("bcrypt_checks", "bcrypt checks run (first use of a key per process).", v.hasher.calls)
        yield from self._redis()
        yield from self._staleness()
        yield from self._watch()
        yield from self._usage()
        yield from self._preload()

    def _redis(self) -> Iterator[Metric]:
        health = self.verifier.redis_health
        if health is None:
            return
        yield _gauge("redis_up", "1 when Redis answers.", 0 if health.down else 1)
        yield _counter("redis_errors", "Redis calls that failed.", health.errors)

    def _staleness(self) -> Iterator[Metric]:
        vault = self.verifier.vault
        yield _gauge("vault_up", "1 while Vault answers the verifier's reads.", 0 if vault.down else 1)
        yield _counter("stale_answers", "Answers from entries Vault could not confirm (outage).", vault.stale_answers)
        stale = self.verifier.stale_entries
        yield _gauge("stale_entries", "Entries past their TTL (what an outage answers from).", stale)
        refresher = self.verifier.refresher
        refreshes = CounterMetricFamily(
            f"{PREFIX}_refreshes", "Records re-read behind the request path, by result.", labels=["result"]
        )
        refreshes.add_metric(["refreshed"], refresher.refreshed)
        refreshes.add_metric(["dropped"], refresher.dropped)
        refreshes.add_metric(["vault_failed"], refresher.failed)
        refreshes.add_metric(["error"], refresher.errors)
        yield refreshes
        yield _gauge("refresh_backlog", "Entries past their TTL waiting to be re-read behind.", refresher.backlog)

    def _watch(self) -> Iterator[Metric]:
        watch = self.verifier.watch
        if watch is None:
            return
        yield _gauge("watch_synced", "1 while the TenantApiKey watch is listed and watching.", int(watch.synced))
        yield _counter("watch_events", "TenantApiKey watch events seen.", watch.events)
        yield _counter("watch_restarts", "Watch re-lists after errors, 410 Gone or timeouts.", watch.restarts)
        yield _gauge("watch_lost_seconds", "How long the watch has been broken (0 while it works).", watch.lost_for())

    def _usage(self) -> Iterator[Metric]:
        flusher = self.verifier.flusher
        if flusher is None:
            return
        yield _counter("usage_flushes", "Usage flush rounds.", flusher.flushes)
        yield _counter("usage_objects_written", "status.usage writes.", flusher.objects_written)
        yield _counter("usage_write_failures", "status.usage writes that failed.", flusher.failures)
        yield _gauge("usage_pending_objects", "Objects with usage not yet flushed here.", self.verifier.pending_usage)

    def _preload(self) -> Iterator[Metric]:
        preload = self.verifier.preload
        keys = CounterMetricFamily(
            f"{PREFIX}_preload_keys", "Start-up preload of proven keys, by result.", labels=["result"]
        )
        keys.add_metric(["handed_over"], preload.handed_over)
        keys.add_metric(["seal_refused"], preload.seals_refused)
        keys.add_metric(["loaded"], preload.loaded)
        keys.add_metric(["skipped"], preload.skipped)
        keys.add_metric(["refused"], preload.refused)
        yield keys
        yield _gauge("preload_proven_keys", "Receipts the start-up preload found.", preload.candidates)
        yield _gauge("preload_seconds", "How long the start-up preload ran (so far).", preload.seconds)
        yield _gauge("preload_finished", "1 once readiness no longer waits for the preload.", int(preload.finished))
        if (handover := self.verifier.handover) is not None:
            yield _counter("handover_seals", "Records sealed in Redis for the next replica.", handover.written)
