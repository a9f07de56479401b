"""The fault table: each fault scenario records its outcome; the run prints them together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    scenario: str
    outcome: str
    detail: str


ROWS: list[Row] = []


def record(scenario: str, violations: list[str], detail: str = "") -> None:
    """Record a scenario's outcome; callers assert ``not violations`` right after."""
    outcome = "PASS" if not violations else "FAIL"
    ROWS.append(Row(scenario, outcome, detail if not violations else "; ".join(violations)[:300]))


def render() -> list[str]:
    if not ROWS:
        return []
    width = max(len(r.scenario) for r in ROWS)
    lines = [f"{'scenario'.ljust(width)}  outcome  detail", "-" * (width + 40)]
    lines += [f"{r.scenario.ljust(width)}  {r.outcome:<7}  {r.detail}" for r in ROWS]
    return lines
