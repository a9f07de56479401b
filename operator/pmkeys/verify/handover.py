"""Hand-over: the records a replica read from Vault, sealed in Redis for the replica after it.

A replica that replaces another must know the records of every key in use before it serves
them. Reading them from Vault is one read per key (KV v2 has no batch read): 10,000 keys took
~45 s on the 2-core machine while the old replica kept Vault busy, so "every key served again"
waited that long. The records are already in the old replica's memory; what it lacks is a way
to hand them over that Redis cannot abuse. So every replica, after each Vault read of a proven
key, leaves the record *sealed* in Redis for as long as it would answer from that read itself
(its *trusted time*: one cache TTL, or ``stale_for`` while entries are re-read behind the
request path, :mod:`~pmkeys.verify.refreshing`), and a new replica opens the seals of the keys
in use before it reports ready: one SCAN and a few MGETs instead of one Vault read per key.

The seal of the record cached under digest ``d`` (the key's HMAC under the newest pepper)::

    S       = HMAC-SHA256(pepper, "pmkeys seal key v1")
    K_n     = HMAC-SHA256(S, n)                       n: 32 random bytes, one per seal
    seal    = n ‖ AES-256-GCM(K_n, nonce 0, payload, aad = "pmkeys-seal-v1" ‖ d ‖ pepper version)
    payload = {record, fingerprint of its TenantApiKey as the sealer's watch knew it, read_at}

stored at ``<prefix>:seal:<d>``, expiring in Redis when the sealer's own cache entry does. What
each holder of Redis can do with it (docs/security.md, "Hand-over between replicas"):

* a **reader** sees ciphertext: no key (it is not in the record), no bcrypt hash, no tenant;
* a **writer** without the pepper cannot make a seal that opens (AEAD under a key derived from
  the pepper), nor move one to another digest or pepper (both are in the associated data): a
  planted, altered or moved seal only costs the new replica a Vault read;
* a writer can **replay** an older seal of the same digest, from before the key's scopes,
  revocation or plan changed. It is refused: a seal is opened only if the TenantApiKey's
  fingerprint (spec and status, the watch's own, :class:`~pmkeys.verify.watching.ObjectFacts`)
  is still the one the sealer saw before its read. The operator writes status after every
  record it writes, so a changed record means a changed fingerprint; and a seal read back is
  trusted only until ``read_at`` plus the trusted time, exactly as long as the sealer trusted
  it (and, past the TTL, under the same condition: a live watch).

A seal stands for what the sealer knew: it is left only for a key it proved (bcrypt, a receipt,
or its own earlier proof), so an opened seal is as good as a receipt for the record it holds.
One key per seal, so any Redis Cluster slot will do. Seals are written in one pipeline per
``FLUSH_SECONDS`` (at most one per key: the newest), never on the request path. Redis down: no
seal is written or read, and the new replica reads Vault as before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import pydantic
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pmkeys.keys.digest import Pepper
from pmkeys.vault.records import KeyRecord
from pmkeys.verify.ratelimit import REDIS_DOWN, RedisHealth
from pmkeys.verify.redisclient import scan_values

logger = logging.getLogger(__name__)
SEAL_CONTEXT = b"pmkeys-seal-v1"
SEAL_KEY_CONTEXT = b"pmkeys seal key v1"
NONCE_BYTES = 32
_ZERO_NONCE = bytes(12)
#: How often pending seals are written (one pipeline each time).
FLUSH_SECONDS = 1.0
#: Seals waiting to be written, at most (the newest per key; beyond it new ones are dropped).
MAX_PENDING = 100_000
#: A seal whose read_at is later than now by more than this (clock skew) is refused.
CLOCK_SKEW_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Sealed:
    """What a seal holds: a record as the sealer read it, and what it knew of its object."""

    record: KeyRecord
    #: The TenantApiKey's :attr:`~pmkeys.verify.watching.ObjectFacts.fingerprint` before the read.
    fingerprint: str
    #: Wall-clock seconds of the read (the sealer's cache entry ages from then).
    read_at: float


def seal_key(pepper: bytes) -> bytes:
    """The root key of seals, derived from the pepper (which itself never leaves Vault and memory)."""
    return hmac.digest(pepper, SEAL_KEY_CONTEXT, hashlib.sha256)


def _aad(digest: str, pepper_version: int) -> bytes:
    return b"\0".join((SEAL_CONTEXT, digest.encode(), str(pepper_version).encode()))


def seal(root: bytes, digest: str, pepper_version: int, sealed: Sealed) -> str:
    """``sealed`` as text for Redis, openable only with ``root`` for this digest and pepper."""
    payload = json.dumps(
        {"record": sealed.record.model_dump(mode="json"), "fingerprint": sealed.fingerprint, "readAt": sealed.read_at}
    ).encode()
    nonce = os.urandom(NONCE_BYTES)
    cipher = AESGCM(hmac.digest(root, nonce, hashlib.sha256))
    return base64.urlsafe_b64encode(nonce + cipher.encrypt(_ZERO_NONCE, payload, _aad(digest, pepper_version))).decode()


def unseal(root: bytes, digest: str, pepper_version: int, text: str) -> Sealed | None:
    """What the seal ``text`` holds, or None if it was not made by :func:`seal` with ``root``
    for this digest and pepper (or is malformed)."""
    try:
        blob = base64.urlsafe_b64decode(text)
        nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        cipher = AESGCM(hmac.digest(root, nonce, hashlib.sha256))
        fields = json.loads(cipher.decrypt(_ZERO_NONCE, sealed, _aad(digest, pepper_version)))
        return Sealed(KeyRecord.model_validate(fields["record"]), str(fields["fingerprint"]), float(fields["readAt"]))
    except (InvalidTag, binascii.Error, ValueError, KeyError, TypeError, pydantic.ValidationError):
        return None


def age_if_fresh(sealed: Sealed, trusted: float, *, now: float | None = None) -> float | None:
    """Seconds since the sealer read the record, if the sealer would still answer from it
    (< ``trusted`` seconds, its trusted time)."""
    age = (time.time() if now is None else now) - sealed.read_at
    if age < -CLOCK_SKEW_SECONDS or age >= trusted:
        return None
    return max(age, 0.0)


class RedisHandover:
    """Seals in Redis, one string key each (``<prefix>:seal:<digest>``), each expiring ``ttl``
    (the trusted time) after the read it copies. :meth:`offer` keeps the newest seal per key;
    :meth:`flush` writes them."""

    def __init__(self, client: Any, *, prefix: str, health: RedisHealth, ttl: float) -> None:
        self._redis = client
        self._prefix = f"{prefix}:seal:"
        self._health = health
        self.ttl = ttl
        self._pending: dict[str, tuple[Pepper, Sealed]] = {}
        self.written = 0

    def offer(self, digest: str, pepper: Pepper, sealed: Sealed) -> None:
        """Hand ``sealed`` over at the next flush (replacing what was pending for ``digest``)."""
        if len(self._pending) < MAX_PENDING or digest in self._pending:
            self._pending[digest] = (pepper, sealed)

    async def flush(self) -> int:
        """Write every pending seal still fresh, in one pipeline; returns how many."""
        pending, self._pending = self._pending, {}
        if not pending or not self._health.should_try():
            return 0
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        count = 0
        for digest, (pepper, sealed) in pending.items():
            left_ms = int((sealed.read_at + self.ttl - now) * 1000)
            if left_ms > 0:
                text = seal(seal_key(pepper.secret), digest, pepper.version, sealed)
                pipe.set(self._prefix + digest, text, px=left_ms)
                count += 1
        try:
            await pipe.execute()
        except REDIS_DOWN as exc:
            self._health.failed(exc, what="handing keys over to new replicas")
            return 0
        self._health.succeeded()
        self.written += count
        return count

    async def listing(self) -> dict[str, str]:
        """Every seal in Redis, by digest; empty if Redis does not answer."""
        if not self._health.should_try():
            return {}
        try:
            found = await scan_values(self._redis, self._prefix)
        except REDIS_DOWN as exc:
            self._health.failed(exc, what="reading handed-over keys")
            return {}
        self._health.succeeded()
        return found
