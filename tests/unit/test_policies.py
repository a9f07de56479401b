"""The rules of a key's life (``pmkeys.reconcile.policies``) as tables of time and state."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from pmkeys.api.model import TenantApiKeySpec
from pmkeys.reconcile import policies
from pmkeys.vault.records import EntryState, Intent, OwnerEntry

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def spec(**rotation: Any) -> TenantApiKeySpec:
    return TenantApiKeySpec.model_validate({"tenant": "acme", "scopes": ["send_email"], "rotation": rotation})


def entry(**fields: Any) -> OwnerEntry:
    return OwnerEntry.model_validate({"digest": "d", "display_prefix": "pm_live_abcd", "issued_at": T0, **fields})


@pytest.mark.parametrize(
    ("rotation", "fields", "annotation", "now", "due"),
    [
        ({}, {}, "", T0 + 1000 * H, False),
        ({"interval": "1h"}, {}, "", T0 + H - dt.timedelta(seconds=1), False),
        ({"interval": "1h"}, {}, "", T0 + H, True),
        ({"counter": 2}, {"counter": 1}, "", T0, True),
        ({"counter": 2}, {"counter": 2}, "", T0, False),
        ({}, {"annotation": "a"}, "a", T0, False),
        ({}, {"annotation": "a"}, "b", T0, True),
        ({}, {}, "", T0, False),
    ],
    ids=[
        "off",
        "before-interval",
        "at-interval",
        "counter-bumped",
        "counter-seen",
        "annotation-seen",
        "annotation-new",
        "nothing",
    ],
)
def test_rotation_due(
    rotation: dict[str, Any], fields: dict[str, Any], annotation: str, now: dt.datetime, due: bool
) -> None:
    assert policies.rotation_due(spec(**rotation), annotation, "k1", entry(**fields), now=now, jitter_fraction=0) is due


def test_rotation_due_at_includes_the_keys_own_jitter() -> None:
    at = policies.rotation_due_at(spec(interval="10d"), "k1", entry(), jitter_fraction=0.05)
    assert at is not None and T0 + 240 * H < at < T0 + 241 * H
    assert policies.rotation_due_at(spec(interval="0"), "k1", entry(), jitter_fraction=0.05) is None


@pytest.mark.parametrize(
    ("grace", "expires", "intent", "now", "deadline", "keeps"),
    [
        (3600, None, Intent.ROTATE, T0, T0 + H, True),
        (3600, T0 + H / 2, Intent.ROTATE, T0, T0 + H / 2, True),
        (0, None, Intent.ROTATE, T0, T0, False),
        (3600, None, Intent.REPAIR, T0, T0 + H, False),
        (3600, None, Intent.ROTATE, T0 + 2 * H, T0 + H, False),
    ],
    ids=["grace", "expiry-first", "zero-grace", "repair", "grace-over-at-resume"],
)
def test_supersede(
    grace: int, expires: dt.datetime | None, intent: Intent, now: dt.datetime, deadline: dt.datetime, keeps: bool
) -> None:
    new = entry(grace_seconds=grace, intent=intent)
    assert policies.supersede_deadline(new, expires) == deadline
    assert policies.keeps_grace(new, deadline, now) is keeps


@pytest.mark.parametrize(
    ("state", "not_after", "ended"),
    [
        (EntryState.RETIRING, T0, True),
        (EntryState.RETIRING, T0 + H, False),
        (EntryState.RETIRING, None, False),
        (EntryState.ACTIVE, T0 - H, False),
    ],
)
def test_grace_ended(state: EntryState, not_after: dt.datetime | None, ended: bool) -> None:
    assert policies.grace_ended(entry(state=state, not_after=not_after), T0) is ended


@pytest.mark.parametrize(
    ("intent", "restarted", "targets", "wanted"),
    [
        (Intent.ISSUE, False, True, False),
        (Intent.ROTATE, False, True, True),
        (Intent.REPAIR, False, True, True),
        (Intent.ROTATE, True, True, False),
        (Intent.ROTATE, False, False, False),
    ],
)
def test_restart_wanted(intent: Intent, restarted: bool, targets: bool, wanted: bool) -> None:
    assert policies.restart_wanted(entry(intent=intent, restarted=restarted), has_targets=targets) is wanted


def test_next_wake_is_the_earliest_deadline() -> None:
    assert policies.next_wake(None, None, []) is None
    assert policies.next_wake(T0 + 2 * H, T0 + 3 * H, [T0 + H, None]) == T0 + H
    assert policies.next_wake(None, T0 + 3 * H, []) == T0 + 3 * H


def test_backoff_doubles_to_a_cap_with_jitter() -> None:
    assert [policies.backoff_seconds(n, 0.5) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert policies.backoff_seconds(0, 0.0) == 0.5 and policies.backoff_seconds(0, 0.999) < 1.5


def test_retiring_deadline_shortened_by_expiry_only() -> None:
    assert policies.retiring_not_after(T0 + H, T0) == T0
    assert policies.retiring_not_after(T0, T0 + H) == T0
    assert policies.retiring_not_after(None, T0) is None
    assert policies.retiring_not_after(T0, None) == T0


def test_intent_for_a_missing_key() -> None:
    assert policies.intent_for_missing_key(None) is Intent.ISSUE
    assert policies.intent_for_missing_key("k1") is Intent.REPAIR
