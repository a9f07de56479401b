"""Tenant plans as the verifier sees them: namespace → the plan in force, kept current by a watch.

A plan change must reach every verifier within seconds, without re-issuing keys and without
resetting anybody's counters. So the verifier watches ``TenantPlan`` objects itself and looks the
plan up on every request (one dict lookup): the tenant-wide limit and the per-key ceiling apply
from the next request on, and the limiter keeps its logs (a limit is an argument of each
check, not part of the state). Nothing waits for the operator: a downgrade binds at once even
if the operator is down. An upgrade of a key that names no tier of its own (it follows the
plan's tier) also needs the key's record to change; the operator does that and the key watch
then drops the cached entry.

A namespace without a TenantPlan has no tenant-wide limit and no ceiling beyond the key's own
tier (``plans.withoutPlan: Deny``, the chart's default, refuses keys there at admission).

The official client is synchronous: list-then-watch runs in a daemon thread and hands each plan
to the event loop with ``call_soon_threadsafe``; on any error it re-lists after a backoff.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v
from pmkeys.api.plan import EffectivePlan, plan_from_body

logger = logging.getLogger(__name__)
SERVER_TIMEOUT = 60
BACKOFF_MAX = 10.0


class PlanBook:
    """namespace → EffectivePlan; the hot path reads :attr:`by_namespace` directly."""

    def __init__(self) -> None:
        self.by_namespace: dict[str, EffectivePlan] = {}
        self.changes = 0

    def set(self, namespace: str, plan: EffectivePlan | None) -> None:
        if plan is None:
            self.by_namespace.pop(namespace, None)
        else:
            self.by_namespace[namespace] = plan
        self.changes += 1

    def replace(self, plans: dict[str, EffectivePlan]) -> None:
        self.by_namespace.clear()
        self.by_namespace.update(plans)
        self.changes += 1


class PlanWatch:
    """List-then-watch of TenantPlans (all namespaces, or the given ones) into a :class:`PlanBook`."""

    def __init__(
        self,
        api: client.ApiClient,
        book: PlanBook,
        *,
        namespaces: list[str] | None = None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._book = book
        self._loop = loop
        self._stop = threading.Event()
        scopes: list[str | None] = list(namespaces) if namespaces else [None]
        self._threads = [
            threading.Thread(target=self._run, args=(ns,), name=f"plans-{ns or 'all'}", daemon=True) for ns in scopes
        ]
        self._synced: set[str | None] = set()
        self._listed: set[str | None] = set()

    @property
    def synced(self) -> bool:
        return len(self._synced) == len(self._threads)

    @property
    def listed(self) -> bool:
        """Every watched scope has completed a full list once (readiness: the plans are known;
        while the watch is down the last-known plans keep applying)."""
        return len(self._listed) == len(self._threads)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, namespace: str | None) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                version = self._relist(namespace)
                self._synced.add(namespace)
                self._listed.add(namespace)
                backoff = 0.5
                self._watch(namespace, version)
            except ApiException as exc:
                if exc.status != 410:
                    self._trouble(namespace, f"API error {exc.status} {exc.reason}", backoff)
                    backoff = min(BACKOFF_MAX, backoff * 2)
            except Exception as exc:  # connection errors of every kind: re-list
                self._trouble(namespace, type(exc).__name__, backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)

    def _trouble(self, namespace: str | None, what: str, backoff: float) -> None:
        self._synced.discard(namespace)
        logger.warning(
            "TenantPlan watch (%s) failed: %s; re-listing (the plans last seen stay in force)",
            namespace or "all namespaces",
            what,
        )
        self._stop.wait(backoff)

    def _list_call(self, namespace: str | None) -> tuple[Callable[..., Any], tuple[str, ...]]:
        if namespace is None:
            return self._custom.list_cluster_custom_object, (v.GROUP, v.VERSION, v.PLAN_PLURAL)
        return self._custom.list_namespaced_custom_object, (v.GROUP, v.VERSION, namespace, v.PLAN_PLURAL)

    def _relist(self, namespace: str | None) -> str:
        call, args = self._list_call(namespace)
        listing = call(*args, _request_timeout=30)
        plans = {}
        for body in listing.get("items", []):
            plan = plan_from_body(body)
            if plan is not None:
                plans[body["metadata"]["namespace"]] = plan
        if namespace is None:
            self._deliver(lambda: self._book.replace(plans))
        else:
            self._deliver(lambda: self._book.set(namespace, plans.get(namespace)))
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, namespace: str | None, version: str) -> None:
        call, args = self._list_call(namespace)
        while not self._stop.is_set():
            stream = watch.Watch().stream(
                call,
                *args,
                deserialize=False,
                resource_version=version,
                timeout_seconds=SERVER_TIMEOUT,
                allow_watch_bookmarks=True,
                _request_timeout=(5, SERVER_TIMEOUT + 30),
            )
            for event in stream:
                if self._stop.is_set():
                    return
                kind, body = event["type"], event["object"]
                version = body["metadata"]["resourceVersion"]
                if kind == "BOOKMARK" or body["metadata"].get("name") != v.PLAN_NAME:
                    continue
                plan = None if kind == "DELETED" else plan_from_body(body)
                self._deliver(functools.partial(self._book.set, body["metadata"]["namespace"], plan))

    def _deliver(self, change: Callable[[], None]) -> None:
        try:
            self._loop.call_soon_threadsafe(change)
        except RuntimeError:  # the loop is closed: we are shutting down
            self._stop.set()
