"""Single-flight: concurrent cache misses for one key share one Vault read and one bcrypt.

A burst of requests with a key the process has not cached yet (a new replica, a key just
rotated) would otherwise read Vault and run bcrypt once per request. The first miss starts the
work; later ones await the same future (shielded, so a caller that gives up does not cancel it
for the others). The flight is forgotten when it lands, whatever its result: a failure is not
cached here (the caller decides what to remember).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T]] = {}

    async def run(self, name: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The result of ``work()``, started now unless a flight for ``name`` is under way."""
        flight = self._flights.get(name)
        if flight is None:
            flight = asyncio.ensure_future(work())
            self._flights[name] = flight
            flight.add_done_callback(lambda done: self._land(name, done))
        return await asyncio.shield(flight)

    def _land(self, name: str, done: asyncio.Future[T]) -> None:
        if self._flights.get(name) is done:
            del self._flights[name]
        if not done.cancelled():
            done.exception()  # retrieved here so an error nobody awaited is not reported as lost

    def __len__(self) -> int:
        return len(self._flights)
