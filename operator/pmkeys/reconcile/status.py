"""Building ``TenantApiKey`` status: phase and conditions from what the reconciler found.

Pure functions, so the rules ("a condition's lastTransitionTime moves only when its status
does"; "Rotating while a previous key is in grace") are tested without servers. The result is
a JSON-ready dict for a merge patch of the status subresource; ``usage`` is left alone (the
verifier owns it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pmkeys.api.model import Condition, TenantApiKeyStatus
from pmkeys.api.vocabulary import ConditionType, Phase, Reason
from pmkeys.tenantapikey import format_time


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return format_time(value)


@dataclass(frozen=True)
class CondSpec:
    type: ConditionType
    ok: bool
    reason: Reason | str
    message: str = ""


@dataclass
class StatusFacts:
    """What a reconcile learned; :func:`render` turns it into a status patch."""

    phase: Phase
    generation: int
    conditions: list[CondSpec]
    message: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


def merge_conditions(
    previous: list[Condition], wanted: list[CondSpec], *, generation: int, now: dt.datetime
) -> list[dict[str, Any]]:
    """New condition list; keeps lastTransitionTime when a condition's status is unchanged."""
    before = {c.type: c for c in previous}
    result = []
    for spec in wanted:
        status = "True" if spec.ok else "False"
        old = before.get(spec.type)
        since = old.last_transition_time if old and old.status == status else now
        result.append(
            {
                "type": str(spec.type),
                "status": status,
                "reason": str(spec.reason),
                "message": spec.message,
                "lastTransitionTime": iso(since),
                "observedGeneration": generation,
            }
        )
    return result


def render(previous: TenantApiKeyStatus, facts: StatusFacts, *, now: dt.datetime) -> dict[str, Any]:
    patch: dict[str, Any] = {
        "phase": str(facts.phase),
        "message": facts.message,
        "observedGeneration": facts.generation,
        "conditions": merge_conditions(previous.conditions, facts.conditions, generation=facts.generation, now=now),
    }
    patch.update(facts.fields)
    return patch


def changed(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Whether applying ``patch`` to the status ``current`` would change anything."""
    return any(current.get(k) != v for k, v in patch.items())
