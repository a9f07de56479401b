"""bcrypt at rest, off the event loop, in a bounded pool.

bcrypt is deliberately slow (≈0.3 s at cost 12 on one core), so it never runs on the event
loop: a thread pool with one worker per core does it (bcrypt releases the GIL). The pool is
bounded twice: by its workers and by ``max_queue`` waiting jobs, beyond which callers get
:class:`HashingBusy` at once instead of queueing forever (the verifier answers 503).

Cost 12 is the floor for production; lower costs exist for tests and say so loudly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

T = TypeVar("T")

PRODUCTION_COST = 12
logger = logging.getLogger(__name__)


class HashingBusy(RuntimeError):
    """The bcrypt pool's queue is full."""


class Hasher:
    def __init__(self, *, cost: int = PRODUCTION_COST, workers: int | None = None, max_queue: int = 1024) -> None:
        if not 4 <= cost <= 31:
            raise ValueError(f"bcrypt cost must be between 4 and 31, got {cost}")
        if cost < PRODUCTION_COST:
            logger.warning(
                "bcrypt cost %d is below the production floor of %d: use it for tests only",
                cost,
                PRODUCTION_COST,
            )
        self.cost = cost
        self.workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="bcrypt")
        self._max_queue = max_queue
        self._pending = 0
        self._lock = threading.Lock()
        #: How many bcrypt computations this process ran (hashes + checks); benchmarks read it.
        self.calls = 0

    @property
    def pending(self) -> int:
        """Jobs queued or running: the pool's queue depth."""
        return self._pending

    async def hash(self, key: str) -> str:
        return await self._run(self._hash_sync, key)

    async def check(self, key: str, hashed: str) -> bool:
        return await self._run(self._check_sync, key, hashed)

    def _hash_sync(self, key: str) -> str:
        return bcrypt.hashpw(key.encode(), bcrypt.gensalt(self.cost)).decode()

    @staticmethod
    def _check_sync(key: str, hashed: str) -> bool:
        return bcrypt.checkpw(key.encode(), hashed.encode())

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        with self._lock:
            if self._pending >= self._max_queue:
                raise HashingBusy(f"bcrypt pool busy ({self._pending} jobs waiting)")
            self._pending += 1
            self.calls += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            with self._lock:
                self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
