"""How a trail is judged against a checkpoint of its head (pure: no servers)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from pmkeys.audit.chain import link
from pmkeys.audit.checkpoint import Checkpoint, Head, findings, follow
from pmkeys.audit.records import StoredRecord

NOW = dt.datetime(2027, 1, 15, 8, 0, tzinfo=dt.UTC)
H = bytes([7]) * 32
OTHER = bytes([9]) * 32
DAY = 86400.0


def head(seq: int = 20, *, base: int = 1, base_hash: bytes = bytes(32), asked: bytes | None = H) -> Head:
    return Head(seq, OTHER, NOW, base, base_hash, 400 * DAY, asked)


def cp(seq: int = 10, *, age_days: float = 0.0, retention_days: float = 400.0) -> Checkpoint:
    return Checkpoint(seq, H, NOW - dt.timedelta(days=age_days), retention_days * DAY, NOW)


@pytest.mark.parametrize(
    ("checkpoint", "trail", "kind"),
    [
        (cp(), head(), None),  # the checkpointed record is there with its hash: the trail grew
        (cp(), head(seq=7), "truncated"),
        (cp(), head(asked=None), "removed"),
        (cp(), head(asked=OTHER), "rewritten"),
        (cp(), head(base=11, base_hash=H, asked=None), None),  # swept exactly through it
        (cp(), head(base=11, base_hash=OTHER, asked=None), "rewritten"),
        (cp(age_days=1), head(base=15, asked=None), "removed-within-retention"),
        (cp(age_days=401), head(base=15, asked=None), None),  # past its retention: may be swept
        (Checkpoint(10, H), head(base=15, asked=None), None),  # a noted head carries no time
    ],
)
def test_findings_against_a_checkpoint(checkpoint: Checkpoint, trail: Head, kind: str | None) -> None:
    found = findings(checkpoint, trail, now=NOW)
    assert [f.kind for f in found] == ([kind] if kind else [])


def test_a_noted_checkpoint_round_trips_and_bad_ones_say_what_is_expected() -> None:
    noted = Checkpoint(12, H)
    assert Checkpoint.parse(str(noted)) == noted
    assert Checkpoint.from_json(cp().to_json()) == cp()
    with pytest.raises(ValueError, match="SEQ:HASH"):
        Checkpoint.parse("12:abc")


def _chain(count: int, *, start: int = 1, prev: bytes = bytes(32)) -> list[StoredRecord]:
    records = []
    for seq in range(start, start + count):
        body = f'{{"seq": {seq}}}'
        digest = link(prev, body)
        records.append(StoredRecord(seq, NOW, body, prev, digest))
        prev = digest
    return records


def test_following_recomputes_every_link_from_the_checkpoint() -> None:
    records = _chain(6)
    followed = follow(3, records[2:], base_hash=bytes(32))
    assert followed.hash_at_checkpoint == records[2].hash and followed.last == records[-1] and not followed.breaks
    forged = [*records[2:4], dataclasses.replace(records[4], body='{"seq": 5, "x": 1}'), records[5]]
    followed = follow(3, forged, base_hash=bytes(32))
    assert followed.last == records[3] and [f.kind for f in followed.breaks] == ["altered"]
    relinked = [*records[2:4], *_chain(2, start=5, prev=OTHER)]  # consistent, but not after record 4
    assert [f.kind for f in follow(3, relinked, base_hash=bytes(32)).breaks] == ["broken-link"]
    swept = follow(1, records[3:], base_hash=records[2].hash)  # the checkpoint was swept: from the base
    assert swept.hash_at_checkpoint is None and swept.last == records[-1] and not swept.breaks
    assert [f.kind for f in follow(1, records[3:], base_hash=OTHER).breaks] == ["broken-link"]
