"""``kubectl pmkeys audit [NAME]``: the audit trail of a namespace or one key, and ``--verify``.

The trail lives in the audit store (PostgreSQL, docs/audit.md), not in the cluster, so this
command needs a reader's DSN (``--dsn`` or ``PMKEYS_AUDIT__DSN``); the namespace defaults to the
kubeconfig context's, like every other command. Records print newest first as a table, JSON,
YAML or (``--csv``) CSV; ``--verify`` checks the whole hash chain instead and fails on any finding,
also against heads noted earlier (``--checkpoint SEQ:HASH``, the ``head`` it prints).
"""

from __future__ import annotations

import argparse
import os
from typing import TextIO

import psycopg
import yaml

from pmkeys.audit import checkpoint, export
from pmkeys.audit import cli as audit_cli
from pmkeys.audit.records import Action
from pmkeys.audit.store import AuditReader, Query
from pmkeys.plugin.cluster import Cluster, CommandError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default="", help="one TenantApiKey (default: the whole namespace)")
    p.add_argument("--dsn", default="", help="audit store DSN of a reader (default: $PMKEYS_AUDIT__DSN)")
    p.add_argument("--action", action="append", default=[], choices=[a.value for a in Action])
    p.add_argument("--actor", default="", help="only this username")
    p.add_argument("--since", type=audit_cli.parse_time, default=None, help="RFC 3339 time or a duration (24h, 30d)")
    p.add_argument("--until", type=audit_cli.parse_time, default=None)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--csv", action="store_true", help="print CSV (the columns of the UI's export)")
    p.add_argument("--verify", action="store_true", help="check the hash chain of the whole trail")
    p.add_argument(
        "--checkpoint", action="append", default=[], type=audit_cli.parse_checkpoint, metavar="SEQ:HASH",
        help="with --verify: also against a head noted earlier (a later truncation or rewrite is reported)",
    )  # fmt: skip


def cmd_audit(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    dsn = args.dsn or os.environ.get("PMKEYS_AUDIT__DSN", "")
    if not dsn:
        raise CommandError("the audit trail needs the audit store: pass --dsn or set PMKEYS_AUDIT__DSN")
    try:
        if args.verify:
            _verify(dsn, tuple(args.checkpoint), out)
            return
        query = Query(
            namespace=cluster.namespace, name=args.name, actions=tuple(args.action), actor=args.actor,
            since=args.since, until=args.until, limit=args.limit,
        )  # fmt: skip
        records = AuditReader(dsn).query(query)
    except psycopg.Error as exc:
        raise CommandError(f"audit store: {exc}".strip()) from None
    if args.csv:
        out.write(export.to_csv(records))
    elif args.output == "json":
        out.write(export.to_json(records))
    elif args.output == "yaml":
        out.write(yaml.safe_dump([r.to_json() for r in records], sort_keys=False))
    else:
        out.write(export.to_table(records) if records else f"no audit records in {cluster.namespace}\n")


def _verify(dsn: str, checkpoints: tuple[checkpoint.Checkpoint, ...], out: TextIO) -> None:
    if audit_cli.run_verify(dsn, checkpoints, out):
        raise CommandError("the audit trail failed verification (the findings are above)")
