"""Reconcile one ``TenantApiKey``: make the world match its spec, from whatever state it is in.

Level-triggered: every run reads the Secret, the owner index and the current key's record,
works out what is missing, does it, and reports the result in status and Events. The same
code path serves creation, updates, operator restarts, timers and repairs, which is what makes
a crash at any line recoverable.

Issuance order (each step persisted before the next; ``crashpoints`` marks them):

1. generate the key, digest it, bcrypt it (in memory only);
2. add a *pending* entry to the owner index (the intent: "this digest may become ours");
3. write the Secret — from here on the Secret is the truth;
4. create the Vault record;
5. settle: the superseded key retires (grace) or is revoked, the entry becomes active;
6. status, Events.

On resume the Secret's key is matched against the index: an entry without its record gets
one (hashing the Secret's plaintext — the only case that re-hashes), pending entries that
never reached the Secret are dropped, and anything active that is not the current key is
revoked. Keys that are already consistent cost two reads and no bcrypt.

This module only sequences the concerns, each in its own module: :mod:`~.issuing` (steps 1-4),
:mod:`~.settling` (5), :mod:`~.reporting` (6), :mod:`~.policies` (the rules of time),
:mod:`~.refusals` (what is never served) and :mod:`~.memory` (what is remembered per object).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys import metrics
from pmkeys.api.vocabulary import Phase, Reason
from pmkeys.audit.lifecycle import LifecycleTrail
from pmkeys.keys import material
from pmkeys.keys.digest import digest
from pmkeys.keys.hashing import Hasher
from pmkeys.reconcile import policies, secrets
from pmkeys.reconcile.interfaces import Kube, Store
from pmkeys.reconcile.issuing import Issuer, ObjectGone
from pmkeys.reconcile.kube import secret_plaintext
from pmkeys.reconcile.ledger import Ledger
from pmkeys.reconcile.memory import Memories, ObjectMemory
from pmkeys.reconcile.objects import KeyObject
from pmkeys.reconcile.refusals import Refused, foreign_secret, over_plan, tenancy
from pmkeys.reconcile.reporting import Current, Reporter
from pmkeys.reconcile.settling import LIVE_STATES, Settler
from pmkeys.vault.errors import VaultError
from pmkeys.vault.records import EntryState, Intent

logger = logging.getLogger(__name__)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Result(StrEnum):
    """How a reconcile ended (the ``outcome`` label of the duration histogram)."""

    OK = "ok"
    REFUSED = "refused"
    RETRY = "retry"
    #: The object was deleted since it was read: nothing was done.
    GONE = "gone"


@dataclass(frozen=True)
class Outcome:
    result: Result
    #: When the object next needs attention (None: only when it changes).
    wake: dt.datetime | None


class Reconciler:
    def __init__(
        self,
        *,
        kube: Kube,
        store: Store,
        hasher: Hasher,
        jitter_fraction: float = 0.05,
        clock: Callable[[], dt.datetime] = utcnow,
        memories: Memories | None = None,
        trail: LifecycleTrail | None = None,
    ) -> None:
        self.kube = kube
        self.store = store
        self.clock = clock
        self.jitter_fraction = jitter_fraction
        self.memories = memories if memories is not None else Memories()
        self.reporter = Reporter(kube=kube, clock=clock, jitter_fraction=jitter_fraction, trail=trail)
        self.issuer = Issuer(kube=kube, store=store, hasher=hasher, reporter=self.reporter, clock=clock)
        self.settler = Settler(kube=kube, store=store, reporter=self.reporter, clock=clock)

    # -- entry points --------------------------------------------------------------------
    async def reconcile(self, body: object) -> Outcome:
        """Converge one object; never raises for Vault or API trouble (status says it)."""
        obj = KeyObject.from_body(body)
        if self.memories.gone(obj.uid):
            return Outcome(Result.GONE, None)
        memory = self.memories.recall(obj.uid)
        memory.ref = (obj.namespace, obj.name)
        async with memory.lock:
            if memory.deleted:  # finalized while we waited: what we read is stale
                return Outcome(Result.GONE, None)
            try:
                wake = await self._converge(obj, memory)
            except ObjectGone:
                self.forget(obj.uid)
                return Outcome(Result.GONE, None)
            except Refused as refusal:
                memory.refused = True
                await self.reporter.refusal(obj, memory, refusal, fields=refusal.fields)
                return Outcome(Result.REFUSED, self.clock() + policies.REFUSAL_RECHECK)
            except Exception as exc:
                metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
                if not isinstance(exc, VaultError | ApiException | OSError):
                    logger.exception("%s: reconcile failed unexpectedly", obj.ref)
                return Outcome(Result.RETRY, await self.reporter.failure(obj, memory, exc))
            memory.refused = False
            memory.failures = 0
            return Outcome(Result.OK, wake)

    async def finalize(self, body: object) -> None:
        """The object is being deleted: revoke every key it had (records stay as the trail)."""
        obj = KeyObject.from_body(body)
        memory = self.memories.recall(obj.uid)
        async with memory.lock:
            ledger = await Ledger.load(self.store, obj)
            revoked = await self.settler.revoke_all(ledger, reason="TenantApiKey deleted")
            secret = await self.kube.read_secret(obj.namespace, obj.secret_name)
            if secret is not None and secrets.owned_by(secret, obj.uid):
                await self.kube.delete_secret(obj.namespace, obj.secret_name, uid=secret.metadata.uid)
            await self.reporter.deleted(obj, revoked)
            memory.deleted = True
        self.forget(obj.uid)

    def forget(self, uid: str) -> None:
        """Drop everything remembered about a deleted object."""
        memory = self.memories.forget(uid)
        if memory is not None:
            metrics.phase_changed(memory.phase, None)

    # -- the reconcile -------------------------------------------------------------------
    async def _converge(self, obj: KeyObject, memory: ObjectMemory) -> dt.datetime | None:
        refusal = tenancy(obj, await self.kube.namespace_tenant(obj.namespace))
        if refusal is not None:
            await self._withdraw(obj, refusal)
            raise refusal
        obj = obj.with_plan(await self.kube.tenant_plan(obj.namespace))
        ledger = await Ledger.load(self.store, obj)
        if not ledger.entries and (refusal := over_plan(obj)) is not None:
            raise refusal
        secret = await self._read_secret(obj, ledger)
        now = self.clock()
        if obj.spec.revoked:
            await self._end(obj, memory, ledger, secret, Phase.REVOKED, Reason.KEY_REVOKED, "revoked by spec")
            return None
        if policies.expired(obj.spec, now):
            await self._end(obj, memory, ledger, secret, Phase.EXPIRED, Reason.KEY_EXPIRED, "expired")
            return None
        current = await self._current_or_new(obj, memory, ledger, secret, now)
        current = await self.settler.settle(obj, ledger, current)
        await ledger.flush()
        await self.reporter.active(obj, memory, ledger, current)
        return policies.next_wake(
            policies.rotation_due_at(obj.spec, current.key_id, current.entry, jitter_fraction=self.jitter_fraction),
            obj.spec.expires_at,
            (*(e.not_after for _, e in ledger.in_state(EntryState.RETIRING)), memory.rotation_held_until),
        )

    async def _withdraw(self, obj: KeyObject, refusal: Refused) -> None:
        """Keys issued while the namespace belonged to the key's tenant stop working once it
        does not: revoked (records stay as the trail), the Secret removed, status cleared."""
        ledger = await Ledger.load(self.store, obj)
        if not ledger.in_state(*LIVE_STATES):
            return
        why = f"namespace {obj.namespace} no longer belongs to tenant {obj.spec.tenant}"
        secret = await self.kube.read_secret(obj.namespace, obj.secret_name)
        owned = secret if secret is not None and secrets.owned_by(secret, obj.uid) else None
        revoked = await self.settler.end(obj, ledger, owned, why)
        await self.reporter.event(obj, Reason.KEY_REVOKED, f"key {', '.join(revoked)} revoked: {why}", warning=True)
        refusal.fields = self.reporter.key_fields(obj, ledger, None)

    async def _read_secret(self, obj: KeyObject, ledger: Ledger) -> client.V1Secret | None:
        # A fresh object has no Secret to find: it is created, not read first (a name someone
        # else holds shows up as a conflict on create). Saves a request per new key.
        if not ledger.entries and not obj.spec.revoked:
            return None
        secret = await self._watched_if_steady(obj, ledger)
        if secret is None:
            secret = await self.kube.read_secret(obj.namespace, obj.secret_name)
        if secret is not None and not secrets.owned_by(secret, obj.uid):
            raise foreign_secret(obj)
        return secret

    async def _watched_if_steady(self, obj: KeyObject, ledger: Ledger) -> client.V1Secret | None:
        """The watched copy of the Secret, when it confirms what the owner index says (its key
        is the one active key, nothing pending): an operator restart then costs no Secret read
        per object. Anything else is decided on a fresh read. A copy that lags a change by
        someone else can only confirm the state before it, and that change's own watch event
        reconciles the object again; the operator's own writes never confirm (the key they
        replaced is no longer the active one)."""
        cached = self.kube.cached_secret(obj.namespace, obj.secret_name)
        if cached is None or not secrets.owned_by(cached, obj.uid):
            return None
        try:
            key = material.parse(secret_plaintext(cached) or "")
        except material.MalformedKey:
            return None
        return cached if ledger.steady_on(digest(p, key.value) for p in await self.store.peppers()) else None

    async def _current_or_new(
        self, obj: KeyObject, memory: ObjectMemory, ledger: Ledger, secret: client.V1Secret | None, now: dt.datetime
    ) -> Current:
        current = await self.issuer.find_current(obj, ledger, secret)
        if current is None:
            superseded = _active_key(ledger)
            intent = policies.intent_for_missing_key(superseded)
            return await self.issuer.issue(obj, memory, ledger, secret, intent=intent, supersedes=superseded)
        due = policies.rotation_due(
            obj.spec,
            obj.rotate_annotation,
            current.key_id,
            current.entry,
            now=now,
            jitter_fraction=self.jitter_fraction,
        )
        if not due:
            return current
        if await self._held(obj, memory, ledger, current, now):
            return current
        grace = policies.grace_seconds(obj.spec)
        return await self.issuer.issue(
            obj, memory, ledger, secret, intent=Intent.ROTATE, supersedes=current.key_id, grace=grace
        )

    async def _held(
        self, obj: KeyObject, memory: ObjectMemory, ledger: Ledger, current: Current, now: dt.datetime
    ) -> bool:
        """Whether a manual rotation must wait (policies.MANUAL_ROTATIONS per key per window);
        a scheduled rotation that fell due never does. The wait is said once, as an Event."""
        scheduled = policies.rotation_due_at(
            obj.spec, current.key_id, current.entry, jitter_fraction=self.jitter_fraction
        )
        manual = policies.manual_trigger(obj.spec, obj.rotate_annotation, current.entry)
        held = policies.manual_rotation_held_until(ledger.entries, now) if manual else None
        if held is None or (scheduled is not None and now >= scheduled):
            memory.rotation_held_until = None
            return False
        if memory.rotation_held_until != held:
            await self.reporter.event(
                obj, Reason.ROTATION_HELD, policies.held_message(held), warning=True, audited=False
            )
        memory.rotation_held_until = held
        return True

    async def _end(
        self,
        obj: KeyObject,
        memory: ObjectMemory,
        ledger: Ledger,
        secret: client.V1Secret | None,
        phase: Phase,
        reason: Reason,
        why: str,
    ) -> None:
        revoked = await self.settler.end(obj, ledger, secret, why)
        if revoked:
            await self.reporter.event(
                obj,
                reason,
                f"key {', '.join(revoked)} {why}; Secret removed",
                key_id=revoked[-1],
                details={"revoked": revoked},
            )
        await self.reporter.ended(obj, memory, ledger, phase, reason)


def _active_key(ledger: Ledger) -> str | None:
    active = ledger.in_state(EntryState.ACTIVE)
    return active[-1][0] if active else None
