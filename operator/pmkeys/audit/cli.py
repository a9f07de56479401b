"""``pmkeys audit``: verify the chain, query the trail, run the retention sweep, set up the store.

pmkeys audit verify [--vault] [--checkpoint SEQ:HASH]
                                          exit 0 and "intact" or exit 1 with one line per finding;
                                          also against the operator's checkpoint in Vault and/or a
                                          head noted earlier (the last line prints the head)
pmkeys audit query [filters] [--format]   records newest first (table, json or csv)
pmkeys audit sweep                        remove records past the retention (the sweeper role)
pmkeys audit migrate [--retention-days]   create the schema, functions and roles (the owner)
pmkeys audit policy                       print the MutatingAdmissionPolicy that stamps actors

The DSN comes from ``--dsn`` or ``PMKEYS_AUDIT__DSN``; ``kubectl pmkeys audit`` is the same
query and verify, reached from the kubectl plugin.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from typing import TextIO

import yaml

from pmkeys.audit import admission, checkpoint, export, store
from pmkeys.audit.records import Action, Actor, StoredRecord
from pmkeys.config import AuditorSettings
from pmkeys.vault.session import VaultSession
from pmkeys.vault.store import KeyStore


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", default="", help="PostgreSQL DSN (default: $PMKEYS_AUDIT__DSN)")
    sub = p.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser("verify", help="check the hash chain")
    verify.add_argument(
        "--checkpoint", action="append", default=[], type=parse_checkpoint, metavar="SEQ:HASH",
        help="a head printed by an earlier verify: report a truncation or rewrite below it",
    )  # fmt: skip
    verify.add_argument(
        "--vault", action="store_true",
        help="also check against the operator's checkpoint in Vault ($PMKEYS_VAULT__ADDR, __TOKEN, __PREFIX)",
    )  # fmt: skip
    verify.set_defaults(audit_fn=cmd_verify)
    query = sub.add_parser("query", help="print records, newest first")
    add_query_arguments(query)
    query.set_defaults(audit_fn=cmd_query)
    sub.add_parser("sweep", help="remove records older than the retention").set_defaults(audit_fn=cmd_sweep)
    mig = sub.add_parser("migrate", help="create the audit schema and roles")
    mig.add_argument("--retention-days", type=float, default=None)
    mig.set_defaults(audit_fn=cmd_migrate)
    sub.add_parser("policy", help="print the admission policy").set_defaults(audit_fn=cmd_policy)


def add_query_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", default="")
    p.add_argument("--namespace", "-n", dest="namespace", default="")
    p.add_argument("--name", default="", help="the TenantApiKey's name")
    p.add_argument("--key-id", default="")
    p.add_argument("--action", action="append", default=[], choices=[a.value for a in Action])
    p.add_argument("--actor", default="")
    p.add_argument("--since", type=parse_time, default=None, help="RFC 3339 time, or a duration such as 24h or 30d")
    p.add_argument("--until", type=parse_time, default=None)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--format", "-o", dest="format", choices=["table", "json", "csv"], default="table")


def parse_time(text: str) -> dt.datetime:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1] in units:
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use an RFC 3339 time or a duration like 24h, 30d") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def dsn_of(args: argparse.Namespace) -> str:
    dsn = str(args.dsn or os.environ.get("PMKEYS_AUDIT__DSN", ""))
    if not dsn:
        raise SystemExit("no audit store: pass --dsn or set PMKEYS_AUDIT__DSN")
    return dsn


def query_of(args: argparse.Namespace) -> store.Query:
    return store.Query(
        tenant=args.tenant,
        namespace=args.namespace,
        name=args.name,
        key_id=args.key_id,
        actions=tuple(args.action),
        actor=args.actor,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )


def print_records(records: list[StoredRecord], fmt: str) -> None:
    render = {"table": export.to_table, "json": export.to_json, "csv": export.to_csv}[fmt]
    sys.stdout.write(render(records))


def parse_checkpoint(text: str) -> checkpoint.Checkpoint:
    try:
        return checkpoint.Checkpoint.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_verify(dsn: str, checkpoints: tuple[checkpoint.Checkpoint, ...] = (), out: TextIO | None = None) -> int:
    """Verify and print the findings, or that the trail is intact and its head; 1 on a finding."""
    out = out or sys.stdout
    reader = store.AuditReader(dsn)
    findings = reader.verify(checkpoints)
    for finding in findings:
        out.write(f"{finding}\n")
    if findings:
        out.write(f"audit trail NOT intact: {len(findings)} finding(s)\n")
        return 1
    state = reader.state()
    against = f", agrees with {len(checkpoints)} checkpoint(s)" if checkpoints else ""
    out.write(f"audit trail intact: records {state.base_seq}..{state.head_seq}{against}\n")
    out.write(f"head {state.head_seq}:{state.head_hash.hex()} (keep it: --checkpoint finds a later rewrite)\n")
    return 0


def vault_checkpoint() -> checkpoint.Checkpoint | None:
    """The operator's checkpoint, read with the Vault settings of the environment."""
    settings = AuditorSettings()
    session = VaultSession(settings.vault)
    try:
        stored = asyncio.run(checkpoint.VaultCheckpoint(KeyStore(session), settings.audit.checkpoint_path).read())
    finally:
        session.close()
    return stored.checkpoint if stored else None


def cmd_verify(args: argparse.Namespace) -> int:
    checkpoints = list(args.checkpoint)
    if args.vault:
        try:
            found = vault_checkpoint()
        except checkpoint.UnreadableCheckpoint as exc:
            sys.stdout.write(f"{exc}\naudit trail NOT verified against its checkpoint\n")
            return 1
        if found is None:
            sys.stdout.write("warning: no checkpoint in Vault (the operator writes one a minute)\n")
        else:
            checkpoints.append(found)
    return run_verify(dsn_of(args), tuple(checkpoints))


def cmd_query(args: argparse.Namespace) -> int:
    print_records(store.AuditReader(dsn_of(args)).query(query_of(args)), args.format)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    log = store.AuditLog(dsn_of(args), component="cli")
    removed, through, seq = log.sweep(Actor.system("cli"))
    sys.stdout.write(f"removed {removed} record(s) through seq {through}; sweep recorded as seq {seq}\n")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    store.migrate(dsn_of(args), retention_days=args.retention_days)
    sys.stdout.write("audit store ready\n")
    return 0


def cmd_policy(_: argparse.Namespace) -> int:
    sys.stdout.write(yaml.safe_dump_all(admission.manifests(), sort_keys=False))
    return 0


def main(args: argparse.Namespace) -> None:
    raise SystemExit(args.audit_fn(args))
