"""Audit records as people read them: a flat row per record, CSV or JSON.

The UI's export buttons, ``kubectl pmkeys audit`` and ``pmkeys audit query`` all print
through here, so a CSV from the UI and one from the command line have the same columns.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from pmkeys.audit.records import StoredRecord

COLUMNS = (
    "seq", "at", "action", "outcome", "actor", "groups", "actor_source", "source_address", "tenant",
    "namespace", "object", "key_id", "reason", "component", "details", "hash",
)  # fmt: skip


def flat(record: StoredRecord) -> dict[str, Any]:
    data = record.data
    actor = data.get("actor") or {}
    return {
        "seq": record.seq,
        "at": data.get("at", ""),
        "action": data.get("action", ""),
        "outcome": data.get("outcome", ""),
        "actor": actor.get("username", ""),
        "groups": ",".join(actor.get("groups", [])),
        "actor_source": actor.get("source", ""),
        "source_address": data.get("source_address", ""),
        "tenant": data.get("tenant", ""),
        "namespace": data.get("namespace", ""),
        "object": (data.get("object") or {}).get("name", ""),
        "key_id": data.get("key_id", ""),
        "reason": data.get("reason", ""),
        "component": data.get("component", ""),
        "details": json.dumps(data.get("details") or {}, sort_keys=True),
        "hash": record.hash.hex(),
    }


def to_csv(records: Iterable[StoredRecord]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    for record in records:
        writer.writerow(flat(record))
    return out.getvalue()


def to_json(records: Iterable[StoredRecord]) -> str:
    return json.dumps([r.to_json() for r in records], indent=2, sort_keys=True) + "\n"


def to_table(records: Iterable[StoredRecord]) -> str:
    cols = ("seq", "at", "action", "outcome", "actor", "namespace", "object", "key_id", "reason")
    rows = [[str(flat(r)[c]) for c in cols] for r in records]
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"
