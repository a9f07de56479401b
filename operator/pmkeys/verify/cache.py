"""What one verifier process remembers about keys, so the hot path does no I/O.

Entries are keyed by the key's digest under the newest pepper (the plaintext is never a cache
key) and hold what a decision needs: owner, scopes, limit, deadline, and a refusal if the key is
revoked. They live ``cache_ttl`` seconds; that TTL is the upper bound on staleness when the
push path (the TenantApiKey watch) is down. The watch drops entries early through the
``uid → digests`` index whenever the owning object changes.

Unknown digests are remembered for ``negative_ttl`` seconds, so a client repeating a wrong key
costs one Vault read, not one per request. The negative cache is bounded and cleared whenever
any object gets a new key (a key can be used a few milliseconds before its record is written,
and must not then be refused for the whole negative TTL).

``epoch`` increases on every invalidation and each object remembers the epoch of its last one: a
cache miss notes the epoch it started in and does not store its result if *its* object was
invalidated meanwhile (the result may predate the change). Other objects' churn does not matter.
Times are monotonic microseconds.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from pmkeys.vault.records import KeyRecord, KeyState
from pmkeys.verify.decision import Outcome

NEVER = 2**62
_US = 1_000_000


@dataclass(slots=True)
class Entry:
    """One key as the hot path sees it."""

    key_id: str
    tenant: str
    uid: str
    namespace: str
    name: str
    tier: str
    rate_limit: int
    scopes: frozenset[str]
    scope_list: tuple[str, ...]
    #: Monotonic µs after which the key is expired (``not_after`` of the record).
    not_after: int
    #: Monotonic µs after which this entry must be re-read.
    expires: int
    #: Set when the key must be refused whatever the request (revoked).
    denial: Outcome | None = None

    @classmethod
    def from_record(cls, record: KeyRecord, *, now: int, ttl_us: int, revoked: bool = False) -> Entry:
        scopes = tuple(s.value for s in record.scopes)
        denial = Outcome.REVOKED if revoked or record.state is KeyState.REVOKED else None
        return cls(
            key_id=record.key_id,
            tenant=record.tenant,
            uid=record.uid,
            namespace=record.namespace,
            name=record.name,
            tier=record.tier.value,
            rate_limit=record.rate_limit,
            scopes=frozenset(scopes),
            scope_list=scopes,
            not_after=to_monotonic(record.not_after, now),
            expires=now + ttl_us,
            denial=denial,
        )


def to_monotonic(when: dt.datetime | None, now: int) -> int:
    """A wall-clock deadline as monotonic µs relative to ``now`` (monotonic µs)."""
    if when is None:
        return NEVER
    return now + int((when.timestamp() - time.time()) * _US)


class KeyCache:
    def __init__(self, *, ttl: float, negative_ttl: float, max_negative: int = 100_000) -> None:
        self.ttl_us = int(ttl * _US)
        self.negative_ttl_us = int(negative_ttl * _US)
        self.max_negative = max_negative
        #: digest → Entry; read directly by the hot path.
        self.entries: dict[str, Entry] = {}
        self._by_uid: dict[str, set[str]] = {}
        self._by_key_id: dict[str, Entry] = {}
        self._negative: dict[str, int] = {}
        self.epoch = 0
        self._changed: dict[str, int] = {}
        self._cleared = 0

    def put(self, digest: str, entry: Entry) -> None:
        self.entries[digest] = entry
        self._by_uid.setdefault(entry.uid, set()).add(digest)
        self._by_key_id[entry.key_id] = entry

    def by_key_id(self, key_id: str) -> Entry | None:
        return self._by_key_id.get(key_id)

    def unchanged_since(self, uid: str, epoch: int) -> bool:
        """Whether object ``uid`` was not invalidated after ``epoch``."""
        return self._changed.get(uid, 0) <= epoch and self._cleared <= epoch

    def drop_uid(self, uid: str) -> int:
        """Forget every key of one object; returns how many entries went."""
        self.epoch += 1
        self._changed[uid] = self.epoch
        digests = self._by_uid.pop(uid, set())
        for digest in digests:
            entry = self.entries.pop(digest, None)
            if entry is not None:
                self._by_key_id.pop(entry.key_id, None)
        return len(digests)

    def clear(self) -> None:
        self.epoch += 1
        self._cleared = self.epoch
        self.entries.clear()
        self._by_uid.clear()
        self._by_key_id.clear()
        self._negative.clear()

    # -- negative cache -------------------------------------------------------------------
    def is_negative(self, digest: str, now: int) -> bool:
        until = self._negative.get(digest)
        return until is not None and until > now

    def put_negative(self, digest: str, now: int) -> None:
        if not self.negative_ttl_us:
            return
        if len(self._negative) >= self.max_negative:
            self._negative.clear()
        self._negative[digest] = now + self.negative_ttl_us

    def clear_negative(self) -> None:
        self._negative.clear()

    # -- housekeeping ---------------------------------------------------------------------
    def sweep(self, now: int) -> int:
        """Drop expired entries (positive and negative); returns how many."""
        stale = [d for d, e in self.entries.items() if e.expires <= now]
        for digest in stale:
            entry = self.entries.pop(digest)
            digests = self._by_uid.get(entry.uid)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    del self._by_uid[entry.uid]
            if self._by_key_id.get(entry.key_id) is entry:
                del self._by_key_id[entry.key_id]
        negatives = [d for d, until in self._negative.items() if until <= now]
        for digest in negatives:
            del self._negative[digest]
        return len(stale) + len(negatives)

    def __len__(self) -> int:
        return len(self.entries)
