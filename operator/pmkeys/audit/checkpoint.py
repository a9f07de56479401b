"""The chain's head, kept outside the database, so that rewriting the database is not enough.

The hash chain (:mod:`pmkeys.audit.chain`) finds a record changed, removed or reordered *inside*
the trail, but everything it checks lives in the same database: someone with write access to it
(a DB superuser, a stolen admin password, a restored old backup) can delete the newest records
and set the head row back, or rewrite the chain from any record on with recomputed hashes, and
the trail verifies again. A checkpoint of the head — ``(seq, hash)`` of the newest record, its
time, and the retention then in force — kept where that person cannot write closes it:

- **Where**: Vault KV v2 at ``<prefix>/<audit.checkpoint_path>`` (default
  ``pmkeys/audit/checkpoint``). Vault is already there and already separates duties: only the
  operator's policy writes under the prefix; the verifier's reads key records and the pepper
  only; the UI, tenants and other pods have no Vault token for it; the database's admins need
  not have any Vault access. KV v2 keeps earlier versions of the checkpoint, too.
- **Who writes**: the active operator, every ``audit.checkpoint_seconds`` (60 s), through the
  leadership fence like every other Vault write. It only ever *advances* the checkpoint along
  the same history: before writing a new head it checks that the old checkpointed record is
  still there with the same hash (or was removed by a sweep after its retention ran out).
  When it is not, the checkpoint stays where it was, the operator logs an error and
  ``pmkeys_operator_audit_checkpoint_mismatch`` is 1: a truncation cannot be laundered by
  waiting for the next checkpoint. The retention in a checkpoint never goes down on its own
  (a retention shortened in the database, then swept, is reported); an operator who shortens
  it on purpose deletes the checkpoint in Vault after the next sweep.
- **Who checks**: ``pmkeys audit verify --vault`` (a Vault token that may read the checkpoint)
  or ``--checkpoint SEQ:HASH`` (a head an auditor noted earlier: ``verify`` prints the head it
  verified on its last line for that purpose). Findings: *truncated* (the trail ends before the
  checkpoint), *rewritten* (the checkpointed record's hash changed: the chain was recomputed
  from somewhere at or before it), *removed-within-retention* (the checkpointed record was
  swept although the retention in force when it was checkpointed still kept it; a head noted
  by hand has no time, and once it is swept it is not checked).

What it cannot see: a rewrite of records newer than the newest checkpoint (at most
``checkpoint_seconds`` of records; the SIEM stream has them), and an attacker who can write
both the database and the checkpoint in Vault.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pmkeys.audit import chain
from pmkeys.audit.chain import Finding
from pmkeys.audit.records import StoredRecord
from pmkeys.tenantapikey import TIME_FORMAT
from pmkeys.vault.store import KeyStore

logger = logging.getLogger(__name__)
_SPOKEN = re.compile(r"^(\d+):([0-9a-f]{64})$")


@dataclass(frozen=True)
class Checkpoint:
    """A head of the chain as it was when someone outside the database looked."""

    seq: int
    hash: bytes
    #: The checkpointed record's time and the retention in force (unknown for a noted head).
    at: dt.datetime | None = None
    retention_seconds: float = 0.0
    written_at: dt.datetime | None = None
    #: The peering identity of the operator that wrote it.
    writer: str = ""

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash.hex()}"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """``SEQ:HASH`` as ``pmkeys audit verify`` prints it."""
        found = _SPOKEN.match(text.strip())
        if found is None:
            raise ValueError(f"{text!r}: a checkpoint is SEQ:HASH (the sequence number and 64 hex digits)")
        return cls(int(found[1]), bytes.fromhex(found[2]))

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash.hex(),
            "at": self.at.isoformat() if self.at else None,
            "retention_seconds": self.retention_seconds,
            "written_at": self.written_at.isoformat() if self.written_at else None,
            "writer": self.writer,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        def when(value: Any) -> dt.datetime | None:
            return dt.datetime.fromisoformat(value) if value else None

        return cls(
            seq=int(data["seq"]),
            hash=bytes.fromhex(str(data["hash"])),
            at=when(data.get("at")),
            retention_seconds=float(data.get("retention_seconds") or 0.0),
            written_at=when(data.get("written_at")),
            writer=str(data.get("writer") or ""),
        )


@dataclass(frozen=True)
class Head:
    """What the database says now: head, base, retention, and the stored hash of one record."""

    seq: int
    hash: bytes
    at: dt.datetime | None
    base_seq: int
    base_hash: bytes
    retention_seconds: float
    #: The stored hash of the record asked about (None: no such record).
    hash_of_asked: bytes | None


def read_head(conn: psycopg.Connection[Any]) -> Head:
    """The store's own account of its head; its hashes are checked by following the records."""
    row = conn.execute("SELECT * FROM pmkeys_audit.head(0)").fetchone()
    assert row is not None
    seq, digest, at, base_seq, base_hash, retention, asked_hash = row
    return Head(
        int(seq), bytes(digest), at, int(base_seq), bytes(base_hash), float(retention),
        bytes(asked_hash) if asked_hash is not None else None,
    )  # fmt: skip


@dataclass
class Followed:
    """The records from a checkpoint on, their links recomputed here, not taken from the store."""

    #: The checkpointed record's hash, if it is there and its body still hashes to it.
    hash_at_checkpoint: bytes | None = None
    #: The newest record of an unbroken run of links (from the checkpoint, or from the base).
    last: StoredRecord | None = None
    breaks: list[Finding] = field(default_factory=list)

    def take(self, rec: StoredRecord, *, checkpoint_seq: int, base_hash: bytes) -> bool:
        """One more record, oldest first; False once the run is broken (stop there)."""
        links = chain.link(rec.prev_hash, rec.body) == rec.hash
        if not links:
            self.breaks.append(Finding("altered", rec.seq, "the record's content no longer matches its hash"))
            return False
        expected = (self.last.seq + 1, self.last.hash) if self.last else None
        if expected is not None and (rec.seq, rec.prev_hash) != expected:
            self.breaks.append(Finding("broken-link", rec.seq, f"does not follow record {self.last.seq}"))  # type: ignore[union-attr]
            return False
        if expected is None and rec.seq != checkpoint_seq and rec.prev_hash != base_hash:
            self.breaks.append(Finding("broken-link", rec.seq, "the oldest record does not follow the base"))
            return False
        if rec.seq == checkpoint_seq:
            self.hash_at_checkpoint = rec.hash
        self.last = rec
        return True


def follow(cp_seq: int, rows: Iterable[StoredRecord], *, base_hash: bytes) -> Followed:
    followed = Followed()
    for rec in rows:
        if not followed.take(rec, checkpoint_seq=cp_seq, base_hash=base_hash):
            break
    return followed


def findings(cp: Checkpoint, head: Head, *, now: dt.datetime) -> list[Finding]:
    """How the trail disagrees with ``cp``; ``head.hash_of_asked`` must be the hash of record
    ``cp.seq`` as recomputed by the caller (:func:`follow`), ``head.seq`` the newest record."""
    seen = f"the checkpoint{_written(cp)} saw seq {cp.seq}"
    if cp.seq > head.seq:
        return [Finding("truncated", head.seq + 1, f"{seen} but the trail ends at seq {head.seq}")]
    if cp.seq >= head.base_seq:
        if head.hash_of_asked is None:
            return [Finding("removed", cp.seq, f"{seen}; that record is missing")]
        if head.hash_of_asked != cp.hash:
            return [Finding("rewritten", cp.seq, f"{seen} with another hash: the chain was recomputed")]
        return []
    if cp.seq == head.base_seq - 1:
        if head.base_hash != cp.hash:
            return [Finding("rewritten", cp.seq, f"{seen} with another hash than the base the last sweep left")]
        return []
    if cp.at is None:
        # A head noted by hand carries no time: once swept, it proves nothing either way.
        return []
    kept_until = cp.at + dt.timedelta(seconds=cp.retention_seconds)
    if kept_until > now:
        removed = f"records through seq {head.base_seq - 1} were removed"
        message = f"{seen} (kept until {kept_until.strftime(TIME_FORMAT)}); {removed}"
        return [Finding("removed-within-retention", cp.seq, message)]
    return []


def _written(cp: Checkpoint) -> str:
    return f" of {cp.written_at.strftime(TIME_FORMAT)}" if cp.written_at else ""


class UnreadableCheckpoint(ValueError):
    """The checkpoint document in Vault is not one (someone wrote it by hand, or tampered)."""


@dataclass(frozen=True)
class Stored:
    checkpoint: Checkpoint
    version: int


class VaultCheckpoint:
    """The checkpoint document in Vault, read and written check-and-set."""

    def __init__(self, store: KeyStore, name: str) -> None:
        self.store = store
        self.name = name

    async def read(self) -> Stored | None:
        found = await self.store.read_document(self.name)
        if found is None:
            return None
        try:
            return Stored(Checkpoint.from_json(found.value), found.version)
        except (KeyError, TypeError, ValueError) as exc:
            raise UnreadableCheckpoint(f"the checkpoint at {self.name!r} in Vault is unreadable: {exc!r}") from None

    async def write(self, cp: Checkpoint, *, cas: int) -> int:
        return await self.store.write_document(self.name, cp.to_json(), cas=cas)
