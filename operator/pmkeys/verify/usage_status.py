"""``status.usage`` of each TenantApiKey: a copy of its ledger entry, refreshed within a budget.

``kubectl get tak`` (the Last-Used column), the UI and the plugin read ``status.usage``. Writing
it for every active key every interval is what flooded the API server, so the copy is refreshed
at most ``budget`` objects per flush (``usage_status_writes_per_second`` times the interval), the
ones whose copy is oldest first. The copy is exact (cumulative totals from the ledger) and only
ever moves forward: a write reads the object, skips it when its usage is already as new, and
patches with the ``resourceVersion`` it read, so two writers (replicas without Redis, or a lock
handed over mid-flush) never move it back. With ``n`` objects whose usage changes, a copy is at
most ``max(interval, n / writes-per-second)`` behind its ledger entry: ~10 s for a few hundred
active keys, ~500 s for 10,000 at 20 writes/s. The ledgers themselves (``kubectl get cm -n
<verifier namespace> -l penguinmails.io/usage-shard``) are never more than one interval behind.

These writes wake the TenantApiKey watchers, but cost neither a reconcile (the operator acts on
spec and rotate-annotation changes only) nor a cache invalidation (the verifiers' fingerprint
leaves ``usage`` out), and there are at most ``budget`` of them per interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v
from pmkeys.tenantapikey import TIME_FORMAT
from pmkeys.verify.usage import Tally
from pmkeys.verify.usage_ledgers import Book, Totals

T = TypeVar("T")
#: From this many new uids in one namespace, seeding lists the namespace instead of reading each.
LIST_FROM = 20


def rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime(TIME_FORMAT)


def epoch(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def as_status(totals: Totals) -> dict[str, Any]:
    return {
        "requests": totals.requests,
        "errors": totals.errors,
        "lastUsedAt": rfc3339(totals.last_used) if totals.last_used else None,
    }


def behind(current: dict[str, Any] | None, totals: Totals) -> bool:
    """Whether ``status.usage`` (``current``) is older than ``totals``."""
    current = current or {}
    return (
        int(current.get("requests") or 0) < totals.requests
        or int(current.get("errors") or 0) < totals.errors
        or epoch(current.get("lastUsedAt")) < int(totals.last_used)
    )


class ObjectStatus:
    """Reads and writes ``status.usage`` of TenantApiKeys."""

    def __init__(self, api: client.ApiClient, *, threads: int = 4) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="usage-status")
        self.writes = 0

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _get(self, uid: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None if it is gone or another object (uid) has its name now."""
        try:
            body: dict[str, Any] = await self._call(
                lambda: self._custom.get_namespaced_custom_object(v.GROUP, v.VERSION, namespace, v.PLURAL, name)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return body if body["metadata"]["uid"] == uid else None

    async def seed(
        self, new: dict[str, Tally], *, listed: dict[str, asyncio.Future[dict[str, dict[str, Any]]]] | None = None
    ) -> dict[str, Totals]:
        """Where uids new to the ledgers start: the usage their status shows so far. Uids whose
        object is gone (or has another uid now) are left out. A namespace with many new uids
        (the first flush of a fresh installation or an upgrade) is listed, not read object by
        object, and only once for all the shards of one flush (``listed``)."""
        listed = {} if listed is None else listed
        by_namespace: dict[str, dict[str, Tally]] = {}
        for uid, tally in new.items():
            by_namespace.setdefault(tally.namespace, {})[uid] = tally
        found: dict[str, Totals] = {}
        for namespace, tallies in by_namespace.items():
            if len(tallies) >= LIST_FROM:
                if namespace not in listed:
                    listed[namespace] = asyncio.ensure_future(self._list(namespace))
                bodies = await asyncio.shield(listed[namespace])
            else:
                got = [await self._get(uid, t.namespace, t.name) for uid, t in tallies.items()]
                bodies = {b["metadata"]["uid"]: b for b in got if b is not None}
            for uid, tally in tallies.items():
                if uid in bodies:
                    found[uid] = _totals(tally, bodies[uid])
        return found

    async def _list(self, namespace: str) -> dict[str, dict[str, Any]]:
        bodies: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            page: dict[str, Any] = await self._call(
                partial(
                    self._custom.list_namespaced_custom_object,
                    v.GROUP,
                    v.VERSION,
                    namespace,
                    v.PLURAL,
                    limit=500,
                    **({"_continue": token} if token else {}),
                )
            )
            bodies.update((item["metadata"]["uid"], item) for item in page["items"])
            token = page["metadata"].get("continue")
            if not token:
                return bodies

    async def publish(self, uid: str, totals: Totals) -> bool:
        """Bring ``status.usage`` up to ``totals``; False if the object is gone. Raises
        ApiException (409 when someone wrote in between: try again next flush) or OSError."""
        body = await self._get(uid, totals.namespace, totals.name)
        if body is None:
            return False
        if not behind((body.get("status") or {}).get("usage"), totals):
            return True
        patch = {
            "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
            "status": {"usage": as_status(totals)},
        }
        call = partial(
            self._custom.patch_namespaced_custom_object_status,
            v.GROUP,
            v.VERSION,
            totals.namespace,
            v.PLURAL,
            totals.name,
            patch,
        )
        await self._call(call)
        self.writes += 1
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _totals(tally: Tally, body: dict[str, Any]) -> Totals:
    usage = (body.get("status") or {}).get("usage") or {}
    return Totals(
        tally.namespace,
        tally.name,
        int(usage.get("requests") or 0),
        int(usage.get("errors") or 0),
        epoch(usage.get("lastUsedAt")),
    )


class Mirror:
    """Which ledger entries to copy to status next: changed since their last copy, the ones
    copied longest ago (or never) first, at most ``budget`` per flush."""

    def __init__(self, *, budget: int) -> None:
        self.budget = budget
        #: uid → the totals last copied, oldest copy first (dicts keep insertion order).
        self._copied: dict[str, tuple[int, int, float]] = {}

    def due(self, books: dict[int, Book]) -> list[tuple[str, Totals]]:
        changed = [
            (uid, totals)
            for book in books.values()
            for uid, totals in book.items()
            if self._copied.get(uid) != (totals.requests, totals.errors, totals.last_used)
        ]
        order = {uid: n for n, uid in enumerate(self._copied)}
        changed.sort(key=lambda item: order.get(item[0], -1))
        return changed[: self.budget]

    def copied(self, uid: str, totals: Totals) -> None:
        self._copied.pop(uid, None)
        self._copied[uid] = (totals.requests, totals.errors, totals.last_used)

    def forget(self, uid: str) -> None:
        self._copied.pop(uid, None)
