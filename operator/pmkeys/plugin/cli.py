"""The plugin's command line: flags accepted before and after the command, and ``main``."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from pmkeys import __version__
from pmkeys.api.durations import parse_duration
from pmkeys.plugin.audit import add_arguments as add_audit_arguments
from pmkeys.plugin.audit import cmd_audit
from pmkeys.plugin.cluster import Cluster, CommandError
from pmkeys.plugin.commands import COMMANDS


def _timeout(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser, *, top: bool) -> None:
    """Flags accepted before and after the command (``-n acme list`` and ``list -n acme``)."""
    default = (lambda value: value) if top else (lambda _: argparse.SUPPRESS)
    p.add_argument("-n", "--namespace", default=default(None), help="namespace (default: the context's)")
    p.add_argument(
        "-A", "--all-namespaces", action="store_true", default=default(False), help="list/usage: every namespace"
    )
    p.add_argument("--kubeconfig", default=default(None), help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", default=default(None), help="kubeconfig context")
    p.add_argument(
        "-o",
        "--output",
        choices=["table", "json", "yaml"],
        default=default("table"),
        help="output format (default: table)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubectl pmkeys", description="Manage PenguinMails TenantApiKeys.")
    p.add_argument("--version", action="version", version=f"kubectl-pmkeys {__version__}")
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *, named: bool = True) -> argparse.ArgumentParser:
        cp = sub.add_parser(name, help=help_text, description=help_text)
        _common(cp, top=False)
        if named:
            cp.add_argument("name", help="TenantApiKey name")
        return cp

    command("list", "list TenantApiKeys", named=False)
    command("plan", "the namespace's TenantPlan: tier, keys used of the most allowed, limits", named=False)
    command("describe", "show one key: spec, status, conditions, previous keys, Events")
    rotate = command("rotate", "issue a new key now by bumping spec.rotation.counter")
    rotate.add_argument(
        "--grace", default=None, help="also set spec.rotation.gracePeriod (e.g. 1h; 0 revokes the old key at once)"
    )
    revoke = command("revoke", "revoke the key for good (spec.revoked: true)")
    revoke.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    for cp in (rotate, revoke):
        cp.add_argument("--wait", action="store_true", help="wait until the operator has acted")
        cp.add_argument("--timeout", type=_timeout, default=60.0, help="with --wait: how long (default 60s)")
    command("reveal", "print the key once (marks its Secret as revealed)")
    usage = command("usage", "requests, errors and last use, from status", named=False)
    usage.add_argument("name", nargs="?", default=None, help="one TenantApiKey (default: all)")
    add_audit_arguments(
        command("audit", "the audit trail of the namespace or one key (--verify: the chain)", named=False)
    )
    return p


def main(argv: list[str] | None = None, *, out: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cluster = Cluster(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)
        {**COMMANDS, "audit": cmd_audit}[args.command](cluster, args, out or sys.stdout)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
