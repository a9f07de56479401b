"""The Lua scripts in a real Redis: GCRA agrees with the Python reference, usage counters sum
and are taken exactly once. (No Kubernetes needed: a Redis of the module's own.)"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pmkeys.verify.gcra import LocalLimiter, emission_interval_us
from pmkeys.verify.ratelimit import RedisHealth, SharedLimiter, connect
from pmkeys.verify.usage import SharedUsage, Tally
from pmkeys_dev.redis import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def lone_redis() -> Iterator[RedisServer]:
    server = RedisServer(workdir=Path(tempfile.mkdtemp(prefix="pmkeys-redis-test-")))
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
async def shared(lone_redis: RedisServer) -> AsyncIterator[tuple[SharedLimiter, SharedUsage]]:
    client = connect(lone_redis.url, timeout=1)
    health = RedisHealth()
    prefix = f"test-{id(client)}"
    limiter = SharedLimiter(client, prefix=prefix, policy="closed", local=LocalLimiter(), health=health)
    yield limiter, SharedUsage(client, prefix=prefix, health=health)
    await client.aclose()


async def test_lua_gcra_matches_the_reference(shared: tuple[SharedLimiter, SharedUsage]) -> None:
    limiter, _ = shared
    states = [await limiter.hit("kscript", 10, 0) for _ in range(12)]
    assert all(s is not None for s in states)
    assert [s.allowed for s in states if s] == [True] * 10 + [False] * 2
    assert [s.remaining for s in states[:10] if s] == list(range(9, -1, -1))
    t = emission_interval_us(10)
    for n, state in enumerate(states[:10], start=1):
        assert state is not None and n * t - 500_000 < state.reset_us <= n * t
    refused = states[10]
    assert refused is not None and 0 < refused.retry_us <= t and refused.retry_after == 6


async def test_concurrent_hits_never_over_admit(shared: tuple[SharedLimiter, SharedUsage]) -> None:
    limiter, _ = shared
    states = await asyncio.gather(*(limiter.hit("kconcurrent", 25, 0) for _ in range(200)))
    assert sum(1 for s in states if s and s.allowed) == 25


async def test_usage_counters_sum_and_are_taken_once(shared: tuple[SharedLimiter, SharedUsage]) -> None:
    _, usage = shared
    await usage.push({"uid-1": Tally("ns", "a", 3, 1, 100.0), "uid-2": Tally("ns", "b", 1, 0, 50.0)})
    await usage.push({"uid-1": Tally("ns", "a", 2, 0, 90.0)})
    taken = await usage.take()
    assert taken["uid-1"] == Tally("ns", "a", 5, 1, 100.0)
    assert taken["uid-2"] == Tally("ns", "b", 1, 0, 50.0)
    assert await usage.take() == {}, "taken exactly once"


async def test_one_flusher_per_interval(shared: tuple[SharedLimiter, SharedUsage], lone_redis: RedisServer) -> None:
    _, first = shared
    client = connect(lone_redis.url, timeout=1)
    try:
        second = SharedUsage(client, prefix=first._hash_prefix.split(":usage")[0], health=RedisHealth())
        assert await first.lock(0.5)
        assert not await second.lock(0.5)
        await asyncio.sleep(0.6)
        assert await second.lock(0.5)
    finally:
        await client.aclose()
