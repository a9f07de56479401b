"""The tenant-wide limit's current use as Redis counts it, on one Redis and on a real Redis
Cluster (which refuses a script touching two slots): what replicas admitted together, expiring
with the window on Redis's clock, and the set of recently active tenants the writer reads."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pmkeys.verify.ratelimit import RedisHealth, SharedWindows
from pmkeys.verify.redisclient import connect_to, prepare
from pmkeys.verify.tenant_use import SharedActive
from pmkeys.verify.windows import WindowLimiter
from pmkeys_dev.redis import RedisServer
from pmkeys_dev.redis_cluster import RedisCluster

pytestmark = pytest.mark.integration
WINDOW_US = 2_000_000


@pytest.fixture(scope="module")
def single() -> Iterator[RedisServer]:
    server = RedisServer(workdir=Path(tempfile.mkdtemp(prefix="pmkeys-redis-plans-")))
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    started = RedisCluster()
    try:
        started.start()
        yield started
    finally:
        started.cleanup()


async def count_and_expire(url: str, *, is_cluster: bool) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    clients = [connect_to(url, timeout=1, cluster=is_cluster) for _ in range(2)]
    for c in clients:
        await prepare(c)
    health = RedisHealth()
    replicas = [
        SharedWindows(c, prefix=prefix, policy="closed", local=WindowLimiter(window_us=WINDOW_US), health=health)
        for c in clients
    ]
    try:
        now = time.monotonic_ns() // 1000
        for n in range(7):
            verdict = await replicas[n % 2].hit(f"key-{n % 3}", 100, now, tenant="acme", tenant_limit=5)
            assert verdict is not None and verdict.allowed == (n < 5)
        assert await replicas[0].tenant_use("acme", now) == 5, "admitted by both replicas, refused ones left out"
        assert await replicas[1].tenant_use("globex", now) == 0
        active = [SharedActive(c, prefix=prefix, health=health) for c in clients]
        await active[0].add({"acme-ns": "acme"}, at=time.time())
        await active[1].add({"globex-ns": "globex"}, at=time.time() - 300)
        assert await active[1].since(time.time() - 60) == {"acme-ns": "acme"}, "the stale entry is dropped"
        await asyncio.sleep(WINDOW_US / 1e6 + 0.2)
        assert await replicas[1].tenant_use("acme", now) == 0, "the window emptied on Redis's clock"
    finally:
        for c in clients:
            await c.aclose()


def test_one_redis(single: RedisServer) -> None:
    asyncio.run(count_and_expire(single.url, is_cluster=False))


def test_a_redis_cluster(cluster: RedisCluster) -> None:
    asyncio.run(count_and_expire(cluster.url, is_cluster=True))
