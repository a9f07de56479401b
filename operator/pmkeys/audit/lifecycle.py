"""The operator's audit records: one per lifecycle change it makes, with who asked for it.

The reconciler already says what it did through Events (reason + message); the reporter hands
the same moments here with the structured facts (key id, what changed), and this module maps
each reason to an audit action and picks the actor:

- a change somebody asked for (create, update, manual rotation, revoke by spec, delete) names
  the last editor stamped at admission, and ``details.edits`` lists every admitted edit since
  the previous record of the object — two edits between reconciles name both editors, each
  with the fields they touched;
- a change time asked for (scheduled rotation, expiry, end of a grace period, repair of a lost
  Secret, a stray key) names the operator itself (``pmkeys:operator``).

Writes go through :class:`~pmkeys.audit.store.AuditLog` in a worker thread, so a slow store
never blocks the event loop; a store that is down queues records in memory (see the store).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pmkeys.api.vocabulary import Reason
from pmkeys.audit import actors
from pmkeys.audit.records import Action, Actor, AuditEvent, Outcome
from pmkeys.audit.store import AuditLog
from pmkeys.audit.streaming import Stream
from pmkeys.config import AuditSettings

logger = logging.getLogger(__name__)

OPERATOR = Actor.system("operator")
#: Event reason → (audit action, whether a person asked for it).
ACTIONS: Mapping[str, tuple[Action, bool]] = {
    Reason.KEY_ISSUED: (Action.CREATE, True),
    Reason.KEY_UPDATED: (Action.UPDATE, True),
    Reason.KEY_ROTATED: (Action.ROTATE, True),
    Reason.SECRET_REPAIRED: (Action.ROTATE, False),
    Reason.KEY_RESTORED: (Action.UPDATE, False),
    Reason.KEY_REVOKED: (Action.REVOKE, True),
    Reason.KEY_EXPIRED: (Action.EXPIRE, False),
    Reason.GRACE_EXPIRED: (Action.GRACE_ENDED, False),
    Reason.TENANT_MISMATCH: (Action.REFUSED, True),
    Reason.NAMESPACE_UNBOUND: (Action.REFUSED, True),
    Reason.SECRET_CONFLICT: (Action.REFUSED, True),
    Reason.INVALID_SPEC: (Action.REFUSED, True),
}


@dataclass(frozen=True)
class Subject:
    """The object a record is about, as the reconciler read it."""

    name: str
    namespace: str
    uid: str
    tenant: str
    annotations: Mapping[str, str]
    resource_version: str = ""


class LifecycleTrail:
    def __init__(self, log: AuditLog) -> None:
        self.log = log
        #: uid → resourceVersion of the object when its last record was written.
        self._recorded_at: dict[str, int] = {}

    async def event(
        self,
        subject: Subject,
        reason: str,
        message: str,
        *,
        key_id: str = "",
        details: Mapping[str, Any] | None = None,
        requested: bool | None = None,
    ) -> None:
        mapped = ACTIONS.get(str(reason))
        if mapped is None:
            return
        action, asked = mapped
        if requested is not None:
            asked = requested
        outcome = Outcome.DENIED if action is Action.REFUSED else Outcome.SUCCESS
        await self._write(subject, action, outcome, reason=message, key_id=key_id, details=details, asked=asked)

    async def deleted(self, subject: Subject, revoked: list[str]) -> None:
        details = {"revoked": revoked, "note": "deletions carry no admission stamp: the actor is the last editor"}
        await self._write(
            subject,
            Action.DELETE,
            Outcome.SUCCESS,
            reason="TenantApiKey deleted; its keys are revoked",
            key_id=revoked[-1] if revoked else "",
            details=details,
            asked=True,
        )
        self._recorded_at.pop(subject.uid, None)

    async def _write(
        self,
        subject: Subject,
        action: Action,
        outcome: Outcome,
        *,
        reason: str,
        key_id: str,
        details: Mapping[str, Any] | None,
        asked: bool,
    ) -> None:
        annotations = subject.annotations
        uid = subject.uid
        extra: dict[str, Any] = dict(details or {})
        if asked:
            actor = actors.last_editor(annotations)
            edits = actors.edits_since(annotations, self._recorded_at.get(uid))
            extra["edits"] = [e.to_json() for e in edits if action is not Action.CREATE or "created" in e.fields]
            extra["resourceVersion"] = subject.resource_version
        else:
            actor = OPERATOR
        event = AuditEvent(
            action=action,
            outcome=outcome,
            actor=actor,
            tenant=subject.tenant,
            namespace=subject.namespace,
            name=subject.name,
            key_id=key_id,
            reason=reason,
            component="operator",
            details=extra,
        )
        await asyncio.to_thread(self.log.record, event)
        rv = subject.resource_version
        if asked and rv.isdigit():
            # Edits after this point were made on this version or a later one.
            self._recorded_at[uid] = int(rv)


def audit_log(settings: AuditSettings, *, component: str) -> AuditLog | None:
    """The component's writer, or None when no audit store is configured."""
    if settings.dsn is None or not settings.dsn.get_secret_value():
        logger.warning("no audit store configured (audit.dsn): %s actions are not audited", component)
        return None
    return AuditLog(settings.dsn.get_secret_value(), component=component, stream=Stream(settings.stream))
