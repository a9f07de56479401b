"""Revocation and rotation reach the verifier by watching TenantApiKey objects.

The operator changes an object's status whenever its keys change (``keyId`` on rotation,
``previousKeys``, ``revokedKeyIds``, phase), and the user changes its spec to revoke it. Every
such change, and every deletion, drops the cached keys of that object (by uid), so the next
request re-reads the Vault record: a revoked key is refused as soon as the event arrives —
tens of milliseconds, not the cache TTL. ``spec.revoked: true`` and a deletion are acted on at
once, before the operator has even updated Vault (both are final).

What counts as a change is a fingerprint of the spec, the status without ``usage`` and the
deletion mark: the verifiers' own usage writes must not empty their caches.

The facts carry what the cache applies to an object's entries without waiting for Vault
(:meth:`pmkeys.verify.cache.Entry.apply`): revoked or deleted, the key ids still in use, the
grace deadlines of ``previousKeys``, ``expiresAt`` and the effective rate limit.

The official client is synchronous, so the list-then-watch loop runs in a daemon thread and
hands events to the event loop with ``call_soon_threadsafe``. On any error (API server down,
``410 Gone``) it re-lists: objects that disappeared meanwhile count as deleted and changed ones
as changed, so nothing is missed. While the watch is down the cache TTL bounds staleness.

Readiness follows from two facts this module keeps: :attr:`ObjectWatch.listed` (every watched
scope has completed a full list once: before that a replica knows nothing of revocations and
must not take traffic) and :meth:`ObjectWatch.live` (watching now, or lost less than a grace
period ago — the cache TTL — during which the entries still answer within the staleness the
product promises when the push path is down). A replica therefore stays ready through an API
server restart; it does not lose readiness just because the watch broke.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v

logger = logging.getLogger(__name__)
SERVER_TIMEOUT = 60
#: Objects per page of a (re-)list: one unpaged list of 20,000 operator-written objects held
#: ~200 MB of response and parsed dicts at once, which stayed in the process's RSS.
LIST_PAGE = 500
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
    #: The current and in-grace key ids (empty while status names none yet).
    key_ids: frozenset[str]
    #: key id → end of its grace period (``status.previousKeys``).
    deadlines: Mapping[str, dt.datetime] = field(default_factory=dict)
    expires_at: dt.datetime | None = None
    #: ``status.effectiveRateLimit`` (None: not reported).
    rate_limit: int | None = None
    tier: str | None = None

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
        previous = [p for p in status.get("previousKeys") or [] if isinstance(p, dict)]
        return cls(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            revoked=bool(spec.get("revoked")) or deleting,
            fingerprint=fingerprint,
            key_ids=_key_ids(status.get("keyId"), previous),
            deadlines=_deadlines(previous),
            expires_at=_instant(spec.get("expiresAt")),
            rate_limit=_integer(status.get("effectiveRateLimit")),
            tier=_text(spec.get("tier")),
        )


def _key_ids(current: object, previous: list[dict[str, Any]]) -> frozenset[str]:
    """The current key id and those in grace (``previousKeys``)."""
    ids = [current, *(p.get("keyId") for p in previous)]
    return frozenset(k for k in ids if isinstance(k, str) and k)


def _deadlines(previous: list[dict[str, Any]]) -> dict[str, dt.datetime]:
    """key id → end of its grace period, for the entries that name both."""
    found = {}
    for entry in previous:
        key_id, when = entry.get("keyId"), _instant(entry.get("notAfter"))
        if isinstance(key_id, str) and key_id and when is not None:
            found[key_id] = when
    return found


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _instant(value: object) -> dt.datetime | None:
    """An RFC 3339 timestamp from the object, or None if absent or not one."""
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


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
        self._listed: set[str | None] = set()
        #: scope → monotonic seconds when its watch broke (absent while it works).
        self._lost: dict[str | None, float] = {}
        self.events = 0
        self.restarts = 0

    @property
    def synced(self) -> bool:
        """Every watched scope has listed at least once and is watching now."""
        return len(self._synced) == len(self._threads)

    @property
    def listed(self) -> bool:
        """Every watched scope has completed a full list at least once since start."""
        return len(self._listed) == len(self._threads)

    def lost_for(self) -> float:
        """Seconds since the oldest current break of a scope's watch (0 while all work)."""
        lost = list(self._lost.values())
        return time.monotonic() - min(lost) if lost else 0.0

    def live(self, grace: float) -> bool:
        """Listed once, and watching now or for less than ``grace`` seconds not."""
        return self.listed and self.lost_for() < grace

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
                self._listed.add(namespace)
                self._lost.pop(namespace, None)
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
        self._lost.setdefault(namespace, time.monotonic())
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
        seen: dict[str, ObjectFacts] = {}
        token = ""  # pages of one consistent snapshot; an expired token (410) fails the re-list
        while True:
            listing = call(*args, limit=LIST_PAGE, _continue=token or None, _request_timeout=30)
            for body in listing.get("items", []):
                facts = ObjectFacts.from_body(body)
                seen[facts.uid] = facts
            token = listing["metadata"].get("continue") or ""
            if not token:
                break
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
