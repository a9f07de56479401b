"""What Vault holds about each key, and the per-object index of its keys.

Layout under ``<mount>/<prefix>/`` (KV v2, every write check-and-set):

``keys/<digest>``
    :class:`KeyRecord`: the bcrypt hash and everything verification needs. Never the key.
``owners/<uid>``
    :class:`OwnerIndex`: the keys of one ``TenantApiKey`` object, ``key_id → digest``. The
    operator writes an entry *before* the key reaches its Secret, so the index is also the
    intent log crash recovery reads: an entry whose key is in the Secret but has no record
    gets its record; any other entry without an active place is revoked.
``pepper``
    The digest pepper versions (see :mod:`pmkeys.keys.digest`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from pmkeys.api.vocabulary import Scope, Tier


class KeyState(StrEnum):
    ACTIVE = "active"
    RETIRING = "retiring"
    REVOKED = "revoked"


class KeyRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    key_id: str
    tenant: str
    namespace: str
    name: str
    uid: str
    bcrypt: str = Field(repr=False)
    scopes: list[Scope]
    tier: Tier
    rate_limit: int
    state: KeyState = KeyState.ACTIVE
    created_at: datetime
    not_after: datetime | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    pepper_version: int
    display_prefix: str

    def usable_at(self, now: datetime) -> bool:
        if self.state is KeyState.REVOKED:
            return False
        return self.not_after is None or now < self.not_after


class Intent(StrEnum):
    """Why a key was made; recovery after a crash finishes that intent."""

    #: The object's first key.
    ISSUE = "issue"
    #: A scheduled or manual rotation: the superseded key keeps working for the grace period.
    ROTATE = "rotate"
    #: The Secret was lost or altered: the superseded key is revoked at once.
    REPAIR = "repair"


class EntryState(StrEnum):
    #: Written before the key reached its Secret; becomes active once its record exists.
    PENDING = "pending"
    ACTIVE = "active"
    RETIRING = "retiring"
    REVOKED = "revoked"


class OwnerEntry(BaseModel):
    """One key of one TenantApiKey, as the owner index remembers it."""

    model_config = ConfigDict(frozen=True)

    digest: str
    display_prefix: str
    state: EntryState = EntryState.PENDING
    #: Why the key was made: issue, rotate or repair; recovery finishes that intent.
    intent: Intent = Intent.ISSUE
    #: The key this one replaces (rotate/repair), if any, and the grace it gets.
    supersedes: str | None = None
    grace_seconds: int = 0
    issued_at: datetime
    not_after: datetime | None = None
    #: The manual-rotation trigger values this key satisfied (spec counter, annotation).
    counter: int = 0
    annotation: str = ""
    #: Restart targets were patched after this key was issued.
    restarted: bool = False


class OwnerIndex(BaseModel):
    model_config = ConfigDict(frozen=True)

    namespace: str
    name: str
    keys: dict[str, OwnerEntry] = Field(default_factory=dict)
