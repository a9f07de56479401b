"""In-memory fakes of the reconciler's two narrow interfaces (``pmkeys.reconcile.interfaces``).

They keep the semantics the reconciler relies on and nothing more: Secrets with
resourceVersions, uids, 409 on create/replace conflicts and uid preconditions on delete; KV v2
check-and-set (``cas=0`` only if absent, else the exact version) for records and owner
indexes. Failures are injected per method (``fail``), so a test can make "Vault is down during
the record write" happen on exactly one call. The real-server tests in ``tests/operator`` and
``tests/faults`` cover the same behaviour end to end; these make the convergence table fast.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v
from pmkeys.api.plan import EffectivePlan
from pmkeys.keys.digest import Pepper
from pmkeys.reconcile import policies
from pmkeys.vault.errors import CasConflict
from pmkeys.vault.records import KeyRecord, OwnerIndex

_counter = itertools.count(1)


def _next() -> str:
    return str(next(_counter))


@dataclass
class Failures:
    """Exceptions to raise on the next call(s) of a method, by method name."""

    pending: dict[str, list[Exception]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def add(self, method: str, exc: Exception, *, times: int = 1) -> None:
        self.pending.setdefault(method, []).extend([exc] * times)

    def check(self, method: str) -> None:
        self.calls.append(method)
        queue = self.pending.get(method)
        if queue:
            raise queue.pop(0)


@dataclass(frozen=True)
class PostedEvent:
    reason: str
    message: str
    warning: bool


class FakeKube:
    def __init__(self, tenants: dict[str, str | None] | None = None) -> None:
        self.tenants: dict[str, str | None] = dict(tenants or {})
        #: namespace → its TenantPlan; a namespace not in here has none.
        self.plans: dict[str, EffectivePlan] = {}
        self.secrets: dict[tuple[str, str], client.V1Secret] = {}
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.status_patches = 0
        self.events: list[PostedEvent] = []
        self.workloads: dict[tuple[str, str, str], dict[str, str]] = {}
        #: TenantApiKeys as the API server holds them, by (namespace, name).
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        #: The Secret watch's cache: as the watch last delivered them, behind ``secrets`` until
        #: :meth:`watch_caught_up` (empty: no cache, every Secret is read).
        self.watched: dict[tuple[str, str], client.V1Secret] = {}
        self.fail = Failures()

    def watch_caught_up(self) -> None:
        self.watched = copy.deepcopy(self.secrets)

    # -- the interface -------------------------------------------------------------------
    async def get_key_object(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.fail.check("get_key_object")
        found = self.objects.get((namespace, name))
        return copy.deepcopy(found)

    async def add_finalizer(self, namespace: str, name: str, *, finalizers: list[str], resource_version: str) -> None:
        self.fail.check("add_finalizer")
        meta = self.objects[(namespace, name)]["metadata"]
        if str(meta.get("resourceVersion", "")) != resource_version:
            raise ApiException(status=409, reason="Conflict")
        meta["finalizers"] = list(finalizers)

    async def namespace_tenant(self, namespace: str) -> str | None:
        self.fail.check("namespace_tenant")
        if namespace not in self.tenants:
            raise ApiException(status=404, reason="Not Found")
        return self.tenants[namespace]

    async def tenant_plan(self, namespace: str) -> EffectivePlan | None:
        self.fail.check("tenant_plan")
        return self.plans.get(namespace)

    def cached_secret(self, namespace: str, name: str) -> client.V1Secret | None:
        return copy.deepcopy(self.watched.get((namespace, name)))

    async def read_secret(self, namespace: str, name: str) -> client.V1Secret | None:
        self.fail.check("read_secret")
        found = self.secrets.get((namespace, name))
        return copy.deepcopy(found)

    async def create_secret(self, namespace: str, secret: client.V1Secret) -> str:
        self.fail.check("create_secret")
        where = (namespace, secret.metadata.name)
        if where in self.secrets:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(where, secret, uid=_next())

    async def replace_secret(self, namespace: str, secret: client.V1Secret) -> str:
        self.fail.check("replace_secret")
        where = (namespace, secret.metadata.name)
        existing = self.secrets.get(where)
        if existing is None:
            raise ApiException(status=404, reason="Not Found")
        if secret.metadata.resource_version != existing.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(where, secret, uid=existing.metadata.uid)

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        self.fail.check("delete_secret")
        existing = self.secrets.get((namespace, name))
        if existing is not None and (uid is None or existing.metadata.uid == uid):
            del self.secrets[(namespace, name)]

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.fail.check("patch_status")
        self.status_patches += 1
        self.statuses.setdefault((namespace, name), {}).update(copy.deepcopy(status))

    async def post_event(self, obj: dict[str, Any], *, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(PostedEvent(reason, message, warning))

    async def restart_workload(self, namespace: str, kind: str, name: str, when: str, *, key: str) -> bool:
        self.fail.check("restart_workload")
        annotations = self.workloads.get((namespace, kind, name))
        if annotations is None:
            raise ApiException(status=404, reason="Not Found")
        if not policies.restart_opted_in(annotations.get(v.RESTART_OPT_IN_ANNOTATION), key):
            return False
        annotations["restartedAt"] = when
        return True

    # -- for tests -----------------------------------------------------------------------
    def _store(self, where: tuple[str, str], secret: client.V1Secret, *, uid: str) -> str:
        stored = copy.deepcopy(secret)
        stored.metadata.resource_version = _next()
        stored.metadata.uid = uid
        self.secrets[where] = stored
        return str(stored.metadata.resource_version)

    def put_foreign_secret(self, namespace: str, name: str) -> None:
        """A Secret of that name someone else owns."""
        secret = client.V1Secret(metadata=client.V1ObjectMeta(name=name, namespace=namespace), data={})
        self._store((namespace, name), secret, uid=_next())

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]


class FakeStore:
    def __init__(self) -> None:
        self.pepper = Pepper(1, b"p" * 32)
        self.records: dict[str, tuple[KeyRecord, int]] = {}
        self.owners: dict[str, tuple[OwnerIndex, int]] = {}
        self.fail = Failures()

    async def peppers(self) -> list[Pepper]:
        self.fail.check("peppers")
        return [self.pepper]

    async def current_pepper(self) -> Pepper:
        self.fail.check("current_pepper")
        return self.pepper

    async def get_record(self, digest: str) -> tuple[KeyRecord, int] | None:
        self.fail.check("get_record")
        return self.records.get(digest)

    async def create_record(self, digest: str, record: KeyRecord) -> None:
        self.fail.check("create_record")
        existing = self.records.get(digest)
        if existing is not None:
            if existing[0].key_id != record.key_id:
                raise CasConflict(f"record {digest[:8]} exists")
            return
        self.records[digest] = (record, 1)

    async def update_record(self, digest: str, record: KeyRecord, *, version: int) -> None:
        self.fail.check("update_record")
        existing = self.records.get(digest)
        if existing is None or existing[1] != version:
            raise CasConflict(f"record {digest[:8]} is not at version {version}")
        self.records[digest] = (record, version + 1)

    async def get_owner(self, uid: str) -> tuple[OwnerIndex, int] | None:
        self.fail.check("get_owner")
        return self.owners.get(uid)

    async def put_owner(self, uid: str, index: OwnerIndex, *, version: int) -> int:
        self.fail.check("put_owner")
        current = self.owners.get(uid)
        if (current[1] if current else 0) != version:
            raise CasConflict(f"owner index {uid} is not at version {version}")
        self.owners[uid] = (index, version + 1)
        return version + 1

    def states(self) -> dict[str, str]:
        """key id → record state."""
        return {r.key_id: str(r.state) for r, _ in self.records.values()}
