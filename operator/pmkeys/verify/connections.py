"""The verifier's links beyond Vault: Redis (shared rate limits and usage, for several replicas)
and Kubernetes (the TenantApiKey and TenantPlan watches, usage written to status).

Both are optional: a verifier with neither is what the tests and the benchmark build (Vault
only, limits in memory, nothing pushed). They are built from settings here, so the pipeline in
:mod:`pmkeys.verify.verifier` does not know how a Redis URL or a kubeconfig becomes a client.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client as kube_client
from redis import asyncio as aioredis

from pmkeys.config import VerifierSettings
from pmkeys.kubeclient import api_client
from pmkeys.verify.handover import RedisHandover
from pmkeys.verify.limiting import Limits
from pmkeys.verify.plans import PlanBook, PlanWatch
from pmkeys.verify.possession import RedisReceipts
from pmkeys.verify.ratelimit import RedisHealth, SharedWindows
from pmkeys.verify.redisclient import connect_to, prepare
from pmkeys.verify.tenant_use import SharedActive, TenantUseStatus
from pmkeys.verify.usage import UsageCounter, UsageFlusher
from pmkeys.verify.usage_ledgers import Ledgers
from pmkeys.verify.usage_redis import SharedUsage
from pmkeys.verify.usage_status import Mirror, ObjectStatus
from pmkeys.verify.watching import Listener, ObjectWatch
from pmkeys.verify.windows import WindowLimiter

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "pmkeys-system"


@dataclass
class Redis:
    """One Redis client and what shares it (rate limits, usage)."""

    client: aioredis.Redis
    health: RedisHealth
    limiter: SharedWindows
    usage: SharedUsage
    receipts: RedisReceipts
    #: Records sealed for the next replica (None: ``PMKEYS_HANDOVER=false``).
    handover: RedisHandover | None = None

    @classmethod
    def connect(cls, settings: VerifierSettings, *, local: WindowLimiter) -> Redis:
        """Connect as ``settings`` say; ``local`` is the limiter the open failure policy uses."""
        redis = connect_to(settings.redis_url, timeout=settings.redis_timeout, cluster=settings.redis_cluster)
        health = RedisHealth()
        limiter = SharedWindows(
            redis, prefix=settings.redis_prefix, policy=settings.redis_failure_policy, local=local, health=health
        )
        usage = SharedUsage(redis, prefix=settings.redis_prefix, health=health)
        receipts = RedisReceipts(redis, prefix=settings.redis_prefix, health=health)
        handover = None
        if settings.handover:
            handover = RedisHandover(redis, prefix=settings.redis_prefix, health=health, ttl=settings.trusted_seconds)
        return cls(redis, health, limiter, usage, receipts, handover)

    async def prepare(self) -> None:
        """Before the first request (a cluster's slot map; see :func:`prepare`)."""
        await prepare(self.client)


@dataclass
class Kubernetes:
    """The API server: the TenantApiKey watch (optional) and the usage writer."""

    api: kube_client.ApiClient
    watch: bool = True
    namespaces: list[str] = field(default_factory=list)
    usage_flush_seconds: float = 10.0
    usage_namespace: str = ""
    usage_shards: int = 16
    usage_status_writes_per_second: float = 10.0
    tenant_use_writes_per_second: float = 5.0
    redis_prefix: str = "pmkeys"

    @classmethod
    def from_settings(cls, settings: VerifierSettings, *, api: kube_client.ApiClient | None = None) -> Kubernetes:
        """``api``, else a client for ``settings.kubeconfig`` (in-cluster when empty)."""
        return cls(
            api or api_client(settings.kubeconfig),
            watch=settings.watch,
            namespaces=settings.namespaces,
            usage_flush_seconds=settings.usage_flush_seconds,
            usage_namespace=settings.usage_namespace or own_namespace(),
            usage_shards=settings.usage_shards,
            usage_status_writes_per_second=settings.usage_status_writes_per_second,
            tenant_use_writes_per_second=settings.tenant_use_writes_per_second,
            redis_prefix=settings.redis_prefix,
        )

    def watcher(self, listener: Listener) -> ObjectWatch:
        return ObjectWatch(self.api, listener, namespaces=self.namespaces, loop=asyncio.get_running_loop())

    def plan_watcher(self, book: PlanBook) -> PlanWatch:
        return PlanWatch(self.api, book, namespaces=self.namespaces, loop=asyncio.get_running_loop())

    def flusher(self, usage: UsageCounter, *, redis: Redis | None, limits: Limits | None = None) -> UsageFlusher:
        """The usage writer (with Redis: shared pending counts) and, given the limits, the
        tenant-wide limit's current use written into the plans."""
        ledgers = Ledgers(self.api, namespace=self.usage_namespace or own_namespace(), shards=self.usage_shards)
        budget = max(1, int(self.usage_status_writes_per_second * self.usage_flush_seconds))
        return UsageFlusher(
            usage,
            ledgers,
            ObjectStatus(self.api),
            Mirror(budget=budget),
            interval=self.usage_flush_seconds,
            shared=redis.usage if redis is not None else None,
            tenant_use=self.tenant_use(limits, redis) if limits is not None else None,
        )

    def tenant_use(self, limits: Limits, redis: Redis | None) -> TenantUseStatus:
        active = SharedActive(redis.client, prefix=self.redis_prefix, health=redis.health) if redis else None
        budget = max(1, int(self.tenant_use_writes_per_second * self.usage_flush_seconds))
        return TenantUseStatus(self.api, limits, budget=budget, interval=self.usage_flush_seconds, shared=active)


def own_namespace() -> str:
    """The pod's namespace (where its ServiceAccount lives), else ``pmkeys-system``."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or DEFAULT_NAMESPACE
    except OSError:
        return DEFAULT_NAMESPACE
