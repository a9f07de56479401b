"""The verifier for synchronous code (Flask, Django, scripts): same behaviour, blocking calls.

Implemented once, async, and wrapped (as kr8s does): a private event loop in a daemon thread
owns the :class:`~pmkeys.verify.verifier.Verifier`, and each call hands it a coroutine and
waits. A call costs one thread hand-off (tens of microseconds) on top of the async path, and any
number of threads may call at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from pmkeys.config import VerifierSettings
from pmkeys.verify.decision import Decision
from pmkeys.verify.verifier import Verifier

T = TypeVar("T")


class BlockingVerifier:
    """``with BlockingVerifier(settings) as v: v.verify(key, "send_email")``."""

    def __init__(
        self,
        settings: VerifierSettings | None = None,
        *,
        factory: Callable[[], Verifier] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pmkeys-verifier", daemon=True)
        self._thread.start()
        build = factory or (lambda: Verifier.from_settings(settings or VerifierSettings()))

        async def create() -> Verifier:
            verifier = build()
            await verifier.start()
            return verifier

        self.verifier = self._run(create())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    def verify(self, key: str, scope: str | None = None, *, client: str | None = None) -> Decision:
        return self._run(self.verifier.verify(key, scope, client=client))

    def report_errors(self, key_id: str, count: int = 1) -> bool:
        async def report() -> bool:
            return self.verifier.report_errors(key_id, count)

        return self._run(report())

    @property
    def ready(self) -> bool:
        return self.verifier.ready

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.verifier.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> BlockingVerifier:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
