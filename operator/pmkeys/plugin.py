"""``kubectl pmkeys``: everyday commands on TenantApiKeys, as the kubectl plugin ``kubectl-pmkeys``.

    kubectl pmkeys list                      keys in the namespace (-A: every namespace)
    kubectl pmkeys describe NAME             spec, status, conditions, previous keys, Events
    kubectl pmkeys rotate NAME [--grace 1h]  issue a new key now (bumps spec.rotation.counter)
    kubectl pmkeys revoke NAME [--yes]       revoke for good (asks first)
    kubectl pmkeys reveal NAME               print the key, once
    kubectl pmkeys usage [NAME]              requests, errors, last use

Every command acts with the caller's own kubeconfig identity, so RBAC (the chart's
``tenant-admin`` / ``tenant-viewer`` roles) decides what it may do; the plugin never talks to
Vault. Rotation and revocation only change the spec, exactly as the UI and a GitOps commit do;
the operator does the rest. Output is a human table by default, ``-o json|yaml`` for scripts.
The key itself is printed by ``reveal`` only, on stdout, and nowhere else.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from pmkeys import __version__
from pmkeys.api import vocabulary as v
from pmkeys.api.durations import parse_duration
from pmkeys.reveal import AlreadyRevealed, NotIssuedYet, reveal_once


class CommandError(Exception):
    """A refusal the user can act on; printed as ``error: <message>`` with exit status 1."""


# -- talking to the cluster ------------------------------------------------------------------
class Cluster:
    """The caller's view of the cluster: their kubeconfig, context and namespace."""

    def __init__(self, *, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        try:
            api = config.new_client_from_config(config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except (ConfigException, FileNotFoundError) as exc:
            raise CommandError(f"cannot load kubeconfig: {exc}") from None
        if context:
            active = next((c for c in contexts if c["name"] == context), active)
        self.namespace = namespace or (active or {}).get("context", {}).get("namespace") or "default"
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def get(self, name: str) -> dict[str, Any]:
        return _api_object(
            lambda: self.custom.get_namespaced_custom_object(v.GROUP, v.VERSION, self.namespace, v.PLURAL, name),
            what=f"tenantapikey {self.namespace}/{name}",
        )

    def objects(self, *, all_namespaces: bool) -> list[dict[str, Any]]:
        if all_namespaces:
            result = _api(
                lambda: self.custom.list_cluster_custom_object(v.GROUP, v.VERSION, v.PLURAL), what="tenantapikeys"
            )
        else:
            result = _api(
                lambda: self.custom.list_namespaced_custom_object(v.GROUP, v.VERSION, self.namespace, v.PLURAL),
                what=f"tenantapikeys in {self.namespace}",
            )
        items: list[dict[str, Any]] = result.get("items", [])
        return sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return _api_object(
            lambda: self.custom.patch_namespaced_custom_object(
                v.GROUP, v.VERSION, self.namespace, v.PLURAL, name, body
            ),
            what=f"tenantapikey {self.namespace}/{name}",
        )

    def events(self, name: str) -> list[client.CoreV1Event]:
        selector = f"involvedObject.name={name},involvedObject.kind={v.KIND}"
        try:
            events = self.core.list_namespaced_event(self.namespace, field_selector=selector).items
        except ApiException:
            return []  # Events are a convenience in describe; a viewer without access still sees the rest.
        return sorted(events, key=lambda e: _event_time(e) or dt.datetime.min.replace(tzinfo=dt.UTC))


def _api(call: Callable[[], Any], *, what: str) -> Any:
    try:
        return call()
    except ApiException as exc:
        raise CommandError(_api_message(exc, what)) from None


def _api_object(call: Callable[[], Any], *, what: str) -> dict[str, Any]:
    result: dict[str, Any] = _api(call, what=what)
    return result


def _api_message(exc: ApiException, what: str) -> str:
    try:
        detail = json.loads(exc.body or "{}").get("message", "")
    except ValueError:
        detail = ""
    if exc.status == 404:
        return f"{what} not found"
    if exc.status == 403:
        return f"forbidden: {detail or exc.reason}"
    return f"{what}: {detail or exc.reason} (HTTP {exc.status})"


# -- formatting ------------------------------------------------------------------------------
def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _event_time(event: client.CoreV1Event) -> dt.datetime | None:
    when: dt.datetime | None = event.last_timestamp or event.event_time or event.first_timestamp
    return when


def age(value: str | dt.datetime | None, *, now: dt.datetime | None = None) -> str:
    """kubectl-style age: 45s, 12m, 3h, 5d; ``<never>`` when unset."""
    when = _parse_time(value) if isinstance(value, str) or value is None else value
    if when is None:
        return "<never>"
    seconds = max(0, int(((now or dt.datetime.now(dt.UTC)) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(headers), *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def emit(data: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        out.write(yaml.safe_dump(data, sort_keys=False))


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("spec") or {}


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in _status(obj).get("conditions") or [] if c.get("type") == v.ConditionType.READY), {})


# -- commands --------------------------------------------------------------------------------
def cmd_list(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    items = cluster.objects(all_namespaces=args.all_namespaces)
    if args.output != "table":
        emit({"apiVersion": "v1", "kind": "List", "items": items}, args.output, out)
        return
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {cluster.namespace}"
        print(f"No TenantApiKeys in {where}.", file=sys.stderr)
        return
    headers = ["NAME", "TENANT", "TIER", "PHASE", "KEY-ID", "PREFIX", "LAST-USED", "AGE"]
    rows = [
        [
            o["metadata"]["name"],
            _spec(o).get("tenant"),
            _spec(o).get("tier"),
            _status(o).get("phase", "Pending"),
            _status(o).get("keyId") or "-",
            _status(o).get("displayPrefix") or "-",
            age((_status(o).get("usage") or {}).get("lastUsedAt")),
            age(o["metadata"].get("creationTimestamp")),
        ]
        for o in items
    ]
    if args.all_namespaces:
        headers = ["NAMESPACE", *headers]
        rows = [[o["metadata"]["namespace"], *row] for o, row in zip(items, rows, strict=True)]
    out.write(table(headers, rows) + "\n")


def cmd_describe(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    obj = cluster.get(args.name)
    if args.output != "table":
        emit(obj, args.output, out)
        return
    out.write(describe_text(obj, cluster.events(args.name)))


def describe_text(obj: dict[str, Any], events: Sequence[client.CoreV1Event]) -> str:
    spec, status, meta = _spec(obj), _status(obj), obj["metadata"]
    rotation, usage = spec.get("rotation") or {}, status.get("usage") or {}
    key = f"{status['keyId']} ({status.get('displayPrefix', '')})" if status.get("keyId") else "<none>"
    observed = (status.get("rotation") or {}).get("observedCounter", 0)
    fields = [
        ("Name", meta["name"]),
        ("Namespace", meta["namespace"]),
        ("Tenant", spec.get("tenant")),
        ("Display name", spec.get("displayName") or "-"),
        ("Environment", spec.get("environment")),
        ("Scopes", ", ".join(spec.get("scopes") or [])),
        ("Tier", f"{spec.get('tier')} ({status.get('effectiveRateLimit', '?')} requests/minute)"),
        ("Phase", status.get("phase", "Pending")),
        ("Message", status.get("message") or "-"),
        ("Key", key),
        ("Secret", status.get("secretName") or "-"),
        ("Created", status.get("createdAt") or "-"),
        ("Last rotated", status.get("lastRotatedAt") or "-"),
        ("Next rotation", status.get("nextRotationAt") or "-"),
        ("Expires", spec.get("expiresAt") or "never"),
        (
            "Rotation",
            f"interval {rotation.get('interval', '0')}, grace {rotation.get('gracePeriod', '24h')}, "
            f"counter {rotation.get('counter', 0)} (observed {observed})",
        ),
        ("Revoked", "yes (final)" if spec.get("revoked") else "no"),
        (
            "Usage",
            f"{usage.get('requests', 0)} requests, {usage.get('errors', 0)} errors, "
            f"last used {usage.get('lastUsedAt') or 'never'}",
        ),
    ]
    lines = [f"{label + ':':<15}{value}" for label, value in fields]
    previous = status.get("previousKeys") or []
    lines.append(f"{'Previous keys:':<15}" + ("" if previous else "none"))
    lines += [f"  {p['keyId']} ({p.get('displayPrefix', '')}) works until {p['notAfter']}" for p in previous]
    if status.get("revokedKeyIds"):
        lines.append(f"{'Revoked keys:':<15}{', '.join(status['revokedKeyIds'])}")
    conditions = status.get("conditions") or []
    lines.append("Conditions:")
    rows = [[c["type"], c["status"], c.get("reason", ""), c.get("message", "")] for c in conditions]
    lines += ["  " + line for line in table(["TYPE", "STATUS", "REASON", "MESSAGE"], rows).splitlines()]
    lines.append(f"{'Events:':<15}" + ("" if events else "none"))
    if events:
        rows = [[age(_event_time(e)), e.type, e.reason, e.message] for e in events]
        lines += ["  " + line for line in table(["AGE", "TYPE", "REASON", "MESSAGE"], rows).splitlines()]
    return "\n".join(lines) + "\n"


def cmd_rotate(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    if args.grace is not None:
        try:
            parse_duration(args.grace)
        except ValueError as exc:
            raise CommandError(f"--grace: {exc}") from None
    obj = cluster.get(args.name)
    if _spec(obj).get("revoked"):
        raise CommandError(f"{args.name} is revoked; revocation is final, create a new TenantApiKey")
    counter = int((_spec(obj).get("rotation") or {}).get("counter", 0)) + 1
    rotation: dict[str, Any] = {"counter": counter}
    if args.grace is not None:
        rotation["gracePeriod"] = args.grace
    # The resourceVersion makes two concurrent rotations bump the counter twice, not once.
    patch = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "spec": {"rotation": rotation}}
    cluster.patch(args.name, patch)
    old = _status(obj).get("keyId")
    grace = args.grace or (_spec(obj).get("rotation") or {}).get("gracePeriod", "24h")
    print(
        f"rotation requested: spec.rotation.counter {counter - 1} -> {counter}; "
        f"the current key keeps working for {grace} after the new one is issued",
        file=sys.stderr,
    )
    if not args.wait:
        _report(obj, args.output, out)
        return
    done = _wait(
        cluster,
        args.name,
        args.timeout,
        lambda s: (s.get("rotation") or {}).get("observedCounter", 0) >= counter and s.get("keyId") != old,
    )
    _report(done, args.output, out)


def cmd_revoke(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    obj = cluster.get(args.name)
    status = _status(obj)
    if _spec(obj).get("revoked"):
        print(f"{args.name} is already revoked", file=sys.stderr)
        _report(obj, args.output, out)
        return
    if not args.yes and not _confirm(obj):
        raise CommandError("not revoked (answer 'y' to confirm, or pass --yes)")
    cluster.patch(args.name, {"spec": {"revoked": True}})
    print(
        f"revoked {cluster.namespace}/{args.name} (key {status.get('keyId') or '<none>'}); "
        "its Secret is removed and the key stops working",
        file=sys.stderr,
    )
    if args.wait:
        obj = _wait(cluster, args.name, args.timeout, lambda s: s.get("phase") == v.Phase.REVOKED)
    _report(obj, args.output, out)


def _confirm(obj: dict[str, Any]) -> bool:
    status, meta = _status(obj), obj["metadata"]
    sys.stderr.write(
        f"Revoke key {status.get('keyId') or '<none>'} ({status.get('displayPrefix') or '-'}) of "
        f"TenantApiKey {meta['namespace']}/{meta['name']}? Revocation is final: the key stops working "
        "and cannot be restored. [y/N] "
    )
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def cmd_reveal(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    obj = cluster.get(args.name)
    status = _status(obj)
    if status.get("phase") not in (v.Phase.ACTIVE, v.Phase.ROTATING):
        raise CommandError(f"{args.name} has no key to reveal (phase {status.get('phase', 'Pending')})")
    secret = status.get("secretName") or (_spec(obj).get("secret") or {}).get("name") or args.name
    try:
        revealed = reveal_once(cluster.core, cluster.namespace, secret)
    except (AlreadyRevealed, NotIssuedYet) as exc:
        raise CommandError(str(exc)) from None
    except ApiException as exc:
        raise CommandError(_api_message(exc, f"Secret {cluster.namespace}/{secret}")) from None
    if args.output == "table":
        out.write(revealed.plaintext + "\n")
    else:
        emit({"keyId": revealed.key_id, "secretName": secret, "apiKey": revealed.plaintext}, args.output, out)
    print(
        f"key {revealed.key_id}: this is the only time it is shown; store it now "
        f"(it also stays in Secret {secret} for your workloads)",
        file=sys.stderr,
    )


def cmd_usage(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    items = [cluster.get(args.name)] if args.name else cluster.objects(all_namespaces=args.all_namespaces)
    records = [
        {
            "namespace": o["metadata"]["namespace"],
            "name": o["metadata"]["name"],
            "keyId": _status(o).get("keyId"),
            "requests": (_status(o).get("usage") or {}).get("requests", 0),
            "errors": (_status(o).get("usage") or {}).get("errors", 0),
            "lastUsedAt": (_status(o).get("usage") or {}).get("lastUsedAt"),
            "rateLimitPerMinute": _status(o).get("effectiveRateLimit"),
        }
        for o in items
    ]
    if args.output != "table":
        emit(records, args.output, out)
        return
    headers = ["NAMESPACE", "NAME", "KEY-ID", "REQUESTS", "ERRORS", "LAST-USED", "LIMIT/MIN"]
    rows = [
        [
            r["namespace"],
            r["name"],
            r["keyId"] or "-",
            r["requests"],
            r["errors"],
            age(r["lastUsedAt"]),
            r["rateLimitPerMinute"] or "-",
        ]
        for r in records
    ]
    out.write(table(headers, rows) + "\n")


def _report(obj: dict[str, Any], fmt: str, out: TextIO) -> None:
    status = _status(obj)
    if fmt != "table":
        emit(obj, fmt, out)
        return
    key = f"{status['keyId']} ({status.get('displayPrefix', '')})" if status.get("keyId") else "-"
    out.write(table(["NAME", "PHASE", "KEY"], [[obj["metadata"]["name"], status.get("phase", "Pending"), key]]) + "\n")


def _wait(cluster: Cluster, name: str, timeout: float, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        obj = cluster.get(name)
        if done(_status(obj)):
            return obj
        if time.monotonic() > deadline:
            message = _ready(obj).get("message") or _status(obj).get("message") or "no status"
            raise CommandError(f"timed out after {timeout:.0f}s waiting for the operator: {message}")
        time.sleep(0.5)


# -- command line ----------------------------------------------------------------------------
COMMANDS: dict[str, Callable[[Cluster, argparse.Namespace, TextIO], None]] = {
    "list": cmd_list,
    "describe": cmd_describe,
    "rotate": cmd_rotate,
    "revoke": cmd_revoke,
    "reveal": cmd_reveal,
    "usage": cmd_usage,
}


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
    return p


def main(argv: list[str] | None = None, *, out: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cluster = Cluster(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)
        COMMANDS[args.command](cluster, args, out or sys.stdout)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
