"""The operator's narrow interface to the Kubernetes API.

Secrets, namespaces, plans (and their ResourceQuotas), status, Events and workload restarts:
every call the reconciler makes, each one async (the official client is synchronous, so calls
run on a thread pool) and each one small enough to read at a glance.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v
from pmkeys.api.plan import EffectivePlan, plan_from_body
from pmkeys.listwatch import LIST_PAGE
from pmkeys.reconcile import policies
from pmkeys.reconcile.secretwatch import SecretCache
from pmkeys.tenantapikey import TenantApiKeys

T = TypeVar("T")
logger = logging.getLogger(__name__)


def _unfenced(what: str) -> None:
    return None


class KubeApi:
    def __init__(self, api: client.ApiClient, *, threads: int = 8) -> None:
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.keys = TenantApiKeys(api)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="kube")
        self.component = "pmkeys-operator"
        #: namespace → tenant label, kept current by a namespace watch; read-through on a miss.
        self.tenants: dict[str, str | None] = {}
        #: Asked before every write (pmkeys.reconcile.leadership: one writer at a time).
        self.fence: Callable[[str], None] = _unfenced
        #: namespace → its TenantPlan (None: none), kept current by a plan watch; read-through.
        self.plans: dict[str, EffectivePlan | None] = {}
        self._custom = client.CustomObjectsApi(api)
        #: The managed Secrets as last watched (pmkeys.reconcile.secretwatch); None: no cache.
        self.secret_cache: SecretCache | None = None

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def read(self, fn: Callable[[], T]) -> T:
        """Run a read ``fn`` on the client's pool (for callers outside this class)."""
        return await self._call(fn)

    async def _write(self, fn: Callable[[], Any]) -> dict[str, Any]:
        """A write whose answer the client does not deserialise into models
        (``_preload_content=False`` passed by ``fn``): that costs more CPU than the request. The
        raw answer is read and its connection handed back to the pool (else the next call pays a
        new TLS handshake)."""

        self.fence("kubernetes write")

        def call() -> dict[str, Any]:
            response = fn()
            try:
                return dict(json.loads(response.data))
            finally:
                response.release_conn()

        return await self._call(call)

    # -- TenantApiKeys -------------------------------------------------------------------
    async def get_key_object(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call(lambda: self.keys.get(namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list_key_uids(self, namespaces: list[str]) -> set[str]:
        """The uids of every TenantApiKey in ``namespaces`` (all namespaces if empty)."""
        uids: set[str] = set()
        where: list[str | None] = [*namespaces] or [None]
        for ns in where:
            uids |= await self._call(partial(self._uids_in, ns))
        return uids

    def _uids_in(self, namespace: str | None) -> set[str]:
        """In pages, as plain JSON, keeping only the uids: one list of every object parsed at
        once was the largest thing in the operator's memory at a start (the sweep runs then)."""
        call, _ = self.keys.list_call(namespace)
        uids: set[str] = set()
        token = ""  # pages of one consistent snapshot
        while True:
            raw = call(limit=LIST_PAGE, _continue=token or None, _preload_content=False, _request_timeout=60)
            listing = json.loads(raw.data)
            uids |= {item["metadata"]["uid"] for item in listing.get("items", [])}
            token = listing["metadata"].get("continue") or ""
            if not token:
                return uids

    async def add_finalizer(self, namespace: str, name: str, *, finalizers: list[str], resource_version: str) -> None:
        """Set the object's finalizers to ``finalizers`` if it is still at ``resource_version``."""
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        await self._write(lambda: self.keys.patch(namespace, name, body, _preload_content=False))

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._write(lambda: self.keys.patch_status(namespace, name, status, _preload_content=False))

    # -- plans ---------------------------------------------------------------------------
    async def tenant_plan(self, namespace: str) -> EffectivePlan | None:
        if namespace in self.plans:
            return self.plans[namespace]
        try:
            body = await self._call(
                lambda: self._custom.get_namespaced_custom_object(
                    v.GROUP, v.VERSION, namespace, v.PLAN_PLURAL, v.PLAN_NAME
                )
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = None
        plan = plan_from_body(body) if body else None
        self.plans[namespace] = plan
        return plan

    async def keys_in(self, namespace: str) -> list[dict[str, Any]]:
        return list(await self._call(partial(self.keys.list, namespace)))

    async def apply_quota(self, namespace: str, quota: dict[str, Any]) -> None:
        """Create or replace the plan's ResourceQuota (server-side apply, our field manager)."""
        name = quota["metadata"]["name"]
        self.fence("quota write")
        await self._call(
            lambda: self.core.patch_namespaced_resource_quota(
                name,
                namespace,
                quota,
                field_manager=self.component,
                force=True,
                _content_type="application/apply-patch+yaml",
            )
        )

    async def patch_plan_status(self, namespace: str, status: dict[str, Any]) -> None:
        self.fence("plan status write")
        await self._call(
            lambda: self._custom.patch_namespaced_custom_object_status(
                v.GROUP, v.VERSION, namespace, v.PLAN_PLURAL, v.PLAN_NAME, {"status": status}
            )
        )

    # -- namespaces ----------------------------------------------------------------------
    async def namespace_tenant(self, namespace: str) -> str | None:
        if namespace in self.tenants:
            return self.tenants[namespace]
        ns = await self._call(lambda: self.core.read_namespace(namespace))
        tenant = (ns.metadata.labels or {}).get(v.TENANT_LABEL)
        self.tenants[namespace] = tenant
        return tenant

    # -- Secrets -------------------------------------------------------------------------
    def cached_secret(self, namespace: str, name: str) -> client.V1Secret | None:
        """The managed Secret as the watch last saw it; None when the cache has no such Secret
        (which proves nothing: only a read says a Secret is absent)."""
        return self.secret_cache.get(namespace, name) if self.secret_cache is not None else None

    async def read_secret(self, namespace: str, name: str) -> client.V1Secret | None:
        try:
            return await self._call(lambda: self.core.read_namespaced_secret(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def create_secret(self, namespace: str, secret: client.V1Secret) -> str:
        """Create a Secret; return its resourceVersion."""
        written = await self._write(
            lambda: self.core.create_namespaced_secret(namespace, secret, _preload_content=False)
        )
        return str(written["metadata"]["resourceVersion"])

    async def replace_secret(self, namespace: str, secret: client.V1Secret) -> str:
        """Replace a Secret (its manifest carries the resourceVersion read); return the new one."""
        name = secret.metadata.name
        written = await self._write(
            lambda: self.core.replace_namespaced_secret(name, namespace, secret, _preload_content=False)
        )
        return str(written["metadata"]["resourceVersion"])

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        """Delete a Secret; with ``uid``, only that exact object (a precondition)."""
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
        self.fence("secret delete")
        try:
            await self._call(lambda: self.core.delete_namespaced_secret(name, namespace, body=options))
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # -- Events --------------------------------------------------------------------------
    async def post_event(self, obj: dict[str, Any], *, reason: str, message: str, warning: bool = False) -> None:
        """Record an audit Event on a TenantApiKey. Failing to post never fails a reconcile."""
        meta = obj["metadata"]
        now = dt.datetime.now(dt.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=v.API_VERSION,
                kind=v.KIND,
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=self.component),
            reporting_component=self.component,
            reporting_instance=self.component,
        )
        try:
            await self._write(
                lambda: self.core.create_namespaced_event(meta["namespace"], event, _preload_content=False)
            )
        except ApiException as exc:
            logger.warning("could not post Event %s: %s", reason, exc.reason)

    # -- workloads -----------------------------------------------------------------------
    async def restart_workload(self, namespace: str, kind: str, name: str, when: str, *, key: str) -> bool:
        """Restart a workload's pods (a pod-template annotation) if it opted in for ``key``;
        False if it did not (nothing is written). The patch carries the resourceVersion read,
        so an opt-in withdrawn in between is a conflict, not a restart."""
        read, patch_fn = (
            (self.apps.read_namespaced_deployment, self.apps.patch_namespaced_deployment)
            if kind == "Deployment"
            else (self.apps.read_namespaced_stateful_set, self.apps.patch_namespaced_stateful_set)
        )
        workload = await self._call(lambda: read(name, namespace))
        if not policies.restart_opted_in((workload.metadata.annotations or {}).get(v.RESTART_OPT_IN_ANNOTATION), key):
            return False
        patch = {
            "metadata": {"resourceVersion": workload.metadata.resource_version},
            "spec": {"template": {"metadata": {"annotations": {v.RESTARTED_AT_ANNOTATION: when}}}},
        }
        self.fence("workload restart")
        await self._call(lambda: patch_fn(name, namespace, patch))
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def secret_plaintext(secret: client.V1Secret) -> str | None:
    raw = (secret.data or {}).get(v.SECRET_DATA_KEY)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
