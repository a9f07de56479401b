"""Rate limits shared by every replica through Redis, and what happens when Redis is down.

One replica needs no Redis: :class:`pmkeys.verify.windows.WindowLimiter` is exact. Several
replicas share one sliding log per key and one per tenant in Redis (:class:`SharedWindows`),
checked and updated by one Lua script (``windows.lua``) that reads Redis's clock, expires both
logs, decides and records in a single atomic step and one round trip — so no two replicas can
both spend the last unit, a request refused by one limit spends neither, and replicas' clocks
never enter into it. Both logs of a request carry the tenant as their hash tag
(``<prefix>:rl:{<tenant>}:key:<keyId>`` and ``<prefix>:rl:{<tenant>}:tenant``), so they live in
one slot and the same script runs unchanged on Redis Cluster.

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

from pmkeys.verify.windows import LimitState, Verdict, WindowLimiter

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


def window_keys(prefix: str, tenant: str, key_id: str) -> tuple[str, str]:
    """The Redis names of a key's log and its tenant's log: one hash slot (``{tenant}``)."""
    return f"{prefix}:rl:{{{tenant}}}:key:{key_id}", f"{prefix}:rl:{{{tenant}}}:tenant"


def verdict_from_reply(reply: list[int], key_limit: int, tenant_limit: int) -> Verdict:
    """``windows.lua``'s reply as a :class:`Verdict`."""
    allowed, k_used, k_next, k_free, t_used, t_next, t_free = (int(x) for x in reply)
    key = LimitState(key_limit, k_used, k_next, k_free)
    tenant = LimitState(tenant_limit, t_used, t_next, t_free) if tenant_limit else None
    return Verdict(bool(allowed), key, tenant)


class SharedWindows:
    """Per-key and per-tenant sliding windows in Redis, with the failure policy's fallback."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        policy: Policy,
        local: WindowLimiter,
        health: RedisHealth,
    ) -> None:
        self.policy = policy
        self._prefix = prefix
        self._local = local
        self._health = health
        self._window = local.window_us
        self._script = client.register_script(lua("windows.lua"))
        self._use = client.register_script(lua("tenant_use.lua"))
        self._outage = (
            "limiting each replica locally (failure policy open)"
            if policy == "open"
            else "refusing requests with 503 (failure policy closed)"
        )

    async def hit(
        self, key_id: str, key_limit: int, now: int, *, tenant: str, tenant_limit: int = 0, at: int | None = None
    ) -> Verdict | None:
        """The decision for one request; None when Redis is down and the policy is closed.

        ``now`` is this process's clock, used only by the local fallback; Redis decides on its
        own clock unless ``at`` (tests replaying arrival patterns) says otherwise.
        """
        if self._health.should_try():
            keys = window_keys(self._prefix, tenant, key_id)
            args = [self._window, key_limit, tenant_limit, "" if at is None else at]
            try:
                reply = await self._script(keys=list(keys), args=args)
            except REDIS_DOWN as exc:
                self._health.failed(exc, what=self._outage)
            else:
                self._health.succeeded()
                return verdict_from_reply(reply, key_limit, tenant_limit)
        if self.policy == "open":
            return self._local.hit(key_id, key_limit, now, tenant=tenant, tenant_limit=tenant_limit)
        return None

    async def tenant_use(self, tenant: str, now: int) -> int | None:
        """Admissions of ``tenant`` in the window (Redis's clock); while Redis is down, this
        replica's own count (policy open) or None (closed)."""
        if self._health.should_try():
            try:
                used = await self._use(keys=[window_keys(self._prefix, tenant, "")[1]], args=[self._window])
            except REDIS_DOWN as exc:
                self._health.failed(exc, what=self._outage)
            else:
                return int(used)
        return self._local.tenant_use(tenant, now) if self.policy == "open" else None
