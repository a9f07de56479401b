"""The rules of a key's life as functions of time and state: no I/O, no clock of their own.

When is a rotation due, how long does a superseded key keep working, when does an object need
looking at again, how long to back off after a failure. The reconciler asks these questions
with what it read; table tests ask them with what they like (``tests/unit``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from pmkeys.api.durations import parse_duration
from pmkeys.api.model import TenantApiKeySpec
from pmkeys.reconcile.scheduling import rotation_jitter
from pmkeys.vault.records import EntryState, Intent, OwnerEntry

#: How soon to look again at an object we refused (tenant mismatch, foreign Secret).
REFUSAL_RECHECK = dt.timedelta(seconds=60)
#: Backoff after Vault or API failures: base * 2^attempt, capped, with ±50% jitter.
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0


def expired(spec: TenantApiKeySpec, now: dt.datetime) -> bool:
    return spec.expires_at is not None and now >= spec.expires_at


def rotation_due_at(
    spec: TenantApiKeySpec, key_id: str, entry: OwnerEntry, *, jitter_fraction: float
) -> dt.datetime | None:
    """When the scheduled rotation of the current key falls due (None: rotation is off)."""
    interval = parse_duration(spec.rotation.interval)
    if not interval:
        return None
    return entry.issued_at + interval + rotation_jitter(key_id, interval, jitter_fraction)


def rotation_due(
    spec: TenantApiKeySpec,
    rotate_annotation: str,
    key_id: str,
    entry: OwnerEntry,
    *,
    now: dt.datetime,
    jitter_fraction: float,
) -> bool:
    """A bumped counter, a new rotate annotation, or the schedule: each asks for a new key."""
    if spec.rotation.counter > entry.counter:
        return True
    if rotate_annotation and rotate_annotation != entry.annotation:
        return True
    due = rotation_due_at(spec, key_id, entry, jitter_fraction=jitter_fraction)
    return due is not None and now >= due


#: Manual rotations (a counter bump, the rotate annotation: the UI's regenerate, the plugin's
#: rotate) each cost a bcrypt here and in the verifiers, and CEL has no clock to bound them at
#: admission. So at most this many per key in any window; a trigger beyond waits (it is not
#: lost) until the oldest of them leaves the window. Scheduled rotations are bounded by the
#: plan's minRotationInterval instead.
MANUAL_ROTATIONS = 3
MANUAL_ROTATION_WINDOW = dt.timedelta(minutes=10)


def manual_trigger(spec: TenantApiKeySpec, rotate_annotation: str, entry: OwnerEntry) -> bool:
    """Whether the key in force has a manual rotation asked for that it does not satisfy."""
    return spec.rotation.counter > entry.counter or bool(rotate_annotation and rotate_annotation != entry.annotation)


def manual_rotation_held_until(entries: Mapping[str, OwnerEntry], now: dt.datetime) -> dt.datetime | None:
    """When the next manual rotation may run (None: now): the manual rotations of the window
    are the entries issued by a rotation whose trigger values differ from the key they replaced."""
    since = now - MANUAL_ROTATION_WINDOW

    def manual(entry: OwnerEntry) -> bool:
        before = entries.get(entry.supersedes or "")
        return before is not None and (entry.counter, entry.annotation) != (before.counter, before.annotation)

    manual_times = sorted(
        e.issued_at for e in entries.values() if e.intent is Intent.ROTATE and e.issued_at > since and manual(e)
    )
    if len(manual_times) < MANUAL_ROTATIONS:
        return None
    return manual_times[-MANUAL_ROTATIONS] + MANUAL_ROTATION_WINDOW


def held_message(until: dt.datetime) -> str:
    """What the Event and the Ready condition say while a manual rotation waits."""
    return (
        f"manual rotation deferred until {until.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC: at most "
        f"{MANUAL_ROTATIONS} manual rotations per key in any {int(MANUAL_ROTATION_WINDOW.total_seconds() // 60)} "
        "minutes (each costs a bcrypt in the operator and the verifiers)"
    )


def grace_seconds(spec: TenantApiKeySpec) -> int:
    return int(parse_duration(spec.rotation.grace_period).total_seconds())


def intent_for_missing_key(superseded: str | None) -> Intent:
    """No usable key in the Secret: the first issue, or a repair of a lost or altered Secret."""
    return Intent.REPAIR if superseded else Intent.ISSUE


def supersede_deadline(entry: OwnerEntry, expires_at: dt.datetime | None) -> dt.datetime:
    """Until when the key that ``entry`` replaced keeps working: the grace, never past expiry."""
    deadline = entry.issued_at + dt.timedelta(seconds=entry.grace_seconds)
    return deadline if expires_at is None else min(deadline, expires_at)


def keeps_grace(entry: OwnerEntry, deadline: dt.datetime, now: dt.datetime) -> bool:
    """Whether the replaced key retires (rotation with grace left) rather than being revoked."""
    return entry.intent is Intent.ROTATE and deadline > now


def grace_ended(entry: OwnerEntry, now: dt.datetime) -> bool:
    return entry.state is EntryState.RETIRING and entry.not_after is not None and entry.not_after <= now


def retiring_not_after(not_after: dt.datetime | None, expires_at: dt.datetime | None) -> dt.datetime | None:
    """A retiring key's deadline after a spec change: an earlier expiry shortens it."""
    if expires_at is None or not_after is None:
        return not_after
    return min(not_after, expires_at)


def restart_wanted(entry: OwnerEntry, *, has_targets: bool) -> bool:
    """Workloads restart after a rotation or repair, once per key; never for the first key."""
    return has_targets and entry.intent is not Intent.ISSUE and not entry.restarted


def restart_opted_in(annotation: str | None, key_name: str) -> bool:
    """Whether a workload's opt-in annotation (TenantApiKey names, comma separated) names the
    key: a key restarts only workloads that asked for it, whatever the operator may patch."""
    return key_name in {part.strip() for part in (annotation or "").split(",")}


def next_wake(
    rotation_at: dt.datetime | None, expires_at: dt.datetime | None, grace_ends: Iterable[dt.datetime | None]
) -> dt.datetime | None:
    """The earliest thing that falls due: a rotation, an expiry, the end of a grace period."""
    due = [c for c in (rotation_at, expires_at, *grace_ends) if c is not None]
    return min(due) if due else None


def backoff_seconds(attempt: int, unit: float) -> float:
    """Delay before retry number ``attempt + 1``; ``unit`` in [0, 1) spreads it by ±50%."""
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2.0**attempt)) * (0.5 + unit)
