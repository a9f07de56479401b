"""The operator's watch of the Secrets it manages: a cache for the reconciler, and the repair
trigger when someone else deletes or edits one.

Kept outside kopf (a :class:`~pmkeys.listwatch.ListWatch` thread): through kopf every managed
Secret took a per-object worker at each start, and kopf's index, the one way to know its list
is complete, waits with a cost that grows with the square of the objects (20,000 Secrets did
not finish). Here the list comes in pages, each Secret is reduced to a :class:`WatchedSecret`
(its owner, version and key; no labels, annotations or managedFields), and
:attr:`SecretCache.listed` says when the first full list is in.

The reconciler uses a cached copy only to *confirm* what the owner index says
(:meth:`pmkeys.reconcile.reconciler.Reconciler._watched_if_steady`), so an operator restart
costs no Secret read per object; anything else is decided on a fresh read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any

from kubernetes import client

from pmkeys.api import vocabulary as v
from pmkeys.listwatch import ListCall, ListWatch

#: How long the first reconciles after a start wait for the first full list of Secrets (after
#: that they read Secrets one by one, as without a cache).
LIST_WAIT_SECONDS = 60.0
#: Called with (namespace, owner name, owner uid) when a Secret changed under its owner.
Repair = Callable[[str, str, str], None]


@dataclass(frozen=True, slots=True)
class WatchedSecret:
    uid: str
    namespace: str
    name: str
    resource_version: str
    owner: tuple[str, str] | None  # (name, uid) of the owning TenantApiKey
    #: data["api-key"], base64 as in the Secret: never in a repr (a log line or a failed
    #: assertion that shows a WatchedSecret must not show the key).
    key: str | None = field(repr=False)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> WatchedSecret:
        meta = body["metadata"]
        owner = next((r for r in meta.get("ownerReferences") or [] if r.get("kind") == v.KIND), None)
        return cls(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            resource_version=meta["resourceVersion"],
            owner=(owner["name"], owner["uid"]) if owner else None,
            key=(body.get("data") or {}).get(v.SECRET_DATA_KEY),
        )

    def as_secret(self) -> client.V1Secret:
        """The reconciler's view: a V1Secret with what it reads (owner, version, key)."""
        owners = (
            [client.V1OwnerReference(api_version=v.API_VERSION, kind=v.KIND, name=self.owner[0], uid=self.owner[1])]
            if self.owner
            else []
        )
        meta = client.V1ObjectMeta(
            name=self.name,
            namespace=self.namespace,
            uid=self.uid,
            resource_version=self.resource_version,
            owner_references=owners,
        )
        return client.V1Secret(metadata=meta, data={v.SECRET_DATA_KEY: self.key} if self.key else {})


class SecretWatch(ListWatch[WatchedSecret]):
    what = "managed Secret"

    def __init__(self, core: client.CoreV1Api, listener: Callable[[str, WatchedSecret | None], None], **kw: Any):
        super().__init__(listener, **kw)
        self._core = core

    def list_call(self, namespace: str | None) -> ListCall:
        selector = {"label_selector": f"{v.MANAGED_BY_LABEL}={v.MANAGED_BY_VALUE}"}
        if namespace is None:
            return self._core.list_secret_for_all_namespaces, (), selector
        return self._core.list_namespaced_secret, (namespace,), selector

    def facts(self, body: dict[str, Any]) -> WatchedSecret:
        return WatchedSecret.from_body(body)


class SecretCache:
    """uid → the Secret as last watched, and (namespace, name) → uid; on the event loop."""

    def __init__(self, repair: Repair, *, ours: Callable[[str, str], bool]) -> None:
        #: Asks for a reconcile of the owner when a Secret it had was deleted or changed.
        self._repair = repair
        #: Whether (owner uid, resourceVersion) is the operator's own last write (its echo).
        self._ours = ours
        self._by_uid: dict[str, WatchedSecret] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self.watch: SecretWatch | None = None
        self._patterns: list[str] | None = None
        self._wait_until = 0.0

    def start(self, core: client.CoreV1Api, *, namespaces: list[str]) -> None:
        """Watch the operator's namespaces (all when empty; with globs, all and keep the matches)."""
        if any(ch in ns for ns in namespaces for ch in "*?[!"):
            self._patterns = list(namespaces)
            namespaces = []
        loop = asyncio.get_running_loop()
        self._wait_until = loop.time() + LIST_WAIT_SECONDS
        self.watch = SecretWatch(core, self.apply, namespaces=namespaces or None, loop=loop)
        self.watch.start()

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.stop()

    async def listed(self) -> bool:
        """Wait until every watched namespace has been listed once (the list's Secrets are
        handed to the loop before the watch says so, and applied first), at most until
        :data:`LIST_WAIT_SECONDS` after the start: a list that never comes (no permission to
        list Secrets, say) delays the first reconciles once, not every new object."""
        loop = asyncio.get_running_loop()
        while self.watch is None or not self.watch.listed:
            if loop.time() > self._wait_until:
                return False
            await asyncio.sleep(0.1)
        return True

    def get(self, namespace: str, name: str) -> client.V1Secret | None:
        uid = self._by_name.get((namespace, name))
        found = self._by_uid.get(uid) if uid else None
        return found.as_secret() if found else None

    def __len__(self) -> int:
        return len(self._by_uid)

    def apply(self, uid: str, secret: WatchedSecret | None) -> None:
        if secret is not None and self._patterns and not any(fnmatch(secret.namespace, p) for p in self._patterns):
            return
        before = self._by_uid.pop(uid, None)
        if before is not None:
            self._by_name.pop((before.namespace, before.name), None)
        if secret is not None:
            self._by_uid[uid] = secret
            self._by_name[(secret.namespace, secret.name)] = uid
        if before is None or before.owner is None:
            return  # first sight (every object is reconciled at start anyway), or no owner
        name, owner_uid = before.owner
        if secret is not None and self._ours(owner_uid, secret.resource_version):
            return
        self._repair(before.namespace, name, owner_uid)
