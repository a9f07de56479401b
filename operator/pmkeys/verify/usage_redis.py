"""Pending usage shared by the replicas in Redis, one hash per ledger shard.

Each replica adds its deltas to the pending hash of each shard (``usage_push.lua``); the replica
holding the lock (``usage_lock.lua``, kept while it lives) takes each shard's pending counts
atomically (``usage_take.lua``) and adds them to the ledgers. Every script touches exactly one
Redis key, and the hashes are named ``<prefix>:usage:{NN}`` (a hash tag per shard), so the same
scripts run on one Redis and on Redis Cluster, the shards spread over its masters.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from pmkeys.verify.ratelimit import RedisHealth, lua
from pmkeys.verify.usage import Tally


def pending_name(prefix: str, shard: int) -> str:
    return f"{prefix}:usage:{{{shard:02d}}}"


def tallies_from_fields(flat: list[str]) -> dict[str, Tally]:
    """``usage_take.lua``'s reply (``HGETALL`` of a pending hash) as tallies by uid."""
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    taken: dict[str, Tally] = {}
    for field, value in fields.items():
        uid, _, kind = field.rpartition(":")
        if kind != "o":
            continue
        namespace, _, name = value.partition("/")
        taken[uid] = Tally(
            namespace,
            name,
            int(fields.get(f"{uid}:r", 0)),
            int(fields.get(f"{uid}:e", 0)),
            float(fields.get(f"{uid}:t", 0)),
        )
    return taken


class SharedUsage:
    """Pending usage counters in Redis, summed over replicas."""

    def __init__(self, redis_client: Any, *, prefix: str, health: RedisHealth) -> None:
        self._prefix = prefix
        self._lock_name = f"{prefix}:usage:lock"
        self._token = secrets.token_hex(8)
        self.health = health
        self._push = redis_client.register_script(lua("usage_push.lua"))
        self._take = redis_client.register_script(lua("usage_take.lua"))
        self._lock = redis_client.register_script(lua("usage_lock.lua"))

    async def push(self, grouped: dict[int, dict[str, Tally]]) -> None:
        """Add tallies (grouped by shard) to the pending counters: one script call per shard."""

        async def one(shard: int, tallies: dict[str, Tally]) -> None:
            args: list[str | int] = []
            for uid, t in tallies.items():
                args += [uid, t.namespace, t.name, t.requests, t.errors, f"{t.last_used:.3f}"]
            await self._push(keys=[pending_name(self._prefix, shard)], args=args)

        await asyncio.gather(*(one(shard, tallies) for shard, tallies in grouped.items() if tallies))

    async def lock(self, seconds: float) -> bool:
        """Whether this replica writes usage now (it keeps the lock while it renews it)."""
        ttl = max(1, int(seconds * 1000))
        return bool(await self._lock(keys=[self._lock_name], args=[self._token, ttl]))

    async def take(self, shards: int) -> dict[int, dict[str, Tally]]:
        """Every shard's pending usage, each taken atomically."""

        async def one(shard: int) -> tuple[int, dict[str, Tally]]:
            return shard, tallies_from_fields(await self._take(keys=[pending_name(self._prefix, shard)]))

        taken = await asyncio.gather(*(one(shard) for shard in range(shards)))
        return {shard: tallies for shard, tallies in taken if tallies}
