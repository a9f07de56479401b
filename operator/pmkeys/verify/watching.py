"""Revocation and rotation reach the verifier by watching TenantApiKey objects.

The operator changes an object's status whenever its keys change (``keyId`` on rotation,
``previousKeys``, ``revokedKeyIds``, phase), and the user changes its spec to revoke it. Every
such change, and every deletion, drops the cached keys of that object (by uid), so the next
request re-reads the Vault record: a revoked key is refused as soon as the event arrives —
tens of milliseconds, not the cache TTL. ``spec.revoked: true`` and a deletion are acted on at
once, before the operator has even updated Vault (both are final).

What counts as a change is a fingerprint of the spec, the status without ``usage`` and the
deletion mark: the verifiers' own usage writes must not empty their caches.

The official client is synchronous, so the list-then-watch loop runs in a daemon thread and
hands events to the event loop with ``call_soon_threadsafe``. On any error (API server down,
``410 Gone``) it re-lists: objects that disappeared meanwhile count as deleted and changed ones
as changed, so nothing is missed. While the watch is down the cache TTL bounds staleness.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v

logger = logging.getLogger(__name__)
SERVER_TIMEOUT = 60
BACKOFF_MAX = 10.0


@dataclass(frozen=True, slots=True)
class ObjectFacts:
    """What the verifier needs to know about one TenantApiKey."""

    uid: str
    namespace: str
    name: str
    #: Revoked by spec or being deleted: every key it had must be refused now.
    revoked: bool
    fingerprint: str
    #: The current and in-grace key ids (for error reports by key id).
    key_ids: frozenset[str]

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ObjectFacts:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = dict(body.get("status") or {})
        status.pop("usage", None)
        deleting = bool(meta.get("deletionTimestamp"))
        fingerprint = hashlib.sha256(
            json.dumps([spec, status, deleting], sort_keys=True, default=str).encode()
        ).hexdigest()
        key_ids: set[str | None] = {status.get("keyId")}
        key_ids.update(p.get("keyId") for p in status.get("previousKeys") or [])
        return cls(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            revoked=bool(spec.get("revoked")) or deleting,
            fingerprint=fingerprint,
            key_ids=frozenset(k for k in key_ids if k),
        )


#: Called on the event loop with (uid, facts); facts None means the object was deleted.
Listener = Callable[[str, ObjectFacts | None], None]


class ObjectWatch:
    """List-then-watch of TenantApiKeys (all namespaces, or the given ones)."""

    def __init__(
        self,
        api: client.ApiClient,
        listener: Listener,
        *,
        namespaces: list[str] | None = None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._listener = listener
        self._loop = loop
        self._stop = threading.Event()
        scopes: list[str | None] = list(namespaces) if namespaces else [None]
        self._threads = [
            threading.Thread(target=self._run, args=(ns,), name=f"watch-{ns or 'all'}", daemon=True) for ns in scopes
        ]
        self._synced: set[str | None] = set()
        self.events = 0
        self.restarts = 0

    @property
    def synced(self) -> bool:
        """Every watched scope has listed at least once and is watching now."""
        return len(self._synced) == len(self._threads)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    # -- the thread ------------------------------------------------------------------------
    def _run(self, namespace: str | None) -> None:
        known: dict[str, ObjectFacts] = {}
        backoff = 0.5
        while not self._stop.is_set():
            try:
                version = self._relist(namespace, known)
                self._synced.add(namespace)
                backoff = 0.5
                self._watch(namespace, version, known)
            except ApiException as exc:
                if exc.status != 410:
                    self._trouble(namespace, f"API error {exc.status} {exc.reason}")
                    self._stop.wait(backoff)
                    backoff = min(BACKOFF_MAX, backoff * 2)
            except Exception as exc:  # connection errors of every kind: re-list
                self._trouble(namespace, type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
            self.restarts += 1

    def _trouble(self, namespace: str | None, what: str) -> None:
        self._synced.discard(namespace)
        logger.warning(
            "TenantApiKey watch (%s) failed: %s; re-listing (the cache TTL bounds staleness meanwhile)",
            namespace or "all namespaces",
            what,
        )

    def _list_call(self, namespace: str | None) -> tuple[Callable[..., Any], tuple[str, ...]]:
        if namespace is None:
            return self._custom.list_cluster_custom_object, (v.GROUP, v.VERSION, v.PLURAL)
        return self._custom.list_namespaced_custom_object, (v.GROUP, v.VERSION, namespace, v.PLURAL)

    def _relist(self, namespace: str | None, known: dict[str, ObjectFacts]) -> str:
        call, args = self._list_call(namespace)
        listing = call(*args, _request_timeout=30)
        seen: dict[str, ObjectFacts] = {}
        for body in listing.get("items", []):
            facts = ObjectFacts.from_body(body)
            seen[facts.uid] = facts
        for uid in set(known) - set(seen):
            self._deliver(uid, None)
        for uid, facts in seen.items():
            if known.get(uid) != facts:
                self._deliver(uid, facts)
        known.clear()
        known.update(seen)
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, namespace: str | None, version: str, known: dict[str, ObjectFacts]) -> None:
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
                if kind == "BOOKMARK":
                    continue
                self.events += 1
                facts = ObjectFacts.from_body(body)
                if kind == "DELETED":
                    known.pop(facts.uid, None)
                    self._deliver(facts.uid, None)
                elif known.get(facts.uid) != facts:
                    known[facts.uid] = facts
                    self._deliver(facts.uid, facts)

    def _deliver(self, uid: str, facts: ObjectFacts | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._listener, uid, facts)
        except RuntimeError:  # the loop is closed: we are shutting down
            self._stop.set()
