"""kopf registration: which events reach the reconciler, and the operator's runtime.

kopf gives us the TenantApiKey, namespace and plan watches, the finalizer and peering; the
managed Secrets are watched outside kopf (:mod:`pmkeys.reconcile.secretwatch`: a cache that
spares a restart one Secret read per object). Decisions and retries are ours: an object is
reconciled when first seen (creation, or every object once after an operator start) and when
its spec (generation) or rotate annotation changes — tracked in memory, so kopf writes no
bookkeeping annotations and status-only changes cost nothing.

:meth:`Reconciler.reconcile` never raises for Vault or API trouble; it reports it in status and
returns its :class:`~pmkeys.reconcile.reconciler.Outcome` (how it ended, when to look again),
and the :class:`Scheduler` wakes the object then. So kopf sees handlers that succeed, and never
spins on a failure. What is remembered per object lives in one
:class:`~pmkeys.reconcile.memory.Memories`, forgotten when the object is deleted.

With peering, every write is fenced by :class:`~pmkeys.reconcile.leadership.Leadership` (one
writer at a time, also across a pause); work the fence refuses is remembered and redone when
this operator becomes the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kubernetes import client

from pmkeys import metrics
from pmkeys.api import vocabulary as v
from pmkeys.api.plan import EffectivePlan, plan_from_body
from pmkeys.audit import lifecycle
from pmkeys.audit.housekeeping import for_operator
from pmkeys.audit.plans import PlanTrail
from pmkeys.audit.store import AuditLog
from pmkeys.config import OperatorSettings
from pmkeys.keys.hashing import Hasher
from pmkeys.kubeclient import api_client
from pmkeys.listwatch import LIST_PAGE
from pmkeys.reconcile import crashpoints, plans, retention
from pmkeys.reconcile.kube import KubeApi
from pmkeys.reconcile.leadership import Leadership, NotLeader, own_identity
from pmkeys.reconcile.reconciler import Reconciler
from pmkeys.reconcile.scheduling import ObjectRef, Scheduler
from pmkeys.reconcile.secretwatch import SecretCache
from pmkeys.vault.session import VaultSession
from pmkeys.vault.store import KeyStore

logger = logging.getLogger(__name__)
RESOURCE = (v.GROUP, v.VERSION, v.PLURAL)
RECONCILES_AT_ONCE = 64


@dataclass
class Runtime:
    """Everything the handlers share: one Vault session, one bcrypt pool, one scheduler."""

    settings: OperatorSettings
    kube: KubeApi
    store: KeyStore
    hasher: Hasher
    reconciler: Reconciler
    leadership: Leadership = field(default_factory=Leadership.standalone)
    scheduler: Scheduler = field(init=False)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Objects whose reconcile the leadership fence refused: redone on becoming the writer.
    _deferred: dict[str, ObjectRef] = field(default_factory=dict)
    audit_log: AuditLog | None = None
    plan_trail: PlanTrail | None = None
    #: Reconciles at a time (each holds a Vault or API call most of its time).
    reconcile_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RECONCILES_AT_ONCE))
    secrets: SecretCache = field(init=False)

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self._scheduled)
        self.secrets = SecretCache(lambda ns, name, uid: self.poke(ObjectRef(ns, name, uid)), ours=self._wrote)
        self.kube.secret_cache = self.secrets
        self.kube.fence = self.store.fence = self.leadership.check
        self.leadership.on_gained = self._redo_deferred

    @classmethod
    def create(cls, settings: OperatorSettings, *, identity: str = "") -> Runtime:
        kube = KubeApi(api_client(settings.kubeconfig))
        store = KeyStore(VaultSession(settings.vault, observe=metrics.observe_vault))
        hasher = Hasher(cost=settings.bcrypt_cost, workers=settings.bcrypt_workers or None)
        metrics.BCRYPT_PENDING.set_function(lambda: hasher.pending)
        metrics.BCRYPT_CALLS.set_function(lambda: hasher.calls)
        audit_log = lifecycle.audit_log(settings.audit, component="operator")
        trail = lifecycle.LifecycleTrail(audit_log) if audit_log else None
        reconciler = Reconciler(
            kube=kube, store=store, hasher=hasher, jitter_fraction=settings.rotation_jitter, trail=trail
        )
        leadership = _leadership(settings, kube, identity)
        metrics.ACTIVE_WRITER.set_function(lambda: int(leadership.may_write()))
        plan_trail = PlanTrail(audit_log, tenant_of=kube.tenants.get) if audit_log else None
        return cls(settings, kube, store, hasher, reconciler, leadership, audit_log=audit_log, plan_trail=plan_trail)

    def _wrote(self, uid: str, resource_version: str) -> bool:
        """Whether a Secret version is this operator's own last write for the object ``uid``."""
        memory = self.reconciler.memories.peek(uid)
        return memory is not None and memory.written_secret == resource_version

    def asks_for_something_new(self, body: Any) -> bool:
        """Whether an event changes the spec or the rotate annotation since we last reconciled
        (status-only changes, our own among them, are not worth a reconcile)."""
        meta = body["metadata"]
        essence = (meta.get("generation"), (meta.get("annotations") or {}).get(v.ROTATE_ANNOTATION))
        memory = self.reconciler.memories.recall(meta["uid"])
        if memory.essence == essence:
            return False
        memory.essence = essence
        return True

    async def reconcile(self, body: Any) -> None:
        ref = ObjectRef(body["metadata"]["namespace"], body["metadata"]["name"], body["metadata"]["uid"])
        if not self.leadership.may_write():
            self._deferred[ref.uid] = ref
            return
        try:
            async with self.reconcile_slots:
                started = time.perf_counter()
                outcome = await self.reconciler.reconcile(body)
        except NotLeader:  # lost the lead in the middle: the next writer converges it
            self._deferred[ref.uid] = ref
            return
        metrics.RECONCILE_SECONDS.labels(str(outcome.result)).observe(time.perf_counter() - started)
        self.scheduler.cancel(ref.uid)
        if outcome.wake is not None:
            self.scheduler.schedule(ref, outcome.wake)

    async def _scheduled(self, ref: ObjectRef) -> None:
        try:
            body = await self.kube.get_key_object(ref.namespace, ref.name)
        except Exception as exc:
            logger.warning(
                "%s/%s: could not read the object (%s); retrying in 10s", ref.namespace, ref.name, type(exc).__name__
            )
            self.scheduler.schedule(ref, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10))
            return
        if body is None or body["metadata"]["uid"] != ref.uid:
            return
        if body["metadata"].get("deletionTimestamp"):
            return
        await crashpoints.pause("after-scheduled-read")
        await self.reconcile(body)

    def poke(self, ref: ObjectRef) -> None:
        self.scheduler.schedule(ref, dt.datetime.now(dt.UTC))

    def _redo_deferred(self) -> None:
        deferred, self._deferred = self._deferred, {}
        for ref in deferred.values():
            self.poke(ref)

    def close(self) -> None:
        self.secrets.stop()
        for task in self.tasks:
            task.cancel()
        self.kube.close()
        self.store.session.close()
        self.hasher.close()
        if self.audit_log is not None:
            self.audit_log.close()


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """Every handler of the operator, registered on a registry of its own."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.probe(id="scheduled", registry=registry)(scheduled)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.on.event(*RESOURCE, registry=registry)(key_changed)
    kopf.on.event("v1", "namespaces", registry=registry)(namespace_changed)
    kopf.on.event(v.GROUP, v.VERSION, v.PLAN_PLURAL, registry=registry)(plan_changed)
    kopf.on.delete(*RESOURCE, registry=registry)(finalize)
    if settings.audit.dsn is not None and settings.audit.dsn.get_secret_value():
        kopf.on.event(v.GROUP, v.VERSION, v.PLAN_PLURAL, registry=registry)(plan_audited)
    return registry


# -- operator lifecycle ------------------------------------------------------------------------
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # In a pod: the ServiceAccount; elsewhere: $KUBECONFIG (set from PMKEYS_KUBECONFIG).
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: OperatorSettings = memo.operator_settings
    configure_kopf(settings, ours)
    runtime = Runtime.create(ours, identity=memo.identity)
    runtime.secrets.start(runtime.kube.core, namespaces=ours.namespaces)
    runtime.tasks.append(asyncio.create_task(runtime.scheduler.run()))
    runtime.tasks.append(asyncio.create_task(runtime.leadership.run()))
    runtime.tasks.append(asyncio.create_task(housekeeping(runtime, memo.operator_settings)))
    if runtime.audit_log is not None:  # the audit sweep and checkpoint: the active operator's only
        audit = for_operator(runtime.audit_log, runtime.store, runtime.leadership, ours)
        runtime.tasks.append(asyncio.create_task(audit.run()))
    memo.runtime = runtime


def housekeeping(runtime: Runtime, ours: OperatorSettings) -> Coroutine[Any, Any, None]:
    """The retention and orphan sweep over every record (see :mod:`pmkeys.reconcile.retention`)."""
    return retention.run(
        runtime.store,
        lambda: runtime.kube.list_key_uids(ours.namespaces),
        namespaces=ours.namespaces,
        retention_days=ours.retention_days,
        orphan_min_age=ours.orphan_min_age_seconds,
        every_seconds=ours.retention_sweep_seconds,
    )


def scheduled(memo: kopf.Memo, **_: Any) -> int:
    """Objects with a pending timer: shown by the liveness endpoint."""
    return len(memo.runtime.scheduler)


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    with contextlib.suppress(AttributeError):
        memo.runtime.close()


# -- watches -----------------------------------------------------------------------------------
async def key_changed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """First sight of an object (creation or operator start), or a change of what it asks for."""
    runtime: Runtime = memo.runtime
    body = event["object"]
    if event["type"] == "DELETED":
        runtime.scheduler.cancel(body["metadata"]["uid"])
        runtime.reconciler.forget(body["metadata"]["uid"])
        return
    if body["metadata"].get("deletionTimestamp"):
        return
    if runtime.asks_for_something_new(body):
        await runtime.secrets.listed()  # at a start: confirm from the list, not by reads
        await runtime.reconcile(body)


async def plan_audited(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A TenantPlan was created, changed or deleted: the audit trail's plan_change record."""
    runtime: Runtime = memo.runtime
    if runtime.plan_trail is not None:
        await runtime.plan_trail.observe(event["type"], event["object"], record=runtime.leadership.may_write())


async def namespace_changed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Keep the namespace → tenant map current, so reconciles need not read namespaces."""
    runtime: Runtime = memo.runtime
    meta = event["object"]["metadata"]
    tenant = None if event["type"] == "DELETED" else (meta.get("labels") or {}).get(v.TENANT_LABEL)
    known = meta["name"] in runtime.kube.tenants
    changed = runtime.kube.tenants.get(meta["name"]) != tenant
    runtime.kube.tenants[meta["name"]] = tenant
    if known and changed:
        # Every object of the namespace: refused ones may now be served, served ones may now
        # belong to another tenant (their keys are then withdrawn).
        for namespace, name, uid in runtime.reconciler.memories.in_namespace(meta["name"]):
            runtime.poke(ObjectRef(namespace, name, uid))


async def plan_changed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A TenantPlan changed: keep its ResourceQuota and status, and reconcile the namespace's keys
    again when the plan in force is a different one (see :mod:`pmkeys.reconcile.plans`)."""
    runtime: Runtime = memo.runtime
    body = event["object"]
    meta = body["metadata"]
    if meta.get("name") != v.PLAN_NAME:
        return
    namespace = meta["namespace"]
    plan = None if event["type"] == "DELETED" else plan_from_body(body)
    known = namespace in runtime.kube.plans
    changed = runtime.kube.plans.get(namespace) != plan
    runtime.kube.plans[namespace] = plan
    if plan is not None:
        await _enforce_plan(runtime, namespace, plan, body)
    if known and changed:
        for item in await runtime.kube.keys_in(namespace):
            key_meta = item["metadata"]
            runtime.poke(ObjectRef(namespace, key_meta["name"], key_meta["uid"]))


async def _enforce_plan(runtime: Runtime, namespace: str, plan: EffectivePlan, body: dict[str, Any]) -> None:
    wanted = plans.plan_status(plan, int(body["metadata"].get("generation") or 0))
    if plans.status_is_current(body, wanted):
        return
    try:
        await runtime.kube.apply_quota(namespace, plans.quota(namespace, plan))
        await runtime.kube.patch_plan_status(namespace, wanted)
    except Exception as exc:  # reported, retried on the next plan event or operator start
        logger.warning("TenantPlan %s/plan: could not write its quota or status: %s", namespace, exc)


async def finalize(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    runtime.scheduler.cancel(body["metadata"]["uid"])
    try:
        await runtime.reconciler.finalize(body)
    except Exception as exc:
        raise kopf.TemporaryError(f"could not revoke keys yet: {exc}", delay=10) from None


class NoDiffBase(kopf.DiffBaseStorage):  # type: ignore[misc]
    """kopf keeps a copy of the last handled spec to compute diffs for update handlers. We have
    none (changes are detected in :meth:`Runtime.asks_for_something_new`), so we keep no copy:
    no annotation write per object, nothing for GitOps tools to see."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        # kopf's own deep-copies every body on every event: at a start, 20,000 copies held at
        # once by the waiting workers. With no update handler nothing reads it.
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    settings.persistence.finalizer = v.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=f"kopf.{v.GROUP}")
    settings.persistence.diffbase_storage = NoDiffBase()
    # Our own Events are the audit trail; kopf's per-handler Events would only add noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.watching.connect_timeout = 10
    # kopf lists in one response by default: 20,000 objects parsed at once at every start.
    settings.watching.chunk_size = LIST_PAGE
    settings.networking.request_timeout = 30
    # A worker keeps its slot until it has been idle for idle_timeout: at kopf's 5 s, an
    # operator start reconciled 512 objects, then waited ~4 s for those slots, and so on.
    # Reconciles themselves are bounded by Runtime.reconcile_slots.
    settings.queueing.worker_limit = 512
    settings.queueing.idle_timeout = 0.5
    settings.peering.standalone = not ours.peering
    if ours.peering:
        settings.peering.name = ours.peering
        settings.peering.priority = ours.priority
        settings.peering.lifetime = ours.peering_lifetime
        settings.peering.mandatory = True


def _leadership(settings: OperatorSettings, kube: KubeApi, identity: str) -> Leadership:
    """Standalone: always the writer. Peering: fenced by reads of kopf's peering object(s)."""
    if not settings.peering:
        return Leadership.standalone(journal=settings.write_journal)
    name, namespaces = settings.peering, settings.namespaces

    async def read() -> list[dict[str, Any] | None]:
        if not namespaces:
            return [await _peering_status(kube, name, None)]
        return [await _peering_status(kube, name, ns) for ns in namespaces]

    return Leadership(identity=identity, priority=settings.priority, read=read, journal=settings.write_journal)


async def _peering_status(kube: KubeApi, name: str, namespace: str | None) -> dict[str, Any] | None:
    """The status of kopf's ClusterKopfPeering (or KopfPeering in ``namespace``): peer → facts."""
    custom = client.CustomObjectsApi(kube.core.api_client)
    if namespace is None:
        body = await kube.read(lambda: custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name))
    else:
        body = await kube.read(
            lambda: custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", name)
        )
    status = body.get("status") if isinstance(body, dict) else None
    return status if isinstance(status, dict) else None


async def run(settings: OperatorSettings) -> None:
    """Run the operator until cancelled or signalled."""
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig
    crashpoints.arm(settings.crash_at)
    crashpoints.arm_pauses(settings.pause_at)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    identity = own_identity()
    await kopf.operator(
        registry=build_registry(settings),
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=not settings.peering,
        peering_name=settings.peering or None,
        priority=settings.priority,
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity: a NewType of str it does not export
        memo=kopf.Memo(operator_settings=settings, identity=identity),
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None,
    )
