"""What one verifier process remembers about keys, so the hot path does no I/O.

Entries are keyed by the key's digest under the newest pepper (the plaintext is never a cache
key) and hold what a decision needs: owner, scopes, limit, deadline, and a refusal if the key is
revoked. An entry is *fresh* for ``cache_ttl`` seconds after the Vault read behind it; then the
hot path reads Vault again — or, while the watch is live, answers and has the record re-read in
the background (:mod:`pmkeys.verify.refreshing`). The watch marks an object's entries for
re-reading at once (on the request path) through the ``uid → digests`` index whenever the owning
object changes.

Stale while unavailable: an entry is not forgotten when it stops being fresh. If the re-read
fails because Vault cannot be reached, :mod:`pmkeys.verify.staleness` decides whether the old
entry may still answer (bounded by ``stale_for`` and by the watch being live). So that such an
answer is still right, a watch event does not just drop the object's entries: it *applies* what
the event says to them (:meth:`KeyCache.invalidate`) — revoked or deleted objects refuse every
key they had, a key no longer listed in status is refused, a key in its grace period gets the
deadline of ``status.previousKeys``, a shorter ``expiresAt`` and a changed effective rate limit
take effect — and only then asks for a re-read. Everything the watch can tell therefore takes
effect at once whether or not Vault answers; only what Vault alone knows waits for Vault.

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
from typing import TYPE_CHECKING

from pmkeys.vault.records import KeyRecord, KeyState
from pmkeys.verify.decision import Outcome

if TYPE_CHECKING:
    from pmkeys.verify.watching import ObjectFacts

NEVER = 2**62
#: ``Entry.expires`` of an entry the watch (or a re-read behind) says must be read again now.
INVALIDATED = 0
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
    #: Monotonic µs after which this entry must be re-read (0: the watch saw its object change).
    expires: int
    #: Monotonic µs of the Vault read behind this entry (how stale it is).
    verified_at: int = 0
    #: Set when the key must be refused whatever the request (revoked).
    denial: Outcome | None = None
    #: The record was found under this entry's own digest, so it can be re-read without the key
    #: (past its TTL it may answer while re-read behind, :mod:`~pmkeys.verify.refreshing`).
    behind: bool = False

    @classmethod
    def from_record(
        cls, record: KeyRecord, *, now: int, ttl_us: int, revoked: bool = False, behind: bool = False
    ) -> Entry:
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
            verified_at=now,
            denial=denial,
            behind=behind,
        )

    def apply(self, facts: ObjectFacts | None, now: int) -> None:
        """Take in what a watch event says about this key's object (None: it was deleted)."""
        self.expires = INVALIDATED
        if facts is None or facts.revoked:
            self.denial = Outcome.REVOKED
            return
        if facts.key_ids and self.key_id not in facts.key_ids:
            self.denial = Outcome.REVOKED  # superseded without grace, or revoked by the operator
            return
        deadline = facts.deadlines.get(self.key_id)
        for when in (deadline, facts.expires_at):
            if when is not None:
                self.not_after = min(self.not_after, to_monotonic(when, now))
        if facts.rate_limit is not None:
            self.rate_limit = facts.rate_limit
        if facts.tier is not None:
            self.tier = facts.tier


def to_monotonic(when: dt.datetime | None, now: int) -> int:
    """A wall-clock deadline as monotonic µs relative to ``now`` (monotonic µs)."""
    if when is None:
        return NEVER
    return now + int((when.timestamp() - time.time()) * _US)


class KeyCache:
    def __init__(
        self,
        *,
        ttl: float,
        negative_ttl: float,
        stale_for: float = 0.0,
        behind: bool = False,
        max_negative: int = 100_000,
    ) -> None:
        self.ttl_us = int(ttl * _US)
        self.negative_ttl_us = int(negative_ttl * _US)
        #: How long after its Vault read an entry is kept for answering while Vault is away.
        self.stale_us = int(stale_for * _US)
        #: How long after its Vault read an entry may answer while re-read behind (0: never).
        self.behind_us = self.stale_us if behind else 0
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

    def invalidate(self, uid: str, facts: ObjectFacts | None, now: int) -> int:
        """Object ``uid`` changed (``facts``) or was deleted (None): apply that to its keys and
        have each re-read from Vault on its next use; returns how many entries it touched."""
        self.epoch += 1
        self._changed[uid] = self.epoch
        digests = self._by_uid.get(uid, set())
        for digest in digests:
            self.entries[digest].apply(facts, now)
        return len(digests)

    @property
    def trusted_seconds(self) -> float:
        """How long after its Vault read an entry may answer while Vault and the watch work."""
        return max(self.ttl_us, self.behind_us) / _US

    def answers_behind(self, entry: Entry, now: int) -> bool:
        """Whether ``entry``, past its TTL, may answer while its record is re-read behind the
        request (if the watch is live too: the caller's to check)."""
        return entry.behind and entry.expires != INVALIDATED and now - entry.verified_at <= self.behind_us

    def stale(self, digest: str, now: int) -> Entry | None:
        """The entry for ``digest`` if it is still within ``stale_for`` of its Vault read."""
        entry = self.entries.get(digest)
        if entry is None or now - entry.verified_at > self.stale_us:
            return None
        return entry

    def stale_count(self, now: int) -> int:
        """Entries past their TTL (what a Vault outage would have them answer from)."""
        return sum(1 for e in self.entries.values() if e.expires <= now)

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
        """Drop entries too old to answer even while Vault is away, and expired negatives;
        returns how many."""
        keep_us = max(self.ttl_us, self.stale_us)
        old = [d for d, e in self.entries.items() if e.expires <= now and now - e.verified_at > keep_us]
        for digest in old:
            self._forget(digest)
        negatives = [d for d, until in self._negative.items() if until <= now]
        for digest in negatives:
            del self._negative[digest]
        return len(old) + len(negatives)

    def _forget(self, digest: str) -> None:
        entry = self.entries.pop(digest)
        digests = self._by_uid.get(entry.uid)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self._by_uid[entry.uid]
        if self._by_key_id.get(entry.key_id) is entry:
            del self._by_key_id[entry.key_id]

    def __len__(self) -> int:
        return len(self.entries)
