"""One Redis client for the verifier, to a single Redis or to a Redis Cluster.

Everything the verifier keeps in Redis is single-slot by construction: a rate-limit script
touches a key's log and its tenant's log, which share the ``{tenant}`` hash tag; a usage script
touches one shard's pending hash (``{NN}``); the usage lock and each proof-of-possession receipt
are one key. So the same scripts run on both; the cluster client routes each call to the master
of its slot and follows ``MOVED``/``ASK`` and failovers.

Both clients fail fast (short timeouts, one immediate retry that replaces a dead pooled
connection); beyond that the failure policy decides (:mod:`~pmkeys.verify.ratelimit`). Their
pools hold up to :data:`MAX_CONNECTIONS` connections (per node for the cluster) and a call that
finds them all busy waits for one (up to the timeout) instead of failing: redis-py's default
pool refuses the 101st concurrent call with ``MaxConnectionsError``, a ``ConnectionError`` that
the limiter took for "Redis is down" — one busy moment turned into a second of the failure
policy for every request.
"""

from __future__ import annotations

import logging
from typing import cast

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 256


def connect_to(url: str, *, timeout: float, cluster: bool) -> aioredis.Redis:
    """A client for ``url``; with ``cluster`` a :class:`~redis.asyncio.RedisCluster` that
    discovers the other nodes from the one named. The cluster client has the same command and
    script methods as the single-node one, which is all its callers use."""
    common = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "decode_responses": True}
    if not cluster:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=timeout, retry=Retry(NoBackoff(), 1), **common
        )
        return aioredis.Redis(connection_pool=pool)
    # The cluster client keeps its own retry policy (it re-reads the slot map between attempts,
    # which is what carries it over a failover); redis-py 8.1 breaks connections under
    # concurrency when given a Retry of ours.
    client = aioredis.RedisCluster.from_url(url, max_connections=MAX_CONNECTIONS, **common)
    return cast(aioredis.Redis, client)


async def prepare(client: aioredis.Redis) -> None:
    """Read a cluster's slot map before the first request: redis-py 8.1's cluster client, used
    concurrently before it has initialized, hands out half-open connections (AttributeError on
    write, not a connection error). Nothing to do for a single Redis. If Redis is down now the
    first calls initialize it instead, and the failure policy covers them."""
    if isinstance(client, aioredis.RedisCluster):
        try:
            await client.initialize()
        except (RedisError, OSError) as exc:
            logger.warning("Redis Cluster not reachable at start (%s); will retry on use", type(exc).__name__)


#: Values fetched per MGET by :func:`scan_values`.
LISTING_BATCH = 500


async def scan_values(client: aioredis.Redis, prefix: str) -> dict[str, str]:
    """Every string key under ``prefix`` with its value, by the rest of its name: one SCAN over
    the key space (every master of a cluster) and MGETs of :data:`LISTING_BATCH` (per slot on a
    cluster). Raises what the client raises when Redis does not answer."""
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    names = [name async for name in client.scan_iter(match=pattern, count=1000)]
    mget = getattr(client, "mget_nonatomic", client.mget)
    found: dict[str, str] = {}
    for start in range(0, len(names), LISTING_BATCH):
        batch = names[start : start + LISTING_BATCH]
        for name, value in zip(batch, await mget(batch), strict=True):
            if value is not None:
                found[name.removeprefix(prefix)] = str(value)
    return found
