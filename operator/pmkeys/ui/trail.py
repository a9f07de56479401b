"""What the UI records itself, and how it reads the trail (for :mod:`pmkeys.ui.audit`).

The UI records what only it sees: sign-ins and failed sign-ins (with the client address) and
reveals (with the signed-in user). Creates, changes, rotations and revocations made through the
UI are recorded by the operator like any other change: the UI writes them with the user's own
token, so the admission policy stamps the signed-in user as the actor.

A reveal is audited or refused: when the store cannot take the record, the key is not shown
(503), because an unrecorded reveal is exactly what an auditor must never find.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import Request

from pmkeys.audit import export, lifecycle
from pmkeys.audit.records import Action, Actor, ActorSource, AuditEvent, Outcome, StoredRecord
from pmkeys.audit.store import AuditLog, AuditReader, AuditUnavailable
from pmkeys.audit.store import Query as TrailQuery
from pmkeys.config import UiSettings
from pmkeys.ui.errors import UiError
from pmkeys.ui.identity import User
from pmkeys.ui.schemas import AuditRecordView

logger = logging.getLogger(__name__)


@dataclass
class UiAudit:
    log: AuditLog | None
    reader: AuditReader | None

    @classmethod
    def from_settings(cls, settings: UiSettings) -> UiAudit:
        log = lifecycle.audit_log(settings.audit, component="ui")
        return cls(log, AuditReader(log.dsn) if log else None)

    def signed_in(self, user: User, address: str) -> None:
        self._record(AuditEvent(Action.SIGN_IN, Outcome.SUCCESS, _actor(user), source_address=address))

    def sign_in_failed(self, address: str, reason: str) -> None:
        actor = Actor(username="", source=ActorSource.UI)
        self._record(AuditEvent(Action.SIGN_IN_FAILED, Outcome.FAILURE, actor, source_address=address, reason=reason))

    def reveal(self, user: User, *, namespace: str, tenant: str, name: str, key_id: str, address: str) -> None:
        """Record a reveal before the key is handed out; refuse (503) when that cannot be done."""
        event = AuditEvent(
            Action.REVEAL, Outcome.SUCCESS, _actor(user), tenant=tenant, namespace=namespace, name=name,
            key_id=key_id, source_address=address, reason="plaintext shown once in the UI",
        )  # fmt: skip
        if self.log is None:
            return
        try:
            self.log.record(event, required=True)
        except AuditUnavailable:
            raise UiError(
                503, "audit_unavailable", "the audit store is unavailable: keys are not revealed until it is back"
            ) from None

    def reveal_refused(self, user: User, *, namespace: str, tenant: str, name: str, why: str, address: str) -> None:
        event = AuditEvent(
            Action.REVEAL, Outcome.DENIED, _actor(user), tenant=tenant, namespace=namespace, name=name,
            source_address=address, reason=why,
        )  # fmt: skip
        self._record(event)

    def query(self, query: TrailQuery) -> list[StoredRecord]:
        if self.reader is None:
            raise UiError(503, "audit_unavailable", "no audit store is configured for this UI")
        try:
            return self.reader.query(query)
        except Exception as exc:
            logger.warning("audit query failed: %s", type(exc).__name__)
            raise UiError(503, "audit_unavailable", "the audit store is unavailable; try again shortly") from None

    def views(self, query: TrailQuery) -> tuple[list[AuditRecordView], str]:
        """The records for a page, or why there are none to show (the page still renders)."""
        try:
            return [record_view(r) for r in self.query(query)], ""
        except UiError as err:
            return [], err.message

    def _record(self, event: AuditEvent) -> None:
        if self.log is not None:
            self.log.record(event)


def _actor(user: User) -> Actor:
    return Actor(username=user.username, groups=user.groups, source=ActorSource.UI)


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def record_view(record: StoredRecord) -> AuditRecordView:
    row = export.flat(record)
    data = record.data
    return AuditRecordView(
        seq=record.seq,
        at=record.at,
        action=row["action"],
        outcome=row["outcome"],
        actor=row["actor"],
        groups=list((data.get("actor") or {}).get("groups", [])),
        actor_source=row["actor_source"],
        source_address=row["source_address"],
        namespace=row["namespace"],
        name=row["object"],
        key_id=row["key_id"],
        reason=row["reason"],
        details=data.get("details") or {},
        hash=row["hash"],
    )
