"""Telling everyone what a reconcile found: status, Events, the keys-by-phase gauge.

Status is rendered by :mod:`pmkeys.reconcile.status` and patched only when something other than
a transition time changed, so a quiet reconcile writes nothing. Every Event is also logged,
and Events and logs carry key ids and display prefixes, never key material. A failure's text
is shown only for errors whose messages we wrote (Vault, API); for anything else only its type.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from pmkeys import metrics
from pmkeys.api.vocabulary import ConditionType, Phase, Reason
from pmkeys.audit.lifecycle import LifecycleTrail, Subject
from pmkeys.reconcile import crashpoints, policies, status
from pmkeys.reconcile.interfaces import Kube
from pmkeys.reconcile.ledger import Ledger
from pmkeys.reconcile.memory import ObjectMemory
from pmkeys.reconcile.objects import KeyObject
from pmkeys.reconcile.refusals import Refused
from pmkeys.reconcile.status import CondSpec, StatusFacts, iso
from pmkeys.vault.errors import VaultError
from pmkeys.vault.records import EntryState, Intent, KeyRecord, OwnerEntry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Current:
    """The key in the Secret, with its index entry and record."""

    key_id: str
    entry: OwnerEntry
    record: KeyRecord
    version: int


class Reporter:
    def __init__(
        self,
        *,
        kube: Kube,
        clock: Callable[[], dt.datetime],
        jitter_fraction: float,
        trail: LifecycleTrail | None = None,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.jitter_fraction = jitter_fraction
        self.trail = trail

    async def event(
        self,
        obj: KeyObject,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        key_id: str = "",
        details: dict[str, Any] | None = None,
        requested: bool | None = None,
        audited: bool = True,
    ) -> None:
        """An Event for ``kubectl describe`` and, for lifecycle reasons, an audit record
        (:mod:`pmkeys.audit.lifecycle` decides which reasons and who the actor is)."""
        logger.info("%s: %s: %s", obj.ref, reason, message)
        await self.kube.post_event(obj.body, reason=str(reason), message=message, warning=warning)
        if self.trail is not None and audited:
            await self.trail.event(_subject(obj), reason, message, key_id=key_id, details=details, requested=requested)

    async def deleted(self, obj: KeyObject, revoked: list[str]) -> None:
        if self.trail is not None:
            await self.trail.deleted(_subject(obj), revoked)

    # -- the outcomes of a reconcile -----------------------------------------------------
    async def active(self, obj: KeyObject, memory: ObjectMemory, ledger: Ledger, current: Current) -> None:
        previous = ledger.in_state(EntryState.RETIRING)
        if obj.status.key_id != current.key_id and current.entry.intent is Intent.ISSUE:
            await self.event(
                obj,
                Reason.KEY_ISSUED,
                f"issued key {current.key_id} ({current.entry.display_prefix}) into Secret {obj.secret_name}",
                key_id=current.key_id,
                details={
                    "display_prefix": current.entry.display_prefix,
                    "secret": obj.secret_name,
                    "scopes": list(current.record.scopes),
                    "tier": str(current.record.tier),
                    "rate_limit": current.record.rate_limit,
                    "expires_at": iso(current.record.not_after),
                },
            )
        grace_message = (
            f"previous key(s) {', '.join(k for k, _ in previous)} still accepted until their notAfter"
            if previous
            else "no previous key is accepted"
        )
        active = f"key {current.key_id} is active"
        if memory.rotation_held_until is not None:
            active += f"; {policies.held_message(memory.rotation_held_until)}"
        facts = StatusFacts(
            phase=Phase.ROTATING if previous else Phase.ACTIVE,
            generation=obj.generation,
            message=active,
            conditions=[
                CondSpec(ConditionType.READY, True, Reason.ACTIVE, active),
                CondSpec(
                    ConditionType.IN_GRACE,
                    bool(previous),
                    Reason.IN_GRACE if previous else Reason.NO_GRACE,
                    grace_message,
                ),
                _vault_ok(),
            ],
            fields=self.key_fields(obj, ledger, current),
        )
        await self.patch_status(obj, memory, facts)
        crashpoints.reach("after-status")

    async def ended(self, obj: KeyObject, memory: ObjectMemory, ledger: Ledger, phase: Phase, reason: Reason) -> None:
        message = (
            "revoked: revocation is final; create a new TenantApiKey for a new key"
            if phase is Phase.REVOKED
            else "expired: move spec.expiresAt into the future to get a new key"
        )
        facts = StatusFacts(
            phase=phase,
            generation=obj.generation,
            message=message,
            conditions=[CondSpec(ConditionType.READY, False, reason, message), _vault_ok()],
            fields=self.key_fields(obj, ledger, None),
        )
        await self.patch_status(obj, memory, facts)

    async def refusal(
        self, obj: KeyObject, memory: ObjectMemory, refusal: Refused, *, fields: dict[str, object] | None = None
    ) -> None:
        if obj.status.phase is not Phase.FAILED or _ready_reason(obj) != refusal.reason:
            await self.event(obj, refusal.reason, refusal.message, warning=True)
        facts = StatusFacts(
            phase=Phase.FAILED,
            generation=obj.generation,
            message=refusal.message,
            conditions=[CondSpec(ConditionType.READY, False, refusal.reason, refusal.message)],
            fields=dict(fields or {}),
        )
        try:
            await self.patch_status(obj, memory, facts)
        except ApiException as exc:
            logger.warning("%s: could not report refusal: %s", obj.ref, exc.reason)

    async def failure(self, obj: KeyObject, memory: ObjectMemory, exc: Exception) -> dt.datetime:
        """Report a transient failure; return when to try again (backoff with jitter)."""
        attempt = memory.failures
        memory.failures = attempt + 1
        delay = policies.backoff_seconds(attempt, random.random())
        reason, what = _describe(exc)
        message = f"{what}; retrying in {delay:.0f}s (attempt {attempt + 1})"
        logger.warning("%s: %s", obj.ref, message)
        if attempt == 0:
            await self.event(obj, reason, message, warning=True)
        conditions = [CondSpec(ConditionType.READY, False, reason, message)]
        if isinstance(exc, VaultError):
            conditions.append(CondSpec(ConditionType.VAULT_AVAILABLE, False, reason, what))
        facts = StatusFacts(
            phase=obj.status.phase if obj.status.key_id else Phase.PENDING,
            generation=obj.status.observed_generation or 0,
            message=message,
            conditions=conditions,
        )
        try:
            await self.patch_status(obj, memory, facts)
        except (ApiException, OSError) as patch_exc:
            logger.warning("%s: could not report failure: %s", obj.ref, patch_exc)
        return self.clock() + dt.timedelta(seconds=delay)

    # -- status fields -------------------------------------------------------------------
    def key_fields(self, obj: KeyObject, ledger: Ledger, current: Current | None) -> dict[str, object]:
        fields: dict[str, object] = {
            "secretName": obj.secret_name if current else None,
            "previousKeys": [
                {"keyId": k, "displayPrefix": e.display_prefix, "notAfter": iso(e.not_after)}
                for k, e in ledger.in_state(EntryState.RETIRING)
            ],
            "revokedKeyIds": [k for k, _ in ledger.in_state(EntryState.REVOKED)],
            "effectiveRateLimit": obj.rate_limit,
            "tier": obj.tier.value,
            "plan": obj.plan.source if obj.plan else "",
            "tenantRateLimit": obj.plan.tenant_rate_limit if obj.plan else None,
            "expiresAt": iso(obj.spec.expires_at),
            "keyId": current.key_id if current else None,
            "displayPrefix": current.entry.display_prefix if current else None,
        }
        if current is None:
            fields["nextRotationAt"] = None
            return fields
        first_issue = min((e.issued_at for e in ledger.entries.values()), default=current.entry.issued_at)
        rotated = current.entry.issued_at if current.entry.intent is not Intent.ISSUE else None
        due = policies.rotation_due_at(obj.spec, current.key_id, current.entry, jitter_fraction=self.jitter_fraction)
        fields.update(
            {
                "createdAt": iso(obj.status.created_at or first_issue),
                "lastRotatedAt": iso(rotated or obj.status.last_rotated_at),
                "nextRotationAt": iso(due),
                "rotation": {
                    "observedCounter": current.entry.counter,
                    "observedAnnotation": current.entry.annotation,
                },
            }
        )
        return fields

    async def patch_status(self, obj: KeyObject, memory: ObjectMemory, facts: StatusFacts) -> None:
        patch = status.render(obj.status, facts, now=self.clock())
        current = obj.status.model_dump(mode="json", by_alias=True, exclude_none=False)
        if status.changed(_comparable(current), _comparable(patch)):
            await self.kube.patch_status(obj.namespace, obj.name, patch)
        if memory.phase != patch["phase"]:
            metrics.phase_changed(memory.phase, patch["phase"])
            memory.phase = patch["phase"]


def _describe(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, VaultError):
        return exc.reason, str(exc)
    if isinstance(exc, ApiException):
        return "KubernetesApiError", f"Kubernetes API error: {exc.status} {exc.reason}"
    # Only the type: an arbitrary exception's text is not known to be free of secrets.
    return "ReconcileError", f"reconcile failed: {type(exc).__name__}"


def _vault_ok() -> CondSpec:
    return CondSpec(ConditionType.VAULT_AVAILABLE, True, Reason.REACHABLE, "Vault answered")


def _ready_reason(obj: KeyObject) -> str | None:
    return next((c.reason for c in obj.status.conditions if c.type == ConditionType.READY), None)


def _comparable(data: dict[str, object]) -> dict[str, object]:
    """Status without volatile parts (transition times) for change detection."""
    out = dict(data)
    conditions = out.get("conditions")
    if isinstance(conditions, list):
        out["conditions"] = [{k: val for k, val in c.items() if k != "lastTransitionTime"} for c in conditions]
    return out


def _subject(obj: KeyObject) -> Subject:
    return Subject(obj.name, obj.namespace, obj.uid, obj.spec.tenant, obj.annotations, obj.resource_version)
