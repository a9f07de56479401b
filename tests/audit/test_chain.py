"""The chain check on its own: every kind of tampering is named, an intact trail has no finding."""

from __future__ import annotations

import datetime as dt
import json

from pmkeys.audit import chain
from pmkeys.audit.records import StoredRecord

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _trail(n: int) -> tuple[chain.ChainState, list[chain.Row]]:
    rows, prev = [], chain.GENESIS_HASH
    for seq in range(1, n + 1):
        at = T0 + dt.timedelta(seconds=seq)
        body = json.dumps({"seq": seq, "at": at.isoformat(), "action": "create", "outcome": "success", "tenant": "t"})
        digest = chain.link(prev, body)
        rows.append(chain.Row(StoredRecord(seq, at, body, prev, digest), {"tenant": "t", "action": "create"}))
        prev = digest
    return chain.ChainState(1, chain.GENESIS_HASH, n, prev), rows


def _kinds(findings: list[chain.Finding]) -> list[tuple[str, int]]:
    return [(f.kind, f.seq) for f in findings]


def test_an_untouched_trail_has_no_findings() -> None:
    state, rows = _trail(6)
    assert chain.verify(state, rows) == []


def test_a_changed_body_is_reported_at_its_seq() -> None:
    state, rows = _trail(6)
    rec = rows[2].record
    forged = rec.body.replace('"create"', '"revoke"')
    rows[2] = chain.Row(StoredRecord(rec.seq, rec.at, forged, rec.prev_hash, rec.hash), rows[2].columns)
    assert _kinds(chain.verify(state, rows)) == [("altered", 3)]


def test_a_changed_index_column_is_reported() -> None:
    state, rows = _trail(4)
    rows[1] = chain.Row(rows[1].record, {"tenant": "other", "action": "create"})
    assert _kinds(chain.verify(state, rows)) == [("altered", 2)]


def test_a_rehashed_forgery_breaks_the_next_link() -> None:
    state, rows = _trail(5)
    rec = rows[1].record
    forged = rec.body.replace('"create"', '"revoke"')
    rows[1] = chain.Row(StoredRecord(2, rec.at, forged, rec.prev_hash, chain.link(rec.prev_hash, forged)), {})
    assert _kinds(chain.verify(state, rows)) == [("broken-link", 3)]


def test_a_removed_record_is_a_gap() -> None:
    state, rows = _trail(6)
    del rows[3]
    assert _kinds(chain.verify(state, rows)) == [("removed", 4)]


def test_two_swapped_records_are_both_reported() -> None:
    state, rows = _trail(6)
    a, b = rows[1].record, rows[4].record
    rows[1] = chain.Row(StoredRecord(2, a.at, b.body, b.prev_hash, b.hash), {})
    rows[4] = chain.Row(StoredRecord(5, b.at, a.body, a.prev_hash, a.hash), {})
    kinds = _kinds(chain.verify(state, rows))
    assert ("reordered", 2) in kinds and ("reordered", 5) in kinds
    assert {seq for _, seq in kinds} == {2, 5}


def test_removing_the_newest_records_is_a_truncation() -> None:
    state, rows = _trail(6)
    assert _kinds(chain.verify(state, rows[:4])) == [("truncated", 5)]


def test_removing_the_oldest_records_without_a_sweep_is_reported() -> None:
    state, rows = _trail(6)
    moved = chain.ChainState(3, rows[1].record.hash, state.head_seq, state.head_hash)
    assert _kinds(chain.verify(moved, rows[2:])) == [("removed-before-base", 3)]
