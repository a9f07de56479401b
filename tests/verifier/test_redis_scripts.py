"""The Lua scripts in a real Redis: the sliding windows on Redis's own clock and under
concurrency. (No Kubernetes needed: a Redis of the module's own.) The usage scripts are tested
on one Redis and on a Redis Cluster in tests/scale/test_redis_cluster.py."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pmkeys.verify.ratelimit import RedisHealth, SharedWindows, connect
from pmkeys.verify.usage_redis import SharedUsage
from pmkeys.verify.windows import WINDOW_US, WindowLimiter
from pmkeys_dev.redis import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def lone_redis() -> Iterator[RedisServer]:
    server = RedisServer(workdir=Path(tempfile.mkdtemp(prefix="pmkeys-redis-test-")))
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
async def shared(lone_redis: RedisServer) -> AsyncIterator[tuple[SharedWindows, SharedUsage]]:
    client = connect(lone_redis.url, timeout=1)
    health = RedisHealth()
    prefix = f"test-{id(client)}"
    limiter = SharedWindows(client, prefix=prefix, policy="closed", local=WindowLimiter(), health=health)
    yield limiter, SharedUsage(client, prefix=prefix, health=health)
    await client.aclose()


async def test_lua_windows_on_redis_clock(shared: tuple[SharedWindows, SharedUsage]) -> None:
    limiter, _ = shared
    verdicts = [await limiter.hit("kscript", 10, 0, tenant="acme") for _ in range(12)]
    assert all(v is not None for v in verdicts)
    assert [v.allowed for v in verdicts if v] == [True] * 10 + [False] * 2
    assert [v.key.remaining for v in verdicts[:10] if v] == list(range(9, -1, -1))
    refused = verdicts[10]
    assert refused is not None and WINDOW_US - 5_000_000 < refused.retry_us <= WINDOW_US
    assert refused.retry_after == 60 and refused.refused_by == "key"


async def test_concurrent_hits_never_over_admit(shared: tuple[SharedWindows, SharedUsage]) -> None:
    limiter, _ = shared
    verdicts = await asyncio.gather(*(limiter.hit("kconcurrent", 25, 0, tenant="solo") for _ in range(200)))
    assert sum(1 for v in verdicts if v and v.allowed) == 25


async def test_concurrent_keys_of_one_tenant_share_its_limit(shared: tuple[SharedWindows, SharedUsage]) -> None:
    limiter, _ = shared
    hits = [limiter.hit(f"k{n % 2}", 25, 0, tenant="pair", tenant_limit=30) for n in range(200)]
    verdicts = [v for v in await asyncio.gather(*hits) if v is not None]
    admitted = [v for v in verdicts if v.allowed]
    assert len(admitted) == 30 and max(v.key.used for v in admitted) <= 25
    assert {v.refused_by for v in verdicts if not v.allowed} <= {"key", "tenant"}
