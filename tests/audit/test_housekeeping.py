"""The operator's audit housekeeping on its own: a standby (refused by the leadership fence)
retries its queued records but neither sweeps nor checkpoints; once it is the writer it does
both at the next tick."""

from __future__ import annotations

import asyncio
import contextlib

from pmkeys.audit.housekeeping import Housekeeping
from pmkeys.reconcile.leadership import NotLeader


class Log:
    def __init__(self) -> None:
        self.sweeps = 0
        self.retries = 0

    def flush_pending(self) -> int:
        self.retries += 1
        return 0

    def sweep(self, actor: object) -> tuple[int, int, int]:
        self.sweeps += 1
        return 0, 0, 1


class Keeper:
    def __init__(self) -> None:
        self.advances = 0

    async def advance(self) -> None:
        self.advances += 1


class Fence:
    def __init__(self) -> None:
        self.writer = False
        self.asked: list[str] = []

    def __call__(self, what: str) -> None:
        self.asked.append(what)
        if not self.writer:
            raise NotLeader(what)


async def test_a_standby_neither_sweeps_nor_checkpoints_until_it_is_the_writer() -> None:
    log, keeper, fence = Log(), Keeper(), Fence()
    every = {"sweep_every": 0.02, "checkpoint_every": 0.02, "retry_every": 0.02}
    work = Housekeeping(log, fence=fence, keeper=keeper, **every)  # type: ignore[arg-type]
    task = asyncio.create_task(work.run())
    try:
        await asyncio.sleep(0.3)
        assert log.retries > 3, "its own queued records are retried"
        assert (log.sweeps, keeper.advances) == (0, 0)
        assert {"audit retention sweep", "audit checkpoint"} <= set(fence.asked)
        fence.writer = True
        await asyncio.sleep(0.3)
        assert log.sweeps > 0 and keeper.advances > 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
