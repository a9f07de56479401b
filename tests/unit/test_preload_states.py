"""The preload's own states: it fetches from Redis before the watch has listed, caches nothing
before it has, and a failure anywhere ends it as failed, so readiness never waits on it forever."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from pmkeys.verify.peppers import Peppers
from pmkeys.verify.preloading import Preload
from pmkeys.verify.staleness import VaultHealth


class Receipts:
    def __init__(self, *, fails: bool = False) -> None:
        self.fails = fails
        self.listed = 0

    async def listing(self) -> dict[str, str]:
        self.listed += 1
        if self.fails:
            raise RuntimeError("not a Redis error: a bug, or a client that broke")
        return {}


def _run(preload: Preload, peppers: Peppers, cacheable: Any) -> Any:
    unused = cast(Any, None)
    return preload.run(
        store=unused, peppers=peppers, possession=unused, cache=unused, remember=unused,
        vault=VaultHealth(), cacheable=cacheable,
    )  # fmt: skip


def test_a_listing_that_raises_ends_the_preload_as_failed() -> None:
    preload = Preload(Receipts(fails=True))
    peppers = Peppers(cast(Any, None))

    async def main() -> None:
        with pytest.raises(RuntimeError):
            await _run(preload, peppers, lambda: True)

    asyncio.run(main())
    assert preload.state == "failed" and preload.finished


def test_receipts_are_fetched_while_the_watch_lists_and_nothing_runs_before_it_has() -> None:
    receipts = Receipts()
    preload = Preload(receipts)
    peppers = Peppers(cast(Any, None))
    listed = False

    async def main() -> None:
        task = asyncio.ensure_future(_run(preload, peppers, lambda: listed))
        await asyncio.sleep(0.1)
        assert receipts.listed == 1 and "fetched" in preload.reached  # before the pepper and the listing
        assert preload.state == "waiting" and not preload.finished
        peppers.answered = True
        await asyncio.sleep(0.1)
        assert preload.state == "waiting"  # the pepper is in, the listing is not
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert preload.state == "failed" and preload.finished  # cancelled: readiness waits no more
