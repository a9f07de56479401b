"""One audit record, and the refusal to carry anything secret.

A record names the actor (Kubernetes username and groups, or the UI's signed-in user), the
source address where one is known, the tenant, namespace and object, the key id, the action,
the outcome and a reason, plus action-specific ``details`` (what changed, how many failures).
The store adds the sequence number and the time, so no writer can backdate a record.

Defence in depth: :func:`refuse_secrets` rejects any record whose text contains something
shaped like an API key (``pm_live_…``/``pm_test_…`` followed by key characters) or a bcrypt
hash (``$2b$…``). Callers never put those in, and this check makes a slip an error instead
of a leak into a store that is kept for a year.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    ROTATE = "rotate"
    REVEAL = "reveal"
    REVOKE = "revoke"
    DELETE = "delete"
    EXPIRE = "expire"
    GRACE_ENDED = "grace_ended"
    PLAN_CHANGE = "plan_change"
    SIGN_IN = "sign_in"
    SIGN_IN_FAILED = "sign_in_failed"
    VERIFY_FAILED = "verify_failed"
    RETENTION_SWEEP = "retention_sweep"
    REFUSED = "refused"
    #: A writer had to drop queued records (its queue was full while the store was unreachable).
    RECORDS_LOST = "records_lost"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


#: Where the actor came from: the admission stamp, the UI session, the component itself.
class ActorSource(StrEnum):
    ADMISSION = "admission"
    UI = "ui"
    SYSTEM = "system"
    UNKNOWN = "unknown"


_KEY_SHAPE = re.compile(r"pm_(?:live|test)_[0-9A-Za-z]{8,}")
_BCRYPT_SHAPE = re.compile(r"\$2[abxy]?\$\d{2}\$[./0-9A-Za-z]{10,}")


class SecretInRecord(ValueError):
    """A record carried something shaped like a key or a bcrypt hash; it was not written."""


@dataclass(frozen=True)
class Actor:
    username: str
    groups: tuple[str, ...] = ()
    source: ActorSource = ActorSource.UNKNOWN

    def to_json(self) -> dict[str, Any]:
        return {"username": self.username, "groups": list(self.groups), "source": str(self.source)}

    @classmethod
    def system(cls, component: str) -> Actor:
        return cls(username=f"pmkeys:{component}", source=ActorSource.SYSTEM)


UNKNOWN_ACTOR = Actor(username="", source=ActorSource.UNKNOWN)


@dataclass(frozen=True)
class AuditEvent:
    """What a writer hands to the store; the store assigns ``seq`` and ``at``."""

    action: Action
    outcome: Outcome
    actor: Actor
    tenant: str = ""
    namespace: str = ""
    name: str = ""
    key_id: str = ""
    reason: str = ""
    source_address: str = ""
    component: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        out = {
            "action": str(self.action),
            "outcome": str(self.outcome),
            "actor": self.actor.to_json(),
            "tenant": self.tenant,
            "namespace": self.namespace,
            "object": {"kind": "TenantApiKey", "name": self.name} if self.name else {},
            "key_id": self.key_id,
            "reason": self.reason,
            "source_address": self.source_address,
            "component": self.component,
            "details": self.details,
        }
        refuse_secrets(json.dumps(out))
        return out


def refuse_secrets(text: str) -> None:
    if _KEY_SHAPE.search(text) or _BCRYPT_SHAPE.search(text):
        raise SecretInRecord("an audit record may not contain an API key or a bcrypt hash; it was not written")


@dataclass(frozen=True)
class StoredRecord:
    """A record as read back: the hashed body plus its place in the chain."""

    seq: int
    at: dt.datetime
    body: str
    prev_hash: bytes
    hash: bytes

    @property
    def data(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def to_json(self) -> dict[str, Any]:
        """The record for people and SIEMs: its fields plus the chain hash (hex)."""
        return {**self.data, "hash": self.hash.hex(), "prev_hash": self.prev_hash.hex()}
