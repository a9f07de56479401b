"""Stopping background tasks: a loop whose cancel is swallowed below it still ends, and a task
that never ends does not hold the shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time

from pmkeys.tasks import cancel_requested, stop


async def _swallowing_call() -> None:
    """What a library that loses a cancel does: the CancelledError never comes out."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0.05)


def test_a_loop_ends_at_its_next_round_when_its_cancel_was_swallowed() -> None:
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while not cancel_requested():
            rounds += 1
            await _swallowing_call()

    async def main() -> tuple[list[str], float]:
        task = asyncio.ensure_future(loop())
        await asyncio.sleep(0.12)
        started = time.monotonic()
        left = await stop([task], timeout=5)
        return left, time.monotonic() - started

    left, took = asyncio.run(main())
    assert left == [] and took < 1.0
    assert rounds >= 2


def test_the_same_loop_without_the_check_would_run_on_and_is_left_behind_named() -> None:
    released = False

    async def stubborn() -> None:
        while not released:  # the loop as it was (while True): the swallowed cancel is never seen
            await _swallowing_call()

    async def main() -> tuple[list[str], float, bool]:
        task = asyncio.ensure_future(stubborn())
        await asyncio.sleep(0.12)
        started = time.monotonic()
        left = await stop([task], timeout=0.3)
        took = time.monotonic() - started
        await asyncio.sleep(0.2)
        still_running = not task.done()
        nonlocal released
        released = True  # the test's own teardown
        await task
        return left, took, still_running

    left, took, still_running = asyncio.run(main())
    assert still_running and left == [
        "test_the_same_loop_without_the_check_would_run_on_and_is_left_behind_named.<locals>.stubborn"
    ]
    assert 0.3 <= took < 1.5


def test_tasks_that_end_on_cancel_are_waited_for_and_their_errors_do_not_escape() -> None:
    async def failing() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def sleeper() -> None:
        await asyncio.sleep(60)

    async def main() -> list[str]:
        tasks = [asyncio.ensure_future(failing()), asyncio.ensure_future(sleeper())]
        await asyncio.sleep(0.05)
        return await stop(tasks, timeout=2)

    assert asyncio.run(main()) == []
