"""List-then-watch in a daemon thread, for the watches the product keeps outside kopf.

The official client is synchronous, so the loop runs in a thread and hands what changed to the
event loop with ``call_soon_threadsafe``: ``listener(uid, facts)`` for an object that appeared
or changed, ``listener(uid, None)`` for one that is gone. A subclass says what to list and what
it keeps of each object (its *facts*: a small frozen value, compared to tell a change from an
echo). Lists come in pages (:data:`LIST_PAGE`) of one consistent snapshot. On any error (API
server down, ``410 Gone``) it re-lists: objects that disappeared meanwhile count as gone and
changed ones as changed, so nothing is missed.

:attr:`ListWatch.listed` (every scope has completed a full list once) and
:meth:`ListWatch.live` (watching now, or lost less than a grace period ago) are what readiness
and the users of a watch's cache decide on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)
SERVER_TIMEOUT = 60
#: Objects per page of a (re-)list: one unpaged list of 20,000 operator-written objects held
#: ~200 MB of response and parsed dicts at once, which stayed in the process's RSS.
LIST_PAGE = 500
BACKOFF_MAX = 10.0


class Facts(Protocol):
    @property
    def uid(self) -> str: ...


F = TypeVar("F", bound=Facts)
ListCall = tuple[Callable[..., Any], tuple[str, ...], dict[str, Any]]


class ListWatch(Generic[F]):
    #: What is watched, for the log ("TenantApiKey watch failed: ...").
    what = "object"

    def __init__(
        self,
        listener: Callable[[str, F | None], None],
        *,
        namespaces: list[str] | None = None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
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

    # -- what a subclass says ------------------------------------------------------------
    def list_call(self, namespace: str | None) -> ListCall:
        """The client's list method, its positional and keyword arguments, for one scope."""
        raise NotImplementedError

    def facts(self, body: dict[str, Any]) -> F:
        raise NotImplementedError

    # -- state ---------------------------------------------------------------------------
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
        known: dict[str, F] = {}
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
        logger.warning("%s watch (%s) failed: %s; re-listing", self.what, namespace or "all namespaces", what)

    def _relist(self, namespace: str | None, known: dict[str, F]) -> str:
        call, args, kwargs = self.list_call(namespace)
        seen: dict[str, F] = {}
        token = ""  # pages of one consistent snapshot; an expired token (410) fails the re-list
        while True:
            raw = call(
                *args, **kwargs, limit=LIST_PAGE, _continue=token or None, _request_timeout=30, _preload_content=False
            )
            listing = json.loads(raw.data)  # plain JSON: the client's models cost more than the watch
            for body in listing.get("items", []):
                facts = self.facts(body)
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

    def _watch(self, namespace: str | None, version: str, known: dict[str, F]) -> None:
        call, args, kwargs = self.list_call(namespace)
        while not self._stop.is_set():
            stream = watch.Watch().stream(
                call,
                *args,
                **kwargs,
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
                facts = self.facts(body)
                if kind == "DELETED":
                    known.pop(facts.uid, None)
                    self._deliver(facts.uid, None)
                elif known.get(facts.uid) != facts:
                    known[facts.uid] = facts
                    self._deliver(facts.uid, facts)

    def _deliver(self, uid: str, facts: F | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._listener, uid, facts)
        except RuntimeError:  # the loop is closed: we are shutting down
            self._stop.set()
