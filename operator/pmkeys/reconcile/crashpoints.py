"""Named places where a test can have the operator SIGKILL itself.

``PMKEYS_CRASH_AT=after-secret`` (or several, comma-separated) makes the operator die there,
once, as abruptly as the OOM killer would: no cleanup, no exception handlers. Crash tests run
the operator with a point set, wait for it to die, restart it without, and check invariants.
"""

from __future__ import annotations

import os
import signal

#: Every point, in the order issuance passes them.
POINTS = (
    "after-hash",
    "after-index",
    "after-secret",
    "after-record",
    "after-supersede",
    "after-status",
    "after-revoke-record",
)

_armed: set[str] = set()


def arm(spec: str) -> None:
    unknown = {p for p in spec.split(",") if p} - set(POINTS)
    if unknown:
        raise ValueError(f"unknown crash point(s) {sorted(unknown)}; known: {', '.join(POINTS)}")
    _armed.update(p for p in spec.split(",") if p)


def reach(point: str) -> None:
    if point in _armed:
        os.kill(os.getpid(), signal.SIGKILL)
