"""Settling: everything that is not the current key, and what follows a new key.

The key a new one superseded retires for its grace period (rotation) or is revoked (repair);
pending entries that never reached the Secret, and active keys that are no longer in it, are
revoked; retiring keys past their grace are revoked. Spec changes that keep the key (scopes,
tier, rate limit, expiry) go into the records in place, and workloads that asked for it are
restarted once per new key. Every rule about *when* lives in :mod:`pmkeys.reconcile.policies`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pmkeys import metrics
from pmkeys.api import vocabulary as v
from pmkeys.api.vocabulary import Reason
from pmkeys.reconcile import crashpoints, policies
from pmkeys.reconcile.interfaces import Kube, Store
from pmkeys.reconcile.ledger import Ledger
from pmkeys.reconcile.objects import KeyObject
from pmkeys.reconcile.reporting import Current, Reporter
from pmkeys.reconcile.status import iso
from pmkeys.vault.records import EntryState, Intent, KeyState, OwnerEntry

#: What is revoked when an object ends (revoked, expired, deleted).
LIVE_STATES = (EntryState.PENDING, EntryState.ACTIVE, EntryState.RETIRING)


class Settler:
    def __init__(self, *, kube: Kube, store: Store, reporter: Reporter, clock: Callable[[], dt.datetime]) -> None:
        self.kube = kube
        self.store = store
        self.reporter = reporter
        self.clock = clock

    async def settle(self, obj: KeyObject, ledger: Ledger, current: Current) -> Current:
        now = self.clock()
        await self._finish_supersede(obj, ledger, current, now)
        for key_id, entry in list(ledger.entries.items()):
            if key_id != current.key_id:
                await self._settle_other(obj, ledger, key_id, entry, now)
        await self._cap_grace(obj, ledger)
        current = await self._sync_record(obj, ledger, current)
        await self._restart_targets(obj, ledger, current, now)
        return current

    async def end(self, obj: KeyObject, ledger: Ledger, secret: client.V1Secret | None, why: str) -> list[str]:
        """Revoke every key and remove the Secret; return the key ids revoked now."""
        revoked = await self.revoke_all(ledger, reason=why)
        if secret is not None:
            await self.kube.delete_secret(obj.namespace, obj.secret_name, uid=secret.metadata.uid)
        return revoked

    async def revoke_all(self, ledger: Ledger, *, reason: str) -> list[str]:
        revoked = []
        for key_id, _entry in ledger.in_state(*LIVE_STATES):
            await self._revoke(ledger, key_id, reason=reason)
            revoked.append(key_id)
        await ledger.flush()
        return revoked

    async def _settle_other(
        self, obj: KeyObject, ledger: Ledger, key_id: str, entry: OwnerEntry, now: dt.datetime
    ) -> None:
        if entry.state is EntryState.PENDING:
            await self._revoke(ledger, key_id, reason="never reached its Secret")
        elif entry.state is EntryState.ACTIVE:
            await self._revoke(ledger, key_id, reason="no longer the key in the Secret")
            await self.reporter.event(
                obj, Reason.KEY_REVOKED, f"revoked stray key {key_id}", key_id=key_id, requested=False
            )
        elif policies.grace_ended(entry, now):
            await self._revoke(ledger, key_id, reason="grace period ended")
            await self.reporter.event(
                obj, Reason.GRACE_EXPIRED, f"grace period of key {key_id} ended; it is revoked", key_id=key_id
            )

    async def _finish_supersede(self, obj: KeyObject, ledger: Ledger, current: Current, now: dt.datetime) -> None:
        old_id = current.entry.supersedes
        old = ledger.entries.get(old_id) if old_id else None
        if old_id is None or old is None or old.state not in (EntryState.ACTIVE, EntryState.PENDING):
            return
        deadline = policies.supersede_deadline(current.entry, obj.spec.expires_at)
        new = f"{current.key_id} ({current.entry.display_prefix})"
        if policies.keeps_grace(current.entry, deadline, now):
            await self._retire(ledger, old_id, deadline)
            message = f"rotated to key {new}; previous key {old_id} works until {iso(deadline)}"
        else:
            await self._revoke(ledger, old_id, reason=f"replaced by {current.key_id}")
            message = f"key {old_id} revoked and replaced by {new}"
        crashpoints.reach("after-supersede")
        trigger = _rotation_trigger(current.entry, old)
        details = {"previous_key_id": old_id, "trigger": trigger, "previous_works_until": iso(deadline)}
        if current.entry.intent is Intent.ROTATE:
            await self.reporter.event(
                obj,
                Reason.KEY_ROTATED,
                message,
                key_id=current.key_id,
                details=details,
                requested=trigger != "scheduled",
            )
        else:
            await self.reporter.event(
                obj,
                Reason.SECRET_REPAIRED,
                f"Secret was lost or altered: {message}",
                warning=True,
                key_id=current.key_id,
                details={**details, "trigger": "repair"},
            )

    async def _retire(self, ledger: Ledger, key_id: str, deadline: dt.datetime) -> None:
        entry = ledger.entries[key_id]
        stored = await self.store.get_record(entry.digest)
        if stored is not None and stored[0].state is KeyState.ACTIVE:
            record, version = stored
            retired = record.model_copy(update={"state": KeyState.RETIRING, "not_after": deadline})
            await self.store.update_record(entry.digest, retired, version=version)
        ledger.update(key_id, state=EntryState.RETIRING, not_after=deadline)

    async def _cap_grace(self, obj: KeyObject, ledger: Ledger) -> None:
        """At most the plan's ``maxKeysInGrace`` previous keys stay valid at once: a rotation
        beyond it ends the oldest grace now (each live key costs a bcrypt in every verifier)."""
        if obj.plan is None:
            return
        retiring = ledger.in_state(EntryState.RETIRING)
        excess = len(retiring) - obj.plan.max_keys_in_grace
        oldest = sorted(retiring, key=lambda item: item[1].not_after or self.clock())[: max(0, excess)]
        for key_id, _entry in oldest:
            why = f"grace ended early: the {obj.plan.tier.value} plan allows {obj.plan.max_keys_in_grace} keys in grace"
            await self._revoke(ledger, key_id, reason=why)
            await self.reporter.event(obj, Reason.GRACE_EXPIRED, f"key {key_id}: {why}")

    async def _revoke(self, ledger: Ledger, key_id: str, *, reason: str) -> None:
        entry = ledger.entries[key_id]
        stored = await self.store.get_record(entry.digest)
        if stored is not None and stored[0].state is not KeyState.REVOKED:
            record, version = stored
            revoked = record.model_copy(
                update={"state": KeyState.REVOKED, "revoked_at": self.clock(), "revoked_reason": reason}
            )
            await self.store.update_record(entry.digest, revoked, version=version)
            metrics.KEYS_REVOKED.inc()
            crashpoints.reach("after-revoke-record")
        ledger.update(key_id, state=EntryState.REVOKED)

    async def _sync_record(self, obj: KeyObject, ledger: Ledger, current: Current) -> Current:
        """Spec changes that keep the key (scopes, tier, rate limit, expiry) go to the records."""
        wanted = {
            "scopes": list(obj.spec.scopes),
            "tier": obj.tier,
            "rate_limit": obj.rate_limit,
            "not_after": obj.spec.expires_at,
        }
        record = current.record
        if all(getattr(record, k) == val for k, val in wanted.items()):
            return current
        updated = record.model_copy(update=wanted)
        await self.store.update_record(ledger.entries[current.key_id].digest, updated, version=current.version)
        for _key_id, entry in ledger.in_state(EntryState.RETIRING):
            await self._sync_retiring(obj, entry)
        changed = {k: (getattr(record, k), val) for k, val in wanted.items() if getattr(record, k) != val}
        await self.reporter.event(
            obj,
            Reason.KEY_UPDATED,
            f"key {current.key_id} updated in place: {', '.join(changed)}",
            key_id=current.key_id,
            details={"changes": {k: {"from": _plain(a), "to": _plain(b)} for k, (a, b) in changed.items()}},
        )
        return Current(current.key_id, current.entry, updated, current.version + 1)

    async def _sync_retiring(self, obj: KeyObject, entry: OwnerEntry) -> None:
        stored = await self.store.get_record(entry.digest)
        if stored is None or stored[0].state is not KeyState.RETIRING:
            return
        record, version = stored
        updated = record.model_copy(
            update={
                "scopes": list(obj.spec.scopes),
                "tier": obj.tier,
                "rate_limit": obj.rate_limit,
                "not_after": policies.retiring_not_after(record.not_after, obj.spec.expires_at),
            }
        )
        if updated != record:
            await self.store.update_record(entry.digest, updated, version=version)

    async def _restart_targets(self, obj: KeyObject, ledger: Ledger, current: Current, now: dt.datetime) -> None:
        targets = obj.spec.rotation.restart_targets
        if not policies.restart_wanted(current.entry, has_targets=bool(targets)):
            return
        when = iso(now) or ""
        for target in targets:
            workload = f"{target.kind}/{target.name}"
            try:
                restarted = await self.kube.restart_workload(
                    obj.namespace, target.kind, target.name, when, key=obj.name
                )
            except ApiException as exc:
                await self.reporter.event(
                    obj, Reason.RESTART_FAILED, f"could not restart {workload}: {exc.reason}", warning=True
                )
            else:
                if restarted:
                    message = f"restarted {workload} to pick up key {current.key_id}"
                    await self.reporter.event(obj, Reason.RESTART_TRIGGERED, message)
                else:
                    await self.reporter.event(obj, Reason.RESTART_REFUSED, _not_opted_in(workload, obj), warning=True)
        ledger.update(current.key_id, restarted=True)


def _not_opted_in(workload: str, obj: KeyObject) -> str:
    return (
        f"did not restart {workload}: it has not opted in; annotate it with "
        f"{v.RESTART_OPT_IN_ANNOTATION}={obj.name} to let this key's rotations restart it"
    )


def _rotation_trigger(new: OwnerEntry, old: OwnerEntry) -> str:
    """Why a rotation happened, from the trigger values each key satisfied."""
    if new.counter > old.counter:
        return "manual (spec.rotation.counter)"
    if new.annotation and new.annotation != old.annotation:
        return "manual (rotate annotation)"
    return "scheduled"


def _plain(value: object) -> object:
    """A record field as JSON: times as RFC 3339, enums as their value."""
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, list):
        return [str(v) for v in value]
    return value if value is None or isinstance(value, int | float) else str(value)
