"""The hash chain: how a record is linked to the one before it, and how a trail is checked.

``hash(n) = SHA-256(hash(n-1) || body(n))`` where ``body(n)`` is the record's JSON text exactly
as stored, and that text contains its own ``seq`` and ``at``. The store computes the link
inside its append function (one writer at a time holds the chain's head row), so writers
never see or supply hashes.

:func:`verify` walks the records in ``seq`` order and reports, each as one :class:`Finding`:

- *altered*: a body no longer hashes to its stored hash, or an indexed column (tenant,
  action, actor, …) disagrees with the hashed body;
- *removed*: a gap in ``seq``;
- *reordered*: a body whose own ``seq`` differs from its position;
- *broken-link*: a record whose link points at another hash than the one before it has (that
  one was replaced by a record with a recomputed hash);
- *truncated*: the newest record is older than the head the store recorded at its last append;
- *removed before the base*: the oldest record is not the base the last retention sweep left,
  or the base moved without a sweep record saying so.

Retention interacts with the chain through the *base*: a sweep removes the oldest records up to
some ``seq`` N, remembers ``hash(N)`` as the base hash and appends a ``retention_sweep`` record
naming N. The remaining chain still verifies from the base, and a base that moved further than
the newest sweep record says is reported. Truncation of the newest records, head row included,
is what an outside checkpoint (a SIEM copy of the stream) catches; see ``docs/audit.md``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pmkeys.audit.records import Action, StoredRecord

GENESIS_HASH = bytes(32)
#: Columns the store copies out of the body for its indexes; each must agree with the body.
INDEXED: dict[str, Callable[[dict[str, Any]], str]] = {
    "tenant": lambda d: d.get("tenant", ""),
    "namespace": lambda d: d.get("namespace", ""),
    "name": lambda d: (d.get("object") or {}).get("name", ""),
    "key_id": lambda d: d.get("key_id", ""),
    "action": lambda d: d.get("action", ""),
    "outcome": lambda d: d.get("outcome", ""),
    "actor": lambda d: (d.get("actor") or {}).get("username", ""),
}


def link(prev_hash: bytes, body: str) -> bytes:
    return hashlib.sha256(prev_hash + body.encode()).digest()


@dataclass(frozen=True)
class ChainState:
    """The store's bookkeeping row: oldest kept record (base) and newest appended (head)."""

    base_seq: int
    base_hash: bytes
    head_seq: int
    head_hash: bytes


@dataclass(frozen=True)
class Row:
    """A record with the indexed columns as stored (which a tamperer may change separately)."""

    record: StoredRecord
    columns: dict[str, str]


@dataclass(frozen=True)
class Finding:
    kind: str  # altered | removed | reordered | broken-link | truncated | removed-before-base
    seq: int
    message: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.message}"


@dataclass
class _Walk:
    state: ChainState
    findings: list[Finding]
    expected_seq: int
    prev_hash: bytes
    last_sweep_through: int | None = None
    seen: int = 0
    #: Whether the previous record had a finding of its own (then a broken link is its echo).
    prev_flagged: bool = False

    def step(self, row: Row) -> None:
        rec = row.record
        self.seen += 1
        before = len(self.findings)
        gap = rec.seq > self.expected_seq
        if gap:
            self._gap(rec.seq)
        data = _parse(rec, self.findings)
        if data is not None:
            self._check_body(rec, data, row.columns)
        if link(rec.prev_hash, rec.body) != rec.hash:
            self.findings.append(Finding("altered", rec.seq, "the record's content no longer matches its hash"))
        flagged = len(self.findings) > before
        if not (gap or flagged or self.prev_flagged) and rec.prev_hash != self.prev_hash:
            self.findings.append(
                Finding("broken-link", rec.seq, "the record before this one was replaced (its hash changed)")
            )
        self.prev_flagged = flagged
        self.expected_seq = rec.seq + 1
        self.prev_hash = rec.hash

    def _gap(self, seq: int) -> None:
        first, last = self.expected_seq, seq - 1
        what = f"record {first}" if first == last else f"records {first}..{last}"
        self.findings.append(Finding("removed", first, f"{what} missing from the trail"))

    def _check_body(self, rec: StoredRecord, data: dict[str, Any], columns: dict[str, str]) -> None:
        if data.get("seq") != rec.seq:
            self.findings.append(
                Finding("reordered", rec.seq, f"the record at this position says it is seq {data.get('seq')}")
            )
        if _body_time(data) != rec.at:
            self.findings.append(Finding("altered", rec.seq, "the stored time differs from the hashed record"))
        for column, extract in INDEXED.items():
            if column in columns and columns[column] != extract(data):
                self.findings.append(Finding("altered", rec.seq, f"column {column!r} differs from the hashed record"))
        if data.get("action") == Action.RETENTION_SWEEP and (data.get("details") or {}).get("removed", 0) > 0:
            self.last_sweep_through = int(data["details"]["removed_through_seq"])

    def finish(self) -> None:
        state = self.state
        if self.expected_seq <= state.head_seq:
            self._truncated()
        elif self.seen and self.prev_hash != state.head_hash:
            self.findings.append(Finding("altered", state.head_seq, "the newest record is not the recorded head"))
        swept_through = self.last_sweep_through or 0
        if state.base_seq != swept_through + 1:
            self.findings.append(
                Finding(
                    "removed-before-base",
                    state.base_seq,
                    f"the oldest kept record is {state.base_seq} but the last retention sweep removed "
                    f"records through {swept_through}",
                )
            )

    def _truncated(self) -> None:
        first, head = self.expected_seq, self.state.head_seq
        self.findings.append(
            Finding("truncated", first, f"records {first}..{head} (the newest) were removed; the head is {head}")
        )


def _parse(rec: StoredRecord, findings: list[Finding]) -> dict[str, Any] | None:
    try:
        data = json.loads(rec.body)
    except ValueError:
        findings.append(Finding("altered", rec.seq, "the record is not valid JSON"))
        return None
    return data if isinstance(data, dict) else None


def _body_time(data: dict[str, Any]) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(data.get("at", "")))
    except ValueError:
        return None


def verify(state: ChainState, rows: Iterable[Row]) -> list[Finding]:
    """Every inconsistency of a trail, oldest first; an empty list means it is intact."""
    walk = _Walk(state, [], expected_seq=state.base_seq, prev_hash=state.base_hash)
    first = True
    for row in rows:
        if first and row.record.seq < state.base_seq:
            walk.expected_seq = row.record.seq
        first = False
        walk.step(row)
    walk.finish()
    return _merged(walk.findings)


def _merged(findings: list[Finding]) -> list[Finding]:
    """One finding per (kind, seq): a changed record fails several checks at once."""
    merged: dict[tuple[str, int], Finding] = {}
    for f in findings:
        key = (f.kind, f.seq)
        if key in merged:
            merged[key] = Finding(f.kind, f.seq, f"{merged[key].message}; {f.message}")
        else:
            merged[key] = f
    return list(merged.values())
