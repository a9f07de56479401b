"""The pace of re-reads behind the request path (pmkeys.verify.refreshing), with a fake re-read:
at most ``per_second`` start per second and ``concurrency`` run at once, whatever is asked for;
an entry asked for many times is re-read once; a failing re-read does not stop the others."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from pmkeys.verify.refreshing import Refresher

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def run_for(refresher: Refresher, seconds: float, refresh: object) -> float:
    started = time.monotonic()
    task = asyncio.ensure_future(refresher.run(refresh))  # type: ignore[arg-type]
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return time.monotonic() - started


async def test_rereads_start_at_most_per_second_and_oldest_first() -> None:
    refresher = Refresher(per_second=20, concurrency=4)
    done: list[str] = []

    async def refresh(digest: str) -> None:
        done.append(digest)

    for n in range(100):
        refresher.want(f"d{n}")
    elapsed = await run_for(refresher, 1.0, refresh)
    assert len(done) <= 20 * elapsed + 1, f"{len(done)} re-reads in {elapsed:.2f} s at 20/s"
    assert len(done) >= 10, "the queue drains"
    assert done == [f"d{n}" for n in range(len(done))], "oldest first"
    assert refresher.backlog == 100 - len(done)


async def test_an_entry_asked_for_many_times_is_reread_once() -> None:
    refresher = Refresher(per_second=100)
    done: list[str] = []

    async def refresh(digest: str) -> None:
        done.append(digest)

    for _ in range(5):
        refresher.want("same")
    refresher.want("other")
    await run_for(refresher, 0.2, refresh)
    assert done == ["same", "other"]


async def test_at_most_concurrency_rereads_run_at_once_and_a_failure_does_not_stop_the_rest() -> None:
    refresher = Refresher(per_second=1000, concurrency=3)
    running, most, release = 0, 0, asyncio.Event()

    async def refresh(digest: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            if digest == "d0":
                raise RuntimeError("a bug in one re-read")
            await release.wait()
        finally:
            running -= 1

    for n in range(10):
        refresher.want(f"d{n}")
    task = asyncio.ensure_future(refresher.run(refresh))
    await asyncio.sleep(0.2)
    assert most == 3 and refresher.backlog == 10 - refresher.started
    release.set()
    await asyncio.sleep(0.2)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert refresher.started == 10 and refresher.errors == 1


async def test_off_at_zero_per_second() -> None:
    refresher = Refresher(per_second=0)
    refresher.want("d")
    await asyncio.wait_for(refresher.run(lambda digest: asyncio.sleep(0)), timeout=1)
    assert not refresher.enabled and refresher.started == 0
