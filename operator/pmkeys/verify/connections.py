"""The verifier's links beyond Vault: Redis (shared rate limits and usage, for several replicas)
and Kubernetes (the TenantApiKey and TenantPlan watches, usage written to status).

Both are optional: a verifier with neither is what the tests and the benchmark build (Vault
only, limits in memory, nothing pushed). They are built from settings here, so the pipeline in
:mod:`pmkeys.verify.verifier` does not know how a Redis URL or a kubeconfig becomes a client.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from kubernetes import client as kube_client
from redis import asyncio as aioredis

from pmkeys.config import VerifierSettings
from pmkeys.kubeclient import api_client
from pmkeys.verify.plans import PlanBook, PlanWatch
from pmkeys.verify.possession import RedisReceipts
from pmkeys.verify.ratelimit import RedisHealth, SharedWindows, connect
from pmkeys.verify.usage import SharedUsage, StatusWriter, UsageCounter, UsageFlusher
from pmkeys.verify.watching import Listener, ObjectWatch
from pmkeys.verify.windows import WindowLimiter


@dataclass
class Redis:
    """One Redis client and what shares it (rate limits, usage)."""

    client: aioredis.Redis
    health: RedisHealth
    limiter: SharedWindows
    usage: SharedUsage
    receipts: RedisReceipts

    @classmethod
    def connect(cls, settings: VerifierSettings, *, local: WindowLimiter) -> Redis:
        """Connect as ``settings`` say; ``local`` is the limiter the open failure policy uses."""
        redis = connect(settings.redis_url, timeout=settings.redis_timeout)
        health = RedisHealth()
        limiter = SharedWindows(
            redis, prefix=settings.redis_prefix, policy=settings.redis_failure_policy, local=local, health=health
        )
        usage = SharedUsage(redis, prefix=settings.redis_prefix, health=health)
        return cls(redis, health, limiter, usage, RedisReceipts(redis, prefix=settings.redis_prefix, health=health))


@dataclass
class Kubernetes:
    """The API server: the TenantApiKey watch (optional) and the usage writer."""

    api: kube_client.ApiClient
    watch: bool = True
    namespaces: list[str] = field(default_factory=list)
    usage_flush_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: VerifierSettings, *, api: kube_client.ApiClient | None = None) -> Kubernetes:
        """``api``, else a client for ``settings.kubeconfig`` (in-cluster when empty)."""
        return cls(
            api or api_client(settings.kubeconfig),
            watch=settings.watch,
            namespaces=settings.namespaces,
            usage_flush_seconds=settings.usage_flush_seconds,
        )

    def watcher(self, listener: Listener) -> ObjectWatch:
        return ObjectWatch(self.api, listener, namespaces=self.namespaces, loop=asyncio.get_running_loop())

    def plan_watcher(self, book: PlanBook) -> PlanWatch:
        return PlanWatch(self.api, book, namespaces=self.namespaces, loop=asyncio.get_running_loop())

    def flusher(self, usage: UsageCounter, *, shared: SharedUsage | None) -> UsageFlusher:
        return UsageFlusher(usage, StatusWriter(self.api), interval=self.usage_flush_seconds, shared=shared)
