"""Proof of possession: bcrypt once per key for the whole fleet, not once per process.

A verifier admits a presented key ``K`` only if its Vault record, found at
``HMAC-SHA256(pepper, K)``, was made from ``K`` — the record's bcrypt hash (cost 12 at rest)
matches. bcrypt costs ≈ 0.3 s of CPU, so checking it in every new process made every rolling
deploy re-prove every active key (10,000 keys ≈ 3,000 core-seconds). Here a key is proven by
bcrypt once; the verifier that proved it leaves a *receipt* in Redis, and every other process
that finds a valid receipt for the same record skips bcrypt.

The receipt for the record at digest ``d``::

    receipt = HMAC-SHA256(R, "pmkeys-receipt-v1" ‖ d ‖ record.bcrypt ‖ record.uid ‖ record.key_id)
    R       = HMAC-SHA256(pepper, "pmkeys receipt key v1")

stored at ``<prefix>:proof:<d>`` (one key, so any Redis Cluster slot will do). Why this is safe
(docs/security.md, "Proof of possession across replicas", has the whole argument):

* a receipt is checked only after the presented key's own HMAC matched ``d``, so a receipt never
  admits a key by itself: it only stands for "a verifier holding the pepper ran bcrypt(K, hash)
  for this very record and it matched";
* a reader of Redis sees digests and receipts, both HMAC outputs: neither gives back a key, nor
  lets anyone make a new key's digest;
* a writer of Redis without the pepper cannot make a receipt that verifies (it is a MAC under a
  key derived from the pepper), so a planted or altered receipt only costs a bcrypt;
* the receipt is bound to the record's hash, uid and key id: a record re-issued, rotated or
  replaced in Vault does not inherit its predecessor's receipt.

Redis unreachable or absent: no receipt is read or written and the process proves by bcrypt,
as before (fail safe: slower, never weaker).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any, Protocol

from pmkeys.keys.hashing import Hasher
from pmkeys.vault.records import KeyRecord
from pmkeys.verify.ratelimit import REDIS_DOWN, RedisHealth
from pmkeys.verify.redisclient import scan_values

logger = logging.getLogger(__name__)
RECEIPT_CONTEXT = b"pmkeys-receipt-v1"
RECEIPT_KEY_CONTEXT = b"pmkeys receipt key v1"
#: How long a receipt lives in Redis (a key unused for this long is proven again once).
RECEIPT_TTL_SECONDS = 30 * 24 * 3600


def receipt_key(pepper: bytes) -> bytes:
    """The MAC key of receipts, derived from the pepper (the pepper itself never leaves Vault
    and memory)."""
    return hmac.digest(pepper, RECEIPT_KEY_CONTEXT, hashlib.sha256)


def receipt(key: bytes, record_digest: str, record: KeyRecord) -> str:
    """The receipt a verifier leaves once bcrypt accepted a key for ``record``."""
    fields = (record_digest, record.bcrypt, record.uid, record.key_id)
    message = RECEIPT_CONTEXT + b"".join(b"\0" + f.encode() for f in fields)
    return hmac.digest(key, message, hashlib.sha256).hex()


class Receipts(Protocol):
    """Where verifiers share receipts (Redis); a miss or an outage answers None."""

    async def get(self, record_digest: str) -> str | None: ...

    async def put(self, record_digest: str, value: str) -> None: ...


class RedisReceipts:
    """Receipts in Redis, one string key each (``<prefix>:proof:<digest>``), expiring after
    :data:`RECEIPT_TTL_SECONDS`. Outages answer "no receipt" and mark Redis down."""

    def __init__(self, client: Any, *, prefix: str, health: RedisHealth) -> None:
        self._redis = client
        self._prefix = f"{prefix}:proof:"
        self._health = health

    async def get(self, record_digest: str) -> str | None:
        if not self._health.should_try():
            return None
        try:
            found = await self._redis.get(self._prefix + record_digest)
        except REDIS_DOWN as exc:
            self._health.failed(exc, what="proving keys with bcrypt")
            return None
        self._health.succeeded()
        return None if found is None else str(found)

    async def put(self, record_digest: str, value: str) -> None:
        if not self._health.should_try():
            return
        try:
            await self._redis.set(self._prefix + record_digest, value, ex=RECEIPT_TTL_SECONDS)
        except REDIS_DOWN as exc:
            self._health.failed(exc, what="proving keys with bcrypt")

    async def listing(self) -> dict[str, str]:
        """Every receipt, by digest (the preload's list, :mod:`~pmkeys.verify.preloading`): one
        SCAN and MGETs (:func:`~pmkeys.verify.redisclient.scan_values`);
        empty if Redis does not answer."""
        if not self._health.should_try():
            return {}
        try:
            found = await scan_values(self._redis, self._prefix)
        except REDIS_DOWN as exc:
            self._health.failed(exc, what="listing proven keys")
            return {}
        self._health.succeeded()
        return found


class Possession:
    """Whether a presented key is the one its record was made from, by the cheapest sound way:
    this process already checked it, a valid receipt from another verifier, or bcrypt."""

    def __init__(self, *, receipts: Receipts | None = None) -> None:
        self._receipts = receipts
        #: digest → the bcrypt hash this process has seen the key match (one str per key).
        self._checked: dict[str, str] = {}
        self.receipts_accepted = 0
        self.receipts_refused = 0

    async def proven(self, key: str, record_digest: str, record: KeyRecord, *, pepper: bytes, hasher: Hasher) -> bool:
        """True if ``key`` is proven to be the key ``record`` was made from.

        Raises :class:`~pmkeys.keys.hashing.HashingBusy` when bcrypt is needed and its pool is full.
        """
        if self.holds(record_digest, record):
            return True
        expected = receipt(receipt_key(pepper), record_digest, record) if self._receipts else ""
        if self._receipts is not None and await self._receipt_holds(record_digest, expected):
            self._checked[record_digest] = record.bcrypt
            return True
        if not await hasher.check(key, record.bcrypt):
            return False
        self._checked[record_digest] = record.bcrypt
        if self._receipts is not None:
            await self._receipts.put(record_digest, expected)
        return True

    def vouched(self, record_digest: str, record: KeyRecord, found: str, *, pepper: bytes) -> bool:
        """The preload's check: whether ``found`` (read from Redis before any key was presented)
        is the receipt for ``record``; remembered like a proof if so. A key presented later still
        has to HMAC to ``record_digest`` to reach it."""
        if hmac.compare_digest(found, receipt(receipt_key(pepper), record_digest, record)):
            self._checked[record_digest] = record.bcrypt
            self.receipts_accepted += 1
            return True
        self.receipts_refused += 1
        return False

    def holds(self, record_digest: str, record: KeyRecord) -> bool:
        """Whether this process has already seen a key proven for ``record`` (its very hash): what
        a re-read without the key in hand may rely on (:mod:`~pmkeys.verify.refreshing`)."""
        return self._checked.get(record_digest) == record.bcrypt

    def handed_over(self, record_digest: str, record: KeyRecord) -> None:
        """A seal (:mod:`~pmkeys.verify.handover`) holds ``record``: another verifier proved its
        key, as a receipt would say; remembered like a proof."""
        self._checked[record_digest] = record.bcrypt

    async def _receipt_holds(self, record_digest: str, expected: str) -> bool:
        assert self._receipts is not None
        found = await self._receipts.get(record_digest)
        if found is None:
            return False
        if hmac.compare_digest(found, expected):
            self.receipts_accepted += 1
            return True
        self.receipts_refused += 1
        logger.warning("a receipt in Redis does not match its record; proving with bcrypt instead")
        return False

    def __len__(self) -> int:
        return len(self._checked)
