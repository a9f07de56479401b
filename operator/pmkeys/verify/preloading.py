"""Preload: a new replica caches the records of proven keys before it reports ready.

First it opens what the replicas before it handed over (:mod:`~pmkeys.verify.handover`: the
records they read from Vault within the last cache TTL, sealed in Redis) — the keys in use, with
no Vault read at all. Then it reads from Vault the records of the other keys with receipts.
The seals and the receipts are fetched from Redis, and the seals opened, while the watch lists
and the pepper is read (seconds each with 10,000 keys, and independent); what they hold is
cached once both are in.

Receipts (:mod:`~pmkeys.verify.possession`) spare a new replica the bcrypt of every key another
replica proved, but not the Vault read behind each key's first use: a replica that joined a
rotation with 10,000 keys in use answered its first request for each after a read, and under
load (reads of 33 ms, ~15/s on the busy 2-core machine) the last key waited minutes. So before
it reports ready, a replica with Redis reads the records of the keys that have receipts and
caches them, and joins the rotation with every such key a cache hit (0 Vault reads, 0 bcrypt).

Why receipts are the list to preload: they are exactly the keys proven before (used at least
once in the last :data:`~pmkeys.verify.possession.RECEIPT_TTL_SECONDS`), they name the record
(its digest), and the receipt vouches for the record once it is read. The alternatives know
less: the TenantApiKey watch names objects and key ids, not digests (the verifier may not read
the owner indexes that map them), and a Vault LIST of ``keys/`` (a capability the verifier's
policy does not grant) names every record ever written, revoked ones included. KV v2 has no
batch read, so one read per record it is; what is bounded is how they hit Vault:

* at most ``concurrency`` reads in flight (8 by default, the Vault session's threads: more would
  only queue), so one replica starting costs Vault what eight busy clients cost it, and a slow
  Vault slows the preload instead of piling up requests;
* readiness waits for the preload, but for ``deadline`` seconds at most (60 by default): past
  it the replica reports ready and keeps preloading behind traffic, whose misses read Vault as
  they always did. A Vault that fails a read ends the preload at once. Either way the replica is
  never worse off than without the preload, and a slow Vault cannot hold a rollout forever.

A preloaded entry is exactly what the miss path would have cached for the same record — the
revocation and deletion the watch knows, the grace deadlines, the watch's full listing awaited
first — and it is found only by a presented key whose own HMAC is the digest, as before: the
receipt is checked when the record is read instead of when the key is first presented, against
the same record (docs/security.md). Only records under the newest pepper are preloaded (older
ones are found under another digest, which needs the key). Each entry lives one cache TTL from
its read, as on the miss path; the reads are spread over the preload, and so are the re-reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from pmkeys.keys.digest import Pepper
from pmkeys.vault.errors import VaultError
from pmkeys.vault.records import KeyRecord
from pmkeys.vault.store import KeyStore
from pmkeys.verify.cache import KeyCache
from pmkeys.verify.handover import RedisHandover, Sealed, seal_key, unseal
from pmkeys.verify.peppers import Peppers
from pmkeys.verify.possession import Possession
from pmkeys.verify.staleness import VaultHealth

logger = logging.getLogger(__name__)
DEFAULT_CONCURRENCY = 8
DEFAULT_DEADLINE = 60.0
#: Cache a preloaded record: (digest, record, cache epoch before the read).
Remember = Callable[[str, KeyRecord, int], None]
#: Cache a handed-over record if it still holds: (digest, what the seal holds) → cached or not.
Adopt = Callable[[str, Sealed], bool]


class ReceiptListing(Protocol):
    async def listing(self) -> dict[str, str]: ...


class Preload:
    """One preload per process; :attr:`finished` is what readiness waits for."""

    def __init__(
        self,
        receipts: ReceiptListing | None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        self._receipts = receipts
        self.concurrency = concurrency
        self.deadline = deadline
        #: waiting, running, done, failed (Redis or Vault did not answer), off (nothing to do).
        self.state = "off" if receipts is None or deadline <= 0 else "waiting"
        self.candidates = 0
        #: Records read from Vault and cached.
        self.loaded = 0
        self.skipped = 0
        self.refused = 0
        #: Records opened from seals (no Vault read), and seals refused (not openable, or stale).
        self.handed_over = 0
        self.seals_refused = 0
        #: Steps done so far: "fetched" (seals and receipts read from Redis), "seals" (cached).
        self.reached: set[str] = set()
        self._started: float | None = None
        self._ended: float | None = None

    @property
    def finished(self) -> bool:
        """Done, failed, off, or running past its deadline."""
        if self.state == "running":
            return self.seconds >= self.deadline
        return self.state != "waiting"

    @property
    def cached(self) -> int:
        """Records the preload cached, handed over or read from Vault."""
        return self.handed_over + self.loaded

    @property
    def seconds(self) -> float:
        """How long the preload ran (so far)."""
        if self._started is None:
            return 0.0
        return (self._ended or time.monotonic()) - self._started

    async def run(
        self,
        *,
        store: KeyStore,
        peppers: Peppers,
        possession: Possession,
        cache: KeyCache,
        remember: Remember,
        vault: VaultHealth,
        cacheable: Callable[[], bool],
        handover: RedisHandover | None = None,
        adopt: Adopt | None = None,
    ) -> None:
        """Fetch the seals and the receipts from Redis and open the seals while the watch lists
        and the pepper is read; once ``cacheable()`` (both are in), cache what the seals hold,
        then read and remember every other record a receipt names (see the module docstring)."""
        if self.state != "waiting":
            return
        try:
            assert self._receipts is not None
            texts, listed = await asyncio.gather(
                handover.listing() if handover and adopt else _nothing(), self._receipts.listing()
            )
            self.reached.add("fetched")
            while not peppers.answered:
                await asyncio.sleep(0.05)
            opened = await self._unseal_all(texts, peppers) if adopt else {}
            while not cacheable():
                await asyncio.sleep(0.05)
            self.state, self._started = "running", time.monotonic()
            taken = await self._adopt_all(opened, adopt) if adopt else set()
            self.reached.add("seals")
            self.candidates = len(listed.keys() | taken)
            listed = {digest: found for digest, found in listed.items() if digest not in taken}
            loading = _Loading(self, store, peppers, possession, cache, remember, listed)
            await asyncio.gather(*(loading.worker() for _ in range(self.concurrency)))
            if loading.failed:
                vault.failed()
            self.state = "failed" if loading.failed else "done"
        finally:
            if self.state in ("waiting", "running"):  # an error, or cancelled: readiness waits no more
                self.state = "failed"
            self._ended = time.monotonic()
        logger.info(
            "preload %s: %d of %d proven keys cached in %.1f s (%d handed over, %d seals refused;"
            " %d skipped, %d receipts refused)",
            self.state,
            self.cached,
            self.candidates,
            self.seconds,
            self.handed_over,
            self.seals_refused,
            self.skipped,
            self.refused,
        )

    async def _unseal_all(self, texts: dict[str, str], peppers: Peppers) -> dict[str, Sealed]:
        """What the seals hold, by digest, for those that open under the newest pepper (the
        others are counted as refused)."""
        if not peppers.all:
            self.seals_refused += len(texts)
            return {}
        pepper = peppers.all[0]
        root = seal_key(pepper.secret)
        opened: dict[str, Sealed] = {}
        for count, (digest, text) in enumerate(texts.items(), start=1):
            sealed = unseal(root, digest, pepper.version, text)
            if sealed is not None:
                opened[digest] = sealed
            else:
                self.seals_refused += 1
            if count % 500 == 0:
                await asyncio.sleep(0)  # let requests and the watch's events in between
        return opened

    async def _adopt_all(self, opened: dict[str, Sealed], adopt: Adopt) -> set[str]:
        """Cache what the opened seals hold and still vouch for; the digests it cached."""
        taken: set[str] = set()
        for count, (digest, sealed) in enumerate(opened.items(), start=1):
            if adopt(digest, sealed):
                taken.add(digest)
            else:
                self.seals_refused += 1
            if count % 500 == 0:
                await asyncio.sleep(0)
        self.handed_over = len(taken)
        return taken


async def _nothing() -> dict[str, str]:
    return {}


class _Loading:
    """The workers of one preload, sharing one iterator over the receipts."""

    def __init__(
        self,
        preload: Preload,
        store: KeyStore,
        peppers: Peppers,
        possession: Possession,
        cache: KeyCache,
        remember: Remember,
        listed: dict[str, str],
    ) -> None:
        self.preload, self.store, self.possession, self.remember = preload, store, possession, remember
        self.cache = cache
        self.pepper = peppers.all[0] if peppers.all else None
        self.items: Iterator[tuple[str, str]] = iter(listed.items())
        self.failed = False

    async def worker(self) -> None:
        if self.pepper is None:
            return  # no pepper yet: no key exists
        for record_digest, found in self.items:
            if self.failed:
                return
            try:
                await self._load(self.pepper, record_digest, found)
            except VaultError as exc:
                logger.warning("preload stopped: %s", exc)
                self.failed = True

    async def _load(self, pepper: Pepper, record_digest: str, found: str) -> None:
        preload = self.preload
        epoch = self.cache.epoch
        stored = await self.store.get_record(record_digest)
        if stored is None or stored[0].pepper_version != pepper.version:
            preload.skipped += 1
            return
        record = stored[0]
        if not self.possession.vouched(record_digest, record, found, pepper=pepper.secret):
            preload.refused += 1
            return
        self.remember(record_digest, record, epoch)
        preload.loaded += 1
