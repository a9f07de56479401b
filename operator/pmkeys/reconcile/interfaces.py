"""The two narrow interfaces the reconciler needs, as protocols.

:class:`~pmkeys.reconcile.kube.KubeApi` and :class:`~pmkeys.vault.store.KeyStore` implement
them against the real servers; ``tests/fakes.py`` implements them in memory, so the
convergence logic runs in milliseconds in table tests (as cert-manager tests its
sub-controllers against fakes). Only what the reconciler calls is listed here: a method added
to the reconciler's needs is added here first, and both sides must follow.
"""

from __future__ import annotations

from typing import Any, Protocol

from kubernetes import client

from pmkeys.api.plan import EffectivePlan
from pmkeys.keys.digest import Pepper
from pmkeys.vault.records import KeyRecord, OwnerIndex


class Kube(Protocol):
    async def get_key_object(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def add_finalizer(
        self, namespace: str, name: str, *, finalizers: list[str], resource_version: str
    ) -> None: ...

    async def namespace_tenant(self, namespace: str) -> str | None: ...

    async def tenant_plan(self, namespace: str) -> EffectivePlan | None: ...

    async def read_secret(self, namespace: str, name: str) -> client.V1Secret | None: ...

    async def create_secret(self, namespace: str, secret: client.V1Secret) -> str: ...

    async def replace_secret(self, namespace: str, secret: client.V1Secret) -> str: ...

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> None: ...

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...

    async def post_event(self, obj: dict[str, Any], *, reason: str, message: str, warning: bool = False) -> None: ...

    async def restart_workload(self, namespace: str, kind: str, name: str, when: str, *, key: str) -> bool: ...


class Store(Protocol):
    async def peppers(self) -> list[Pepper]: ...

    async def current_pepper(self) -> Pepper: ...

    async def get_record(self, digest: str) -> tuple[KeyRecord, int] | None: ...

    async def create_record(self, digest: str, record: KeyRecord) -> None: ...

    async def update_record(self, digest: str, record: KeyRecord, *, version: int) -> None: ...

    async def get_owner(self, uid: str) -> tuple[OwnerIndex, int] | None: ...

    async def put_owner(self, uid: str, index: OwnerIndex, *, version: int) -> int: ...
