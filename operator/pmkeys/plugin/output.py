"""What the plugin prints: kubectl-style ages, aligned tables, ``describe``, JSON/YAML.

Pure functions of the objects read, so the formatting is tested without a cluster.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, TextIO

import yaml
from kubernetes import client

from pmkeys.plugin.cluster import event_time
from pmkeys.tenantapikey import TenantApiKey, parse_time


def age(value: str | dt.datetime | None, *, now: dt.datetime | None = None) -> str:
    """kubectl-style age: 45s, 12m, 3h, 5d; ``<never>`` when unset."""
    when = parse_time(value)
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


def status_of(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("spec") or {}


def key_label(key: TenantApiKey, *, none: str) -> str:
    return f"{key.key_id} ({key.display_prefix or ''})" if key.key_id else none


def report(obj: dict[str, Any], fmt: str, out: TextIO) -> None:
    """One line after rotate/revoke: name, phase, current key."""
    if fmt != "table":
        emit(obj, fmt, out)
        return
    key = TenantApiKey.from_object(obj)
    out.write(table(["NAME", "PHASE", "KEY"], [[key.name, key.phase, key_label(key, none="-")]]) + "\n")


def describe_text(obj: dict[str, Any], events: Sequence[client.CoreV1Event]) -> str:
    lines = [f"{label + ':':<15}{value}" for label, value in _describe_fields(obj)]
    lines += _describe_keys(status_of(obj))
    lines += _describe_conditions(status_of(obj))
    lines.append(f"{'Events:':<15}" + ("" if events else "none"))
    if events:
        rows = [[age(event_time(e)), e.type, e.reason, e.message] for e in events]
        lines += ["  " + line for line in table(["AGE", "TYPE", "REASON", "MESSAGE"], rows).splitlines()]
    return "\n".join(lines) + "\n"


def _or(value: object, default: str) -> object:
    return value if value else default


def _describe_fields(obj: dict[str, Any]) -> list[tuple[str, object]]:
    spec, status, key = spec_of(obj), status_of(obj), TenantApiKey.from_object(obj)
    return [
        ("Name", key.name),
        ("Namespace", key.namespace),
        ("Tenant", spec.get("tenant")),
        ("Display name", _or(spec.get("displayName"), "-")),
        ("Environment", spec.get("environment")),
        ("Scopes", ", ".join(spec.get("scopes") or [])),
        ("Tier", f"{status.get('tier') or spec.get('tier')} ({status.get('effectiveRateLimit', '?')} requests/minute)"),
        ("Phase", key.phase),
        ("Message", _or(status.get("message"), "-")),
        ("Key", key_label(key, none="<none>")),
        ("Secret", _or(key.secret_name, "-")),
        ("Created", _or(status.get("createdAt"), "-")),
        ("Last rotated", _or(status.get("lastRotatedAt"), "-")),
        ("Next rotation", _or(status.get("nextRotationAt"), "-")),
        ("Expires", _or(spec.get("expiresAt"), "never")),
        ("Rotation", _rotation_line(spec.get("rotation") or {}, key)),
        ("Revoked", "yes (final)" if key.revoked else "no"),
        ("Usage", _usage_line(status.get("usage") or {})),
    ]


def _rotation_line(rotation: dict[str, Any], key: TenantApiKey) -> str:
    return (
        f"interval {rotation.get('interval', '0')}, grace {key.grace_period}, "
        f"counter {key.counter} (observed {key.observed_counter})"
    )


def _usage_line(usage: dict[str, Any]) -> str:
    return (
        f"{usage.get('requests', 0)} requests, {usage.get('errors', 0)} errors, "
        f"last used {usage.get('lastUsedAt') or 'never'}"
    )


def _describe_keys(status: dict[str, Any]) -> list[str]:
    previous = status.get("previousKeys") or []
    lines = [f"{'Previous keys:':<15}" + ("" if previous else "none")]
    lines += [f"  {p['keyId']} ({p.get('displayPrefix', '')}) works until {p['notAfter']}" for p in previous]
    if status.get("revokedKeyIds"):
        lines.append(f"{'Revoked keys:':<15}{', '.join(status['revokedKeyIds'])}")
    return lines


def _describe_conditions(status: dict[str, Any]) -> list[str]:
    rows = [[c["type"], c["status"], c.get("reason", ""), c.get("message", "")] for c in status.get("conditions") or []]
    return ["Conditions:", *("  " + line for line in table(["TYPE", "STATUS", "REASON", "MESSAGE"], rows).splitlines())]
