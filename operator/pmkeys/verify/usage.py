"""Usage (``requests``, ``errors``, ``lastUsedAt``) counted on the hot path, flushed to
``status.usage`` of each TenantApiKey in batches.

What is counted, per TenantApiKey (a rotation's old and new keys add to the same numbers):
every request that presented one of its usable keys is a *request*; those refused for a missing
scope or the rate limit, and those the API reports as failed (``POST /v1/keys/{id}/errors``),
are also *errors*. ``lastUsedAt`` is the last such request. Keys that are malformed, unknown,
revoked or expired belong to no usable object and count nowhere (metrics see them).

The hot path only adds to an in-memory :class:`Tally`. Every ``usage_flush_seconds``:

* without Redis, each replica adds its own deltas to the object's ``status.usage`` with a
  read-modify-write guarded by ``resourceVersion`` (a conflict re-reads and retries), so
  replicas sum without a coordinator and nothing is counted twice;
* with Redis, each replica adds its deltas to shared pending counters (``usage_push.lua``), and
  one replica per interval (a ``SET NX PX`` lock) takes them atomically (``usage_take.lua``)
  and writes them: one status write per object per interval, however many replicas. Pending
  counters live in Redis, so a verifier that dies loses at most one interval of its own counts.
  If Redis is down, replicas fall back to writing their deltas directly.

Only objects that saw traffic are written. A write that fails (API server down) puts the deltas
back to be retried next interval; an object that is gone (or was recreated: another uid) drops
them. On shutdown the verifier flushes once more.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import redis.asyncio as aioredis
import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v
from pmkeys.verify.ratelimit import REDIS_DOWN, RedisHealth, lua

T = TypeVar("T")
logger = logging.getLogger(__name__)
CONFLICT_RETRIES = 8
#: What an unreachable or failing API server looks like from here.
KUBE_DOWN = (ApiException, OSError, urllib3.exceptions.HTTPError)


@dataclass(slots=True)
class Tally:
    namespace: str
    name: str
    requests: int = 0
    errors: int = 0
    #: Epoch seconds of the last request (0: none in this tally).
    last_used: float = 0.0

    def merge(self, other: Tally) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.last_used = max(self.last_used, other.last_used)


class UsageCounter:
    """Pending usage deltas of this process, ``uid → Tally``."""

    def __init__(self) -> None:
        self._pending: dict[str, Tally] = {}

    def tally(self, uid: str, namespace: str, name: str) -> Tally:
        found = self._pending.get(uid)
        if found is None:
            found = self._pending[uid] = Tally(namespace, name)
        return found

    def take(self) -> dict[str, Tally]:
        taken, self._pending = self._pending, {}
        return taken

    def restore(self, tallies: dict[str, Tally]) -> None:
        for uid, tally in tallies.items():
            self.tally(uid, tally.namespace, tally.name).merge(tally)

    def __len__(self) -> int:
        return len(self._pending)


def rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def added(current: dict[str, Any] | None, tally: Tally) -> dict[str, Any]:
    """``status.usage`` after adding ``tally`` to ``current``."""
    current = current or {}
    last = max(_epoch(current.get("lastUsedAt")), tally.last_used)
    return {
        "requests": int(current.get("requests") or 0) + tally.requests,
        "errors": int(current.get("errors") or 0) + tally.errors,
        "lastUsedAt": rfc3339(last) if last else None,
    }


class StatusWriter:
    """Adds deltas to ``status.usage`` (read, add, patch with the resourceVersion read)."""

    def __init__(self, api: client.ApiClient, *, threads: int = 4) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="usage")

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def add(self, uid: str, tally: Tally) -> None:
        """Raises ApiException/OSError when the API server fails (the caller retries later)."""
        for _ in range(CONFLICT_RETRIES):
            try:
                body = await self._call(
                    lambda: self._custom.get_namespaced_custom_object(
                        v.GROUP, v.VERSION, tally.namespace, v.PLURAL, tally.name
                    )
                )
                if body["metadata"]["uid"] != uid:
                    return  # deleted and recreated under the same name: not this object
                patch = {
                    "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                    "status": {"usage": added((body.get("status") or {}).get("usage"), tally)},
                }
                await self._call(
                    partial(
                        self._custom.patch_namespaced_custom_object_status,
                        v.GROUP,
                        v.VERSION,
                        tally.namespace,
                        v.PLURAL,
                        tally.name,
                        patch,
                    )
                )
                return
            except ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    raise
        raise ApiException(status=409, reason=f"usage of {tally.namespace}/{tally.name} kept conflicting")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class SharedUsage:
    """Pending usage counters in Redis, summed over replicas."""

    def __init__(self, redis_client: aioredis.Redis, *, prefix: str, health: RedisHealth) -> None:
        self._redis = redis_client
        self._hash_prefix = f"{prefix}:usage:pending:"
        self._dirty = f"{prefix}:usage:dirty"
        self._lock = f"{prefix}:usage:lock"
        self._token = secrets.token_hex(8)
        self.health = health
        self._push = redis_client.register_script(lua("usage_push.lua"))
        self._take = redis_client.register_script(lua("usage_take.lua"))

    async def push(self, tallies: dict[str, Tally]) -> None:
        if not tallies:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for uid, t in tallies.items():
                await self._push(
                    keys=[self._hash_prefix + uid, self._dirty],
                    args=[uid, t.namespace, t.name, t.requests, t.errors, f"{t.last_used:.3f}"],
                    client=pipe,
                )
            await pipe.execute()

    async def lock(self, seconds: float) -> bool:
        """Whether this replica flushes this interval."""
        return bool(await self._redis.set(self._lock, self._token, nx=True, px=max(1, int(seconds * 1000))))

    async def take(self, *, batch: int = 1000) -> dict[str, Tally]:
        reply = await self._take(keys=[self._dirty], args=[self._hash_prefix, batch])
        taken: dict[str, Tally] = {}
        for uid, flat in zip(reply[::2], reply[1::2], strict=True):
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if "namespace" not in fields:
                continue
            taken[uid] = Tally(
                fields["namespace"],
                fields["name"],
                int(fields.get("requests", 0)),
                int(fields.get("errors", 0)),
                float(fields.get("last_used", 0)),
            )
        return taken


class UsageFlusher:
    def __init__(
        self,
        counter: UsageCounter,
        writer: StatusWriter,
        *,
        interval: float,
        shared: SharedUsage | None = None,
        concurrency: int = 8,
    ) -> None:
        self.counter = counter
        self.writer = writer
        self.interval = interval
        self.shared = shared
        self._limit = asyncio.Semaphore(concurrency)
        self.flushes = 0
        self.objects_written = 0
        self.failures = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # the loop must survive anything; the counts stay pending
                logger.exception("usage flush failed")

    async def flush(self) -> None:
        local = self.counter.take()
        shared = self.shared
        if shared is not None and shared.health.should_try():
            try:
                await shared.push(local)
                local = {}
                if await shared.lock(self.interval):
                    taken = await shared.take()
                    unwritten = await self._write(taken)
                    await self._push_back(shared, unwritten)
                shared.health.succeeded()
            except REDIS_DOWN as exc:
                shared.health.failed(exc, what="writing usage to status directly")
        self.counter.restore(await self._write(local))
        self.flushes += 1

    async def _push_back(self, shared: SharedUsage, unwritten: dict[str, Tally]) -> None:
        try:
            await shared.push(unwritten)
        except REDIS_DOWN:
            self.counter.restore(unwritten)
            raise

    async def _write(self, tallies: dict[str, Tally]) -> dict[str, Tally]:
        """Write every tally; returns the ones that could not be written."""
        failed: dict[str, Tally] = {}

        async def one(uid: str, tally: Tally) -> None:
            async with self._limit:
                try:
                    await self.writer.add(uid, tally)
                    self.objects_written += 1
                except KUBE_DOWN as exc:
                    self.failures += 1
                    failed[uid] = tally
                    logger.warning(
                        "could not write usage of %s/%s: %s",
                        tally.namespace,
                        tally.name,
                        getattr(exc, "reason", type(exc).__name__),
                    )

        await asyncio.gather(*(one(uid, t) for uid, t in tallies.items()))
        return failed
