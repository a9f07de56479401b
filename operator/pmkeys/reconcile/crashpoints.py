"""Named places where a test can have the operator SIGKILL itself, or wait.

``PMKEYS_CRASH_AT=after-secret`` (or several, comma-separated) makes the operator die there,
once, as abruptly as the OOM killer would: no cleanup, no exception handlers. Crash tests run
the operator with a point set, wait for it to die, restart it without, and check invariants.

``PMKEYS_PAUSE_AT=after-scheduled-read=4`` makes the operator wait there (every time, for that
many seconds): a race that takes microseconds in production takes seconds in a test, so the
test can act inside it.
"""

from __future__ import annotations

import asyncio
import logging
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

#: Where the operator may be told to wait.
PAUSE_POINTS = ("after-scheduled-read",)

_armed: set[str] = set()
_pauses: dict[str, float] = {}
logger = logging.getLogger(__name__)


def arm(spec: str) -> None:
    unknown = {p for p in spec.split(",") if p} - set(POINTS)
    if unknown:
        raise ValueError(f"unknown crash point(s) {sorted(unknown)}; known: {', '.join(POINTS)}")
    _armed.update(p for p in spec.split(",") if p)


def reach(point: str) -> None:
    if point in _armed:
        os.kill(os.getpid(), signal.SIGKILL)


def arm_pauses(spec: str) -> None:
    for item in filter(None, spec.split(",")):
        point, _, seconds = item.partition("=")
        if point not in PAUSE_POINTS:
            raise ValueError(f"unknown pause point {point!r}; known: {', '.join(PAUSE_POINTS)}")
        _pauses[point] = float(seconds or 1)


async def pause(point: str) -> None:
    seconds = _pauses.get(point)
    if seconds:
        logger.warning("pausing %.1fs at %s (PMKEYS_PAUSE_AT)", seconds, point)
        await asyncio.sleep(seconds)
