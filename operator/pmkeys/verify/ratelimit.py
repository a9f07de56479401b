"""Rate limits shared by every replica through Redis, and what happens when Redis is down.

One replica needs no Redis: :class:`pmkeys.verify.gcra.LocalLimiter` is exact. Several replicas
share one GCRA state per key in Redis, updated by one Lua script (``gcra.lua``) that reads
Redis's clock and the key's TAT, decides and writes in a single atomic step — so no two
replicas can both spend the last unit, and replicas' clocks never enter into it.

Redis unreachable (connection refused, timeout) is never a crash. The limiter marks Redis down
for ``retry_seconds`` (so a dead Redis costs one failed attempt per second, not one per
request), and applies the configured policy meanwhile:

``open`` (default)
    each replica limits locally with the same GCRA; with ``n`` replicas up to ``n`` times the
    limit can pass while Redis is down. Availability over exactness.
``closed``
    requests that need a limit decision are refused with 503 ``limiter_unavailable``.
    Exactness over availability.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import Literal

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pmkeys.verify.gcra import LocalLimiter, RateState, emission_interval_us

logger = logging.getLogger(__name__)
Policy = Literal["open", "closed"]
#: What a Redis outage looks like from here.
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def lua(name: str) -> str:
    return resources.files("pmkeys.verify").joinpath(name).read_text()


def connect(url: str, *, timeout: float) -> aioredis.Redis:
    """A client that fails fast: short timeouts and one immediate retry (which replaces a pooled
    connection that died with a Redis restart); beyond that the failure policy decides."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        decode_responses=True,
    )


class RedisHealth:
    """Shared "is Redis up" state with a retry delay, so an outage is probed once a second."""

    def __init__(self, *, retry_seconds: float = 1.0) -> None:
        self.retry_seconds = retry_seconds
        self._down_until = 0.0
        self.down = False
        self.errors = 0

    def should_try(self) -> bool:
        return not self.down or time.monotonic() >= self._down_until

    def failed(self, exc: BaseException, *, what: str) -> None:
        self.errors += 1
        if not self.down:
            logger.warning("Redis unreachable (%s: %s); %s", type(exc).__name__, exc, what)
        self.down = True
        self._down_until = time.monotonic() + self.retry_seconds

    def succeeded(self) -> None:
        if self.down:
            logger.warning("Redis reachable again")
        self.down = False


class SharedLimiter:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        policy: Policy,
        local: LocalLimiter,
        health: RedisHealth,
    ) -> None:
        self.policy = policy
        self._prefix = f"{prefix}:rl:"
        self._local = local
        self._health = health
        self._script = client.register_script(lua("gcra.lua"))
        self._outage = (
            "limiting each replica locally (failure policy open)"
            if policy == "open"
            else "refusing requests with 503 (failure policy closed)"
        )

    async def hit(self, name: str, limit: int, now: int) -> RateState | None:
        """The decision for one request; None when Redis is down and the policy is closed."""
        if self._health.should_try():
            try:
                reply = await self._script(keys=[self._prefix + name], args=[emission_interval_us(limit), limit])
            except REDIS_DOWN as exc:
                self._health.failed(exc, what=self._outage)
            else:
                self._health.succeeded()
                allowed, remaining, reset_us, retry_us = (int(x) for x in reply)
                return RateState(bool(allowed), limit, remaining, reset_us, retry_us)
        if self.policy == "open":
            return self._local.hit(name, limit, now)
        return None
