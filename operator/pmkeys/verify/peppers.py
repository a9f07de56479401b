"""The digest peppers, as the verifier holds them: read once at start, looked for again while a
new installation has none yet.

The hot path reads :attr:`Peppers.current` (the newest pepper, or None) and nothing else. Before
the operator has created the first pepper, no key can exist, so a request that finds none asks
:meth:`Peppers.recheck`, which reads Vault at most every ``PEPPER_RECHECK_SECONDS`` and lets every
waiting request share that one read: the first key issued works at once, and a flood of requests
costs one read per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pmkeys.keys.digest import Pepper
from pmkeys.vault.errors import VaultError
from pmkeys.vault.store import KeyStore

logger = logging.getLogger(__name__)
PEPPER_RETRY_MAX = 10.0
#: Before the operator has created the pepper (a new installation), how often a request may
#: look for it again: a Vault read per interval at most, and the first key works at once.
PEPPER_RECHECK_SECONDS = 0.1


class Peppers:
    def __init__(self, store: KeyStore) -> None:
        self._store = store
        #: Newest first; empty until Vault answered with at least one.
        self.all: list[Pepper] = []
        #: The newest pepper's secret: what the hot path digests with.
        self.current: bytes | None = None
        #: Vault answered at least once (even "none yet").
        self.answered = False
        self._read_at = 0.0
        self._flight: asyncio.Future[bool] | None = None

    async def load(self) -> bool:
        """Read the peppers; True once Vault has answered (even "none yet": then no key exists)."""
        self._read_at = time.monotonic()
        try:
            peppers = await self._store.read_peppers()
        except VaultError as exc:
            logger.warning("cannot read the digest pepper from Vault yet: %s", exc)
            return False
        self.answered = True
        if peppers:
            self.all = peppers
            self.current = peppers[0].secret
        return True

    async def load_until_done(self) -> None:
        """Retry :meth:`load` with exponential back-off until Vault answers."""
        delay = 0.5
        while not await self.load():
            await asyncio.sleep(delay)
            delay = min(PEPPER_RETRY_MAX, delay * 2)
        logger.info("Vault answered; verifying keys")

    async def recheck(self) -> None:
        """Look for a pepper again, sharing one read among all callers and at most one read
        per ``PEPPER_RECHECK_SECONDS``."""
        if self._flight is None and time.monotonic() - self._read_at >= PEPPER_RECHECK_SECONDS:
            flight = self._flight = asyncio.ensure_future(self.load())
            flight.add_done_callback(lambda _: setattr(self, "_flight", None))
        if self._flight is not None:
            await asyncio.shield(self._flight)
