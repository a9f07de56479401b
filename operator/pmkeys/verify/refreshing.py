"""Refresh behind: while the watch is live, an entry past its TTL answers at once and is re-read
from Vault in the background, at a bounded rate.

Without it every cached entry went back to Vault on the request path once per cache TTL: at
10,000 keys in use and a 30 s TTL that is 333 reads per second per replica, each one a request
that waits for Vault — and a replica that has just adopted 10,000 records handed over by its
predecessor (:mod:`~pmkeys.verify.handover`) finds most of them past their TTL on the first
request, so "every key served again" waited for thousands of reads queued behind Vault.

The TTL is not what keeps an entry right while the watch is live: every revocation, deletion,
rotation and plan change shows on the TenantApiKey, and the watch applies it to the object's
entries as the event arrives (:meth:`pmkeys.verify.cache.KeyCache.invalidate`, which also makes
them re-read on the request path at once). What only Vault knows is a change written to Vault
*and nowhere else*, which the operator never makes (:mod:`pmkeys.verify.staleness` has the
whole argument). So an entry past its TTL is answered from, and its record re-read behind the
request, when all of these hold:

* the TenantApiKey watch is live (listed and watching, or lost less than one TTL ago); without
  it the TTL bounds staleness as before and the request waits for the read;
* the watch has not invalidated the entry (that one is re-read on the request path);
* its Vault read is at most ``stale_for`` seconds old (15 minutes by default, the bound the
  verifier already applies while Vault is away); older entries are re-read on the request path;
* its record was found under the newest pepper's digest (the only digest a background re-read
  can name without the key).

The re-reads are paced: at most ``per_second`` start per second (:data:`DEFAULT_PER_SECOND` by
default), ``concurrency`` at a time, oldest request first, one per entry however often it is
asked for. So what an active key costs Vault is bounded by design — each replica reads at most
``per_second`` records per second in the background whatever the number of keys — and each entry
in use is re-read within about ``keys in use / per_second`` seconds past its TTL (200 s for
10,000 keys), within ``stale_for`` up to 45,000 keys in use per replica; beyond that the oldest
entries take the request path again. A re-read that finds the record gone, under another pepper,
or with a bcrypt hash this process has not seen the key match makes the entry's next request take
the whole miss path (with the key in hand); a Vault that fails leaves the entry answering within
``stale_for``, exactly as an outage does. ``PMKEYS_REFRESH_PER_SECOND=0`` turns it off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pmkeys.tasks import cancel_requested, stop

logger = logging.getLogger(__name__)
DEFAULT_PER_SECOND = 50.0
DEFAULT_CONCURRENCY = 4
#: Entries waiting for a re-read, at most (beyond it a request for one more is dropped; the
#: entry is asked for again on its next use).
MAX_BACKLOG = 200_000
#: Re-read the entry cached under this digest (it decides what the read found means).
Refresh = Callable[[str], Awaitable[None]]


class Refresher:
    """The queue of entries to re-read behind the request path, and the loop that paces them."""

    def __init__(self, *, per_second: float = DEFAULT_PER_SECOND, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.per_second = per_second
        self.concurrency = concurrency
        #: Digests in the order they were first asked for (a dict: ordered, one per digest).
        self._wanted: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        #: Re-reads started; of those: records re-cached, entries sent to the miss path (record
        #: gone, other pepper, unproven hash), Vault failures, and errors (a bug: logged).
        self.started = 0
        self.refreshed = 0
        self.dropped = 0
        self.failed = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    @property
    def backlog(self) -> int:
        return len(self._wanted)

    def want(self, digest: str) -> None:
        """Have the entry under ``digest`` re-read soon (once, however often it is asked)."""
        if digest not in self._wanted and len(self._wanted) < MAX_BACKLOG:
            self._wanted[digest] = None
            self._wake.set()

    async def run(self, refresh: Refresh) -> None:
        """Start the oldest wanted re-read every ``1 / per_second`` seconds, at most
        ``concurrency`` at once; until cancelled (then the running ones are cancelled too)."""
        if not self.enabled:
            return
        interval = 1.0 / self.per_second
        slots = asyncio.Semaphore(self.concurrency)
        try:
            while not cancel_requested():
                await slots.acquire()  # first: a digest leaves the queue only to be re-read at once
                while not self._wanted:
                    self._wake.clear()
                    await self._wake.wait()
                digest = next(iter(self._wanted))
                del self._wanted[digest]
                task = asyncio.ensure_future(self._one(refresh, digest, slots))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
                self.started += 1
                await asyncio.sleep(interval)
        finally:
            await stop(list(self._running))

    async def _one(self, refresh: Refresh, digest: str, slots: asyncio.Semaphore) -> None:
        try:
            await refresh(digest)
        except Exception:
            self.errors += 1
            logger.exception("re-reading a cached key's record failed")
        finally:
            slots.release()
