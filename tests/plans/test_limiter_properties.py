"""The limiter means what it says, in memory and in Redis: never more than N admitted in any
60-second window per key and per tenant, nothing refused that fits, nobody gets a fresh bucket.

Hypothesis draws arrival patterns (bursts, steady trickles, pauses of about a window, several
keys of one tenant, limits that change mid-stream) and replays each one through
:class:`WindowLimiter` and through ``windows.lua`` in a real Redis (explicit times, so the same
pattern gives the same answers). A brute-force model over the admitted requests is the judge.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as sync_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from pmkeys.verify.ratelimit import RedisHealth, SharedWindows, connect, window_keys
from pmkeys.verify.windows import WINDOW_US, Verdict, WindowLimiter
from pmkeys_dev.redis import RedisServer

SECOND = 1_000_000
TENANT = "acme"


@dataclass(frozen=True)
class Arrival:
    at: int
    key: int
    key_limit: int
    tenant_limit: int


gaps = st.one_of(
    st.integers(0, 2_000),
    st.integers(0, 5 * SECOND),
    st.sampled_from([WINDOW_US - 1, WINDOW_US, WINDOW_US + 1, WINDOW_US // 2]),
)


@st.composite
def patterns(draw: st.DrawFn, *, changing_limits: bool = True) -> list[Arrival]:
    keys = draw(st.integers(1, 3))
    key_limits = [draw(st.integers(1, 8)) for _ in range(keys)]
    tenant_limits = draw(st.sampled_from([[0], [1, 3, 6, 12]]))  # a plan has a tenant limit or never
    tenant_limit = draw(st.sampled_from(tenant_limits))
    at = draw(st.integers(0, 10 * SECOND))
    arrivals = []
    for _ in range(draw(st.integers(1, 120))):
        at += draw(gaps)
        key = draw(st.integers(0, keys - 1))
        if changing_limits and draw(st.integers(0, 30)) == 0:  # a plan change
            key_limits[key] = draw(st.integers(1, 8))
            tenant_limit = draw(st.sampled_from(tenant_limits))
        arrivals.append(Arrival(at, key, key_limits[key], tenant_limit))
    return arrivals


def in_window(admitted: list[int], now: int) -> list[int]:
    return [t for t in admitted if now - WINDOW_US < t <= now]


def judge(pattern: list[Arrival], verdicts: list[Verdict]) -> None:
    """Every decision is the one the definition demands, and the states tell the truth."""
    per_key: dict[int, list[int]] = {}
    per_tenant: list[int] = []
    for arrival, verdict in zip(pattern, verdicts, strict=True):
        key_log = per_key.setdefault(arrival.key, [])
        key_used = len(in_window(key_log, arrival.at))
        tenant_used = len(in_window(per_tenant, arrival.at))
        fits = key_used < arrival.key_limit and (not arrival.tenant_limit or tenant_used < arrival.tenant_limit)
        assert verdict.allowed == fits, (arrival, key_used, tenant_used, verdict)
        if fits:
            key_log.append(arrival.at)
            per_tenant.append(arrival.at)
            key_used += 1
            tenant_used += 1
        assert verdict.key.used == key_used
        assert verdict.key.remaining == max(0, arrival.key_limit - key_used)
        if not fits:
            # After Retry-After (µs precision) the request fits both limits, and not a µs earlier.
            later = arrival.at + verdict.retry_us
            assert len(in_window(key_log, later)) < arrival.key_limit or not verdict.key.free_us
            assert verdict.retry_us > 0
            before = later - 1
            key_full = len(in_window(key_log, before)) >= arrival.key_limit
            tenant_full = arrival.tenant_limit and len(in_window(per_tenant, before)) >= arrival.tenant_limit
            assert key_full or tenant_full
        if arrival.tenant_limit:
            assert verdict.tenant is not None and verdict.tenant.used == tenant_used
    assert_windows(per_key, per_tenant, pattern)


def assert_windows(per_key: dict[int, list[int]], per_tenant: list[int], pattern: list[Arrival]) -> None:
    """No 60-second window holds more than the largest limit in force (with constant limits:
    more than the limit). Checked at every admission, where the fullest windows start."""
    if any(a.key_limit != pattern[0].key_limit or a.tenant_limit != pattern[0].tenant_limit for a in pattern):
        return  # the per-decision check above covers changing limits exactly
    limit = pattern[0].key_limit
    for admitted in per_key.values():
        for start in admitted:
            assert sum(start <= t < start + WINDOW_US for t in admitted) <= limit
    if pattern[0].tenant_limit:
        for start in per_tenant:
            assert sum(start <= t < start + WINDOW_US for t in per_tenant) <= pattern[0].tenant_limit


def replay_local(pattern: list[Arrival]) -> list[Verdict]:
    limiter = WindowLimiter()
    return [limiter.hit(f"k{a.key}", a.key_limit, a.at, tenant=TENANT, tenant_limit=a.tenant_limit) for a in pattern]


@pytest.fixture(scope="module")
def redis_windows() -> Iterator[tuple[asyncio.AbstractEventLoop, SharedWindows, RedisServer]]:
    server = RedisServer(workdir=Path(tempfile.mkdtemp(prefix="pmkeys-redis-plans-")))
    server.start()
    loop = asyncio.new_event_loop()
    client = connect(server.url, timeout=2)
    windows = SharedWindows(client, prefix="prop", policy="closed", local=WindowLimiter(), health=RedisHealth())
    yield loop, windows, server
    loop.run_until_complete(client.aclose())
    loop.close()
    server.cleanup()


_runs = iter(range(10**9))


def replay_redis(windows: SharedWindows, loop: asyncio.AbstractEventLoop, pattern: list[Arrival]) -> list[Verdict]:
    tenant = f"t{next(_runs)}"  # a fresh tenant per example: no state carried between examples

    async def run() -> list[Verdict]:
        out = []
        for a in pattern:
            verdict = await windows.hit(
                f"k{a.key}", a.key_limit, 0, tenant=tenant, tenant_limit=a.tenant_limit, at=a.at
            )
            assert verdict is not None
            out.append(verdict)
        return out

    return loop.run_until_complete(run())


@given(patterns())
@settings(max_examples=400, deadline=None)
def test_in_memory_limits_admit_exactly_what_fits(pattern: list[Arrival]) -> None:
    judge(pattern, replay_local(pattern))


@pytest.mark.integration
@given(patterns())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_redis_limits_admit_exactly_what_fits_and_agree_with_memory(
    redis_windows: tuple[asyncio.AbstractEventLoop, SharedWindows, RedisServer], pattern: list[Arrival]
) -> None:
    loop, windows, _ = redis_windows
    shared = replay_redis(windows, loop, pattern)
    judge(pattern, shared)
    assert shared == replay_local(pattern)


@st.composite
def conforming(draw: st.DrawFn) -> tuple[int, list[int]]:
    """A client that never sends more than N in any 60-second window (bursts at the edge of
    the window included): what a customer who read "N per minute" may do."""
    limit = draw(st.integers(1, 10))
    times: list[int] = []
    at = 0
    for _ in range(draw(st.integers(1, 80))):
        at += draw(gaps)
        if len(in_window(times, at)) < limit:
            times.append(at)
    return limit, times


@given(conforming())
@settings(max_examples=400, deadline=None)
def test_a_client_within_n_per_minute_is_never_refused(case: tuple[int, list[int]]) -> None:
    limit, times = case
    limiter = WindowLimiter()
    assert all(limiter.hit("k", limit, t, tenant=TENANT, tenant_limit=limit).allowed for t in times)


@pytest.mark.integration
@given(conforming())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_client_within_n_per_minute_is_never_refused_by_redis(
    redis_windows: tuple[asyncio.AbstractEventLoop, SharedWindows, RedisServer], case: tuple[int, list[int]]
) -> None:
    loop, windows, _ = redis_windows
    limit, times = case
    pattern = [Arrival(t, 0, limit, limit) for t in times]
    assert all(v.allowed for v in replay_redis(windows, loop, pattern))


def test_a_greedy_starter_client_gets_60_in_its_first_minute_and_in_every_minute_after() -> None:
    """The GCRA this replaced let 119 through in the first 60 s (a burst of 60 plus one a second)."""
    limiter = WindowLimiter()
    admitted = [t for t in range(0, 180 * SECOND, 1_000) if limiter.hit("k", 60, t).allowed]
    assert sum(t < WINDOW_US for t in admitted) == 60
    for start in admitted:
        assert sum(start <= t < start + WINDOW_US for t in admitted) <= 60
    assert sum(WINDOW_US <= t < 2 * WINDOW_US for t in admitted) == 60


@pytest.mark.integration
def test_redis_keeps_only_the_window_and_forgets_idle_keys(
    redis_windows: tuple[asyncio.AbstractEventLoop, SharedWindows, RedisServer],
) -> None:
    loop, windows, server = redis_windows
    plain = sync_redis.Redis.from_url(server.url)
    key_log, tenant_log = window_keys("prop", "bounded", "k")

    async def run() -> None:
        for n in range(500):
            await windows.hit("k", 50, 0, tenant="bounded", tenant_limit=80, at=n * 100_000)

    loop.run_until_complete(run())
    assert plain.llen(key_log) == 50 and plain.llen(tenant_log) == 50
    assert key_slot(key_log.encode()) == key_slot(tenant_log.encode()), "one slot: the script works on Redis Cluster"
    assert 0 < plain.pttl(key_log) <= WINDOW_US // 1000 + 1000
