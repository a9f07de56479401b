"""One function per ``kubectl pmkeys`` command: read, apply :mod:`pmkeys.tenantapikey`'s rule,
patch the spec, optionally wait for the operator, print."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from kubernetes.client.exceptions import ApiException

from pmkeys.api import vocabulary as v
from pmkeys.api.durations import parse_duration
from pmkeys.api.plan import describe as describe_plan
from pmkeys.api.plan import plan_from_body, use_from_body
from pmkeys.plugin.cluster import Cluster, CommandError, api_message
from pmkeys.plugin.output import age, describe_text, emit, report, spec_of, status_of, table
from pmkeys.reveal import AlreadyRevealed, NotIssuedYet, reveal_once
from pmkeys.tenantapikey import TenantApiKey, reveal_refusal, revoke_needed, revoke_patch, rotate_patch, rotate_refusal

Command = Callable[[Cluster, argparse.Namespace, TextIO], None]


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
    rows = [_list_row(o) for o in items]
    if args.all_namespaces:
        headers = ["NAMESPACE", *headers]
        rows = [[o["metadata"]["namespace"], *row] for o, row in zip(items, rows, strict=True)]
    out.write(table(headers, rows) + "\n")


def _list_row(obj: dict[str, Any]) -> list[object]:
    key = TenantApiKey.from_object(obj)
    return [
        key.name,
        spec_of(obj).get("tenant"),
        (obj.get("status") or {}).get("tier") or spec_of(obj).get("tier"),
        key.phase,
        key.key_id or "-",
        key.display_prefix or "-",
        age((status_of(obj).get("usage") or {}).get("lastUsedAt")),
        age(obj["metadata"].get("creationTimestamp")),
    ]


def cmd_describe(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    obj = cluster.get(args.name)
    if args.output != "table":
        emit(obj, args.output, out)
        return
    out.write(describe_text(obj, cluster.events(args.name)))


def cmd_rotate(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    if args.grace is not None:
        try:
            parse_duration(args.grace)
        except ValueError as exc:
            raise CommandError(f"--grace: {exc}") from None
    obj = cluster.get(args.name)
    key = TenantApiKey.from_object(obj)
    refusal = rotate_refusal(key)
    if refusal is not None:
        raise CommandError(refusal.message)
    cluster.patch(args.name, rotate_patch(key, grace=args.grace))
    counter = key.counter + 1
    print(
        f"rotation requested: spec.rotation.counter {key.counter} -> {counter}; "
        f"the current key keeps working for {args.grace or key.grace_period} after the new one is issued",
        file=sys.stderr,
    )
    if not args.wait:
        report(obj, args.output, out)
        return
    done = _wait(
        cluster,
        args.name,
        args.timeout,
        lambda now: now.observed_counter >= counter and now.key_id != key.key_id,
    )
    report(done, args.output, out)


def cmd_revoke(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    obj = cluster.get(args.name)
    key = TenantApiKey.from_object(obj)
    if not revoke_needed(key):
        print(f"{args.name} is already revoked", file=sys.stderr)
        report(obj, args.output, out)
        return
    if not args.yes and not _confirm(key):
        raise CommandError("not revoked (answer 'y' to confirm, or pass --yes)")
    cluster.patch(args.name, revoke_patch())
    print(
        f"revoked {cluster.namespace}/{args.name} (key {key.key_id or '<none>'}); "
        "its Secret is removed and the key stops working",
        file=sys.stderr,
    )
    if args.wait:
        obj = _wait(cluster, args.name, args.timeout, lambda now: now.phase == v.Phase.REVOKED)
    report(obj, args.output, out)


def _confirm(key: TenantApiKey) -> bool:
    sys.stderr.write(
        f"Revoke key {key.key_id or '<none>'} ({key.display_prefix or '-'}) of "
        f"TenantApiKey {key.ref}? Revocation is final: the key stops working "
        "and cannot be restored. [y/N] "
    )
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def cmd_reveal(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    key = TenantApiKey.from_object(cluster.get(args.name))
    refusal = reveal_refusal(key)
    if refusal is not None:
        raise CommandError(refusal.message)
    secret = key.secret_name or args.name
    try:
        revealed = reveal_once(cluster.core, cluster.namespace, secret)
    except (AlreadyRevealed, NotIssuedYet) as exc:
        raise CommandError(str(exc)) from None
    except ApiException as exc:
        raise CommandError(api_message(exc, f"Secret {cluster.namespace}/{secret}")) from None
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
    records = [_usage_record(o) for o in items]
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


def _usage_record(obj: dict[str, Any]) -> dict[str, Any]:
    status = status_of(obj)
    usage = status.get("usage") or {}
    return {
        "namespace": obj["metadata"]["namespace"],
        "name": obj["metadata"]["name"],
        "keyId": status.get("keyId"),
        "requests": usage.get("requests", 0),
        "errors": usage.get("errors", 0),
        "lastUsedAt": usage.get("lastUsedAt"),
        "rateLimitPerMinute": status.get("effectiveRateLimit"),
    }


def _wait(cluster: Cluster, name: str, timeout: float, done: Callable[[TenantApiKey], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        obj = cluster.get(name)
        key = TenantApiKey.from_object(obj)
        if done(key):
            return obj
        if time.monotonic() > deadline:
            raise CommandError(
                f"timed out after {timeout:.0f}s waiting for the operator: {key.ready_message or 'no status'}"
            )
        time.sleep(0.5)


def cmd_plan(cluster: Cluster, args: argparse.Namespace, out: TextIO) -> None:
    """The namespace's TenantPlan as the tenant sees it: tier, "3 of 10 keys", both limits and the
    tenant-wide limit's current use, with its age (the verifiers write it into the plan's status)."""
    body = cluster.plan()
    if args.output != "table":
        emit(body or {}, args.output, out)
        return
    keys = len(cluster.objects(all_namespaces=False))
    rows = describe_plan(plan_from_body(body) if body else None, keys, use=use_from_body(body) if body else None)
    width = max(len(label) for label, _ in rows) + 2
    out.write("".join(f"{label + ':':<{width}}{value}\n" for label, value in rows))


COMMANDS: dict[str, Command] = {
    "list": cmd_list,
    "plan": cmd_plan,
    "describe": cmd_describe,
    "rotate": cmd_rotate,
    "revoke": cmd_revoke,
    "reveal": cmd_reveal,
    "usage": cmd_usage,
}
