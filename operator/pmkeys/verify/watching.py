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

The list-then-watch loop is :class:`pmkeys.listwatch.ListWatch` (a thread, pages, re-list on
any error, so nothing is missed). While the watch is down the cache TTL bounds staleness.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.listwatch import ListCall, ListWatch


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


class ObjectWatch(ListWatch[ObjectFacts]):
    """List-then-watch of TenantApiKeys (all namespaces, or the given ones)."""

    what = "TenantApiKey"

    def __init__(
        self,
        api: client.ApiClient,
        listener: Listener,
        *,
        namespaces: list[str] | None = None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(listener, namespaces=namespaces, loop=loop)
        self._custom = client.CustomObjectsApi(api)

    def list_call(self, namespace: str | None) -> ListCall:
        if namespace is None:
            return self._custom.list_cluster_custom_object, (v.GROUP, v.VERSION, v.PLURAL), {}
        return self._custom.list_namespaced_custom_object, (v.GROUP, v.VERSION, namespace, v.PLURAL), {}

    def facts(self, body: dict[str, Any]) -> ObjectFacts:
        return ObjectFacts.from_body(body)
