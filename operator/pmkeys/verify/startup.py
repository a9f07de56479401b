"""When each of a verifier's readiness checks first held: where its start-up time goes.

A replica that joins a rotation while thousands of keys are in use is not ready until the
pepper is read, both watches have listed, and the preload has cached the proven keys
(:meth:`~pmkeys.verify.lifecycle.Lifecycle.readiness`). Which of those takes the time decides
what to make faster, so the clock notes, in seconds since the process started (its imports
included: they are part of what a rollout waits for), the first moment each check held and the
moment all did; ``/readyz`` shows them and the replica logs them once it is ready.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable

logger = logging.getLogger(__name__)
#: How often the checks are looked at until all hold (the figures' resolution).
TICK_SECONDS = 0.05
_IMPORTED = time.monotonic()


def process_age() -> float:
    """Seconds since this process started (from ``/proc``; since import where there is none)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as uptime:
            up = float(uptime.read().split()[0])
        return max(0.0, up - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


class StartupClock:
    """First moments, in seconds of process age, at which each readiness check held."""

    def __init__(self) -> None:
        self._origin = time.monotonic() - process_age()
        self.phases: dict[str, float] = {"started": self._now()}

    def _now(self) -> float:
        return round(time.monotonic() - self._origin, 2)

    def mark(self, phase: str) -> None:
        """Note ``phase`` now, unless it was noted before."""
        self.phases.setdefault(phase, self._now())

    @property
    def done(self) -> bool:
        return "ready" in self.phases

    def look(self, checks: dict[str, bool], *, reached: Iterable[str] = ()) -> None:
        """Note the checks that hold now (and the steps ``reached``, such as the seals fetched);
        once all checks hold, ``ready``, and the whole start-up to the log."""
        for name in [name for name, holds in checks.items() if holds] + list(reached):
            self.mark(name)
        if all(checks.values()) and not self.done:
            self.mark("ready")
            logger.info("ready after %.1f s: %s", self.phases["ready"], self.describe())

    def describe(self) -> str:
        return ", ".join(f"{name} {at:.2f} s" for name, at in sorted(self.phases.items(), key=lambda item: item[1]))

    async def follow(self, readiness: Callable[[], object]) -> None:
        """Call ``readiness`` (which looks at the checks) every :data:`TICK_SECONDS` until all
        have held once: the phases are noted even while nobody asks ``/readyz``."""
        while not self.done:
            readiness()
            await asyncio.sleep(TICK_SECONDS)
