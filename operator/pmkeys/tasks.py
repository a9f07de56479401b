"""Background tasks that end when asked to, or are left behind after a bound.

A background task is stopped by cancelling it. A library that swallows the ``CancelledError``
would make a shutdown that awaits the task wait forever: seen here, a verifier that never exited
after SIGTERM (nor after a second one) because its hand-over loop went on flushing every second —
the cancel had landed inside a Redis pipeline's ``execute`` and never came out. So:

* every loop asks :func:`cancel_requested` before each round: a cancel swallowed below it is
  still counted on the task (``Task.cancelling()``), so the loop ends at its next round;
* :func:`stop` waits for the tasks a bounded time, and names (in the log) any it leaves behind,
  so the shutdown goes on to its last usage flush whatever a task does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

logger = logging.getLogger(__name__)
#: How long :func:`stop` waits for cancelled tasks to end.
STOP_SECONDS = 5.0


def cancel_requested() -> bool:
    """Whether the current task was asked to stop (even if the cancel was swallowed since)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def stop(tasks: Iterable[asyncio.Task[None]], *, timeout: float = STOP_SECONDS) -> list[str]:
    """Cancel ``tasks`` and wait up to ``timeout`` seconds for them to end; the names of those
    that did not (they are left running; the caller shuts down without them)."""
    waiting = set(tasks)
    for task in waiting:
        task.cancel()
    if not waiting:
        return []
    done, pending = await asyncio.wait(waiting, timeout=timeout)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.warning("background task %s ended with %s", _name(task), type(error).__name__)
    left = sorted(_name(task) for task in pending)
    for name in left:
        logger.warning("background task %s did not stop within %.0f s of being cancelled; going on without it",
                       name, timeout)  # fmt: skip
    return left


def _name(task: asyncio.Task[None]) -> str:
    coro = task.get_coro()
    return str(getattr(coro, "__qualname__", task.get_name()))
