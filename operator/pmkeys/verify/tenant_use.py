"""The tenant-wide limit's current use, written into each TenantPlan's ``status.tenantUse``.

What a tenant reads next to "at most 300 requests in any 60 seconds" is how many of those the
last 60 seconds used: the admissions in the tenant's own sliding log, which the limiter keeps
anyway (:mod:`pmkeys.verify.windows` in memory, ``tenant_use.lua`` in Redis, shared by every
replica). So the figure is exact when it is measured; what is bounded is its age.

Why the plan's status, and why not more often: the UI reads it with the tenant user's own token
and ``kubectl pmkeys plan`` with the tenant's kubeconfig, and neither can reach a verifier; the
plan is the one object a tenant may read and never write. Every write wakes the TenantPlan
watchers (the operator, which ignores status-only changes, and each verifier's plan watch), so
the writes are bounded whatever the number of tenants: the replica that writes usage (the usage
lock holder with Redis; each replica without) measures once per flush interval the tenants that
had requests within the last window (and those whose last figure was not 0, until it is), and
writes at most ``budget`` plans per interval — changed figures only, the oldest first. With
``n`` tenants whose figure changes, a figure is at most ``max(1, n / budget)`` intervals old when
written; the status carries ``asOf`` and every reader shows the age ("as of 12 s ago").

Which tenants had requests: the limiter notes ``namespace → tenant`` of requests held to a
plan; each replica adds what it saw to a sorted set in Redis (``<prefix>:rl:tenant-use``, score
the time it saw them), which the writer reads. Without Redis the one replica knows on its own
(several replicas without Redis limit, and so count, each on its own). A tenant that forges its
current use would need to write ``tenantplans/status``, which no tenant role grants.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v
from pmkeys.verify.limiting import Limits
from pmkeys.verify.ratelimit import REDIS_DOWN, RedisHealth
from pmkeys.verify.usage_status import rfc3339
from pmkeys.verify.windows import WINDOW_SECONDS

logger = logging.getLogger(__name__)
T = TypeVar("T")
_wall = time.time


class SharedActive:
    """Which tenants had requests lately, on any replica: a sorted set in Redis (one key)."""

    def __init__(self, redis_client: Any, *, prefix: str, health: RedisHealth) -> None:
        self._client = redis_client
        self._name = f"{prefix}:rl:tenant-use"
        self.health = health

    async def add(self, active: dict[str, str], *, at: float) -> None:
        await self._client.zadd(self._name, {f"{ns}/{tenant}": at for ns, tenant in active.items()})

    async def since(self, when: float) -> dict[str, str]:
        """namespace → tenant seen since ``when``; older entries are dropped."""
        await self._client.zremrangebyscore(self._name, "-inf", f"({when}")
        members = await self._client.zrangebyscore(self._name, when, "+inf")
        texts = (m.decode() if isinstance(m, bytes) else str(m) for m in members)
        return dict(text.split("/", 1) for text in texts if "/" in text)


class TenantUseStatus:
    """Measures the current use of recently active tenants and writes it into their plans."""

    def __init__(
        self,
        api: client.ApiClient,
        limits: Limits,
        *,
        budget: int,
        interval: float,
        shared: SharedActive | None = None,
        threads: int = 2,
    ) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._limits = limits
        self.budget = budget
        self.interval = interval
        self._shared = shared
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tenant-use")
        #: namespace → (tenant, wall time last seen active).
        self._recent: dict[str, tuple[str, float]] = {}
        #: namespace → (figure last written, monotonic time of the write), oldest write first.
        self._written: dict[str, tuple[int, float]] = {}
        self.writes = 0

    @property
    def horizon(self) -> float:
        """How long after its last request a tenant is still measured (its window, and then some)."""
        return WINDOW_SECONDS + 2 * self.interval

    async def share(self) -> None:
        """Every flush, every replica: the tenants this replica saw, to where the writer looks."""
        active = self._limits.take_active()
        if not active:
            return
        now = _wall()
        if self._shared is not None and self._shared.health.should_try():
            try:
                await self._shared.add(active, at=now)
                return
            except REDIS_DOWN as exc:
                self._shared.health.failed(exc, what="measuring tenants' current use on this replica")
        self._recent.update((ns, (tenant, now)) for ns, tenant in active.items())

    async def report(self) -> None:
        """The writer, once per flush: measure, then write the changed figures within the budget."""
        now = _wall()
        await self._gather_recent(now)
        for ns in [ns for ns, (_, seen) in self._recent.items() if seen < now - self.horizon]:
            del self._recent[ns]
        candidates = {ns: tenant for ns, (tenant, _) in self._recent.items() if self._limits.has_plan(ns)}
        measured = await self._measure(candidates)
        idle = [ns for ns, (figure, _) in self._written.items() if ns not in measured and figure]
        measured.update((ns, 0) for ns in idle if not self._limits.has_plan(ns) or ns not in self._recent)
        due = [ns for ns, figure in measured.items() if self._written.get(ns, (None, 0.0))[0] != figure]
        order = {ns: n for n, ns in enumerate(self._written)}
        due.sort(key=lambda ns: order.get(ns, -1))
        await asyncio.gather(*(self._write(ns, measured[ns], at=now) for ns in due[: self.budget]))

    async def _gather_recent(self, now: float) -> None:
        shared = self._shared
        if shared is None or not shared.health.should_try():
            return
        try:
            seen = await shared.since(now - self.horizon)
        except REDIS_DOWN as exc:
            shared.health.failed(exc, what="measuring only the tenants this replica saw")
            return
        self._recent.update((ns, (tenant, now)) for ns, tenant in seen.items())

    async def _measure(self, candidates: dict[str, str]) -> dict[str, int]:
        async def one(ns: str, tenant: str) -> tuple[str, int | None]:
            return ns, await self._limits.tenant_use(tenant)

        found = await asyncio.gather(*(one(ns, tenant) for ns, tenant in candidates.items()))
        return {ns: used for ns, used in found if used is not None}

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _write(self, namespace: str, requests: int, *, at: float) -> None:
        use = {"requests": requests, "windowSeconds": WINDOW_SECONDS, "asOf": rfc3339(at)}
        try:
            await self._call(
                lambda: self._custom.patch_namespaced_custom_object_status(
                    v.GROUP, v.VERSION, namespace, v.PLAN_PLURAL, v.PLAN_NAME, {"status": {"tenantUse": use}}
                )
            )
        except ApiException as exc:
            if exc.status == 404:  # the plan is gone: nothing to show the figure in
                self._written.pop(namespace, None)
                self._recent.pop(namespace, None)
                return
            logger.info("current use of %s not written to its TenantPlan yet: %s", namespace, exc.reason)
            return
        except OSError as exc:
            logger.info("current use of %s not written to its TenantPlan yet: %s", namespace, exc)
            return
        self.writes += 1
        self._written.pop(namespace, None)
        if requests or namespace in self._recent:
            self._written[namespace] = (requests, time.monotonic())

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
