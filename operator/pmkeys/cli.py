"""``pmkeys``: run a component, bring up the local environment, print deployable artefacts.

pmkeys operator            run the kopf operator (settings from PMKEYS_* variables)
pmkeys verifier            run the verifier HTTP service
pmkeys ui                  run the self-service web UI
pmkeys dev up|down|env     the local control plane + OpenBao, in the background (--node: a real node)
pmkeys demo                dev up + every component + examples/, then a tour
pmkeys crd                 print the CRD generated from the model
pmkeys vault-policy NAME   print the Vault policy of a component
pmkeys audit ...           verify, query and sweep the audit trail (see pmkeys.audit.cli)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import types
from pathlib import Path

from pmkeys import __version__


def _setup_logging(level: str) -> None:
    from pmkeys import redaction

    redaction.configure(level)


def cmd_operator(_: argparse.Namespace) -> None:
    from pmkeys.config import OperatorSettings
    from pmkeys.reconcile import handlers

    settings = OperatorSettings()
    _setup_logging(settings.log_level)
    asyncio.run(handlers.run(settings))


def cmd_verifier(args: argparse.Namespace) -> None:
    from pmkeys.config import VerifierSettings
    from pmkeys.verify import service

    overrides = {"redis_url": args.redis} if args.redis else {}
    settings = VerifierSettings(**overrides)
    _setup_logging(settings.log_level)
    try:
        service.run(settings)
    except service.StartupRefused as exc:
        sys.exit(f"pmkeys verifier: {exc}")


def cmd_ui(_: argparse.Namespace) -> None:
    from pmkeys.config import UiSettings
    from pmkeys.ui import app

    settings = UiSettings()
    _setup_logging(settings.log_level)
    app.run(settings)


def cmd_crd(_: argparse.Namespace) -> None:
    from pmkeys.api import crd

    sys.stdout.write(crd.render())


def cmd_vault_policy(args: argparse.Namespace) -> None:
    from pmkeys.vault.policies import POLICIES

    sys.stdout.write(POLICIES[args.component](mount=args.mount, prefix=args.prefix))


def cmd_audit(args: argparse.Namespace) -> None:
    from pmkeys.audit import cli

    cli.main(args)


def _devenv_demo() -> types.ModuleType:
    """The local environment lives in the separate ``pmkeys-dev`` package (``dev/``), which the
    image does not ship; ``make venv`` installs it beside pmkeys."""
    try:
        return importlib.import_module("pmkeys_dev.demo")
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("pmkeys_dev"):
            raise
        raise SystemExit(
            "pmkeys dev and pmkeys demo need the development package: pip install -e dev/ (make venv does it)"
        ) from None


def cmd_dev(args: argparse.Namespace) -> None:
    demo = _devenv_demo()
    {"up": demo.up, "down": demo.down, "env": demo.print_env}[args.action](args)


def cmd_demo(args: argparse.Namespace) -> None:
    _devenv_demo().demo(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pmkeys", description="Self-service API keys for PenguinMails tenants.")
    p.add_argument("--version", action="version", version=f"pmkeys {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("operator", help="run the operator").set_defaults(fn=cmd_operator)
    verifier = sub.add_parser("verifier", help="run the verifier HTTP service")
    verifier.add_argument("--redis", metavar="URL", default="", help="share rate limits and usage through Redis")
    verifier.set_defaults(fn=cmd_verifier)
    sub.add_parser("ui", help="run the self-service web UI").set_defaults(fn=cmd_ui)
    sub.add_parser("crd", help="print the TenantApiKey CRD").set_defaults(fn=cmd_crd)
    pol = sub.add_parser("vault-policy", help="print a component's Vault policy")
    pol.add_argument("component", choices=["operator", "verifier"])
    pol.add_argument("--mount", default="secret")
    pol.add_argument("--prefix", default="pmkeys")
    pol.set_defaults(fn=cmd_vault_policy)
    from pmkeys.audit import cli as audit_cli

    audit = sub.add_parser("audit", help="verify, query and sweep the audit trail")
    audit_cli.add_arguments(audit)
    audit.set_defaults(fn=cmd_audit)
    dev = sub.add_parser("dev", help="the local environment (control plane + OpenBao)")
    dev.add_argument("action", choices=["up", "down", "env"])
    dev.add_argument("--state", type=Path, default=None, help="state file (default .cache/dev/state.json)")
    dev.add_argument("--components", action="store_true", help="also start operator, verifier and UI")
    dev.add_argument("--bcrypt-cost", type=int, default=12)
    dev.add_argument("--node", action="store_true", help="a real node (kubelet, containerd; root): the chart in pods")
    dev.set_defaults(fn=cmd_dev)
    demo = sub.add_parser("demo", help="bring everything up, apply examples/ and show the result")
    demo.add_argument("--state", type=Path, default=None)
    demo.add_argument("--bcrypt-cost", type=int, default=12)
    demo.add_argument("--examples", type=Path, default=None)
    demo.add_argument("--node", action="store_true", help="helm install the chart on a real local node instead")
    demo.set_defaults(fn=cmd_demo, components=True)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.fn(args)
