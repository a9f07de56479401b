"""When the verifier may answer from an entry Vault has not confirmed lately.

Vault is read on a cache miss and when an entry's TTL has passed. If that read fails, the old
entry may still answer — *stale while unavailable* — when all of these hold:

* the failure is Vault's (unreachable, sealed, timing out), not a refusal of the key;
* the entry was read from Vault at most ``stale_for`` seconds ago;
* the TenantApiKey watch is live: listed and watching now, or lost less than ``cache_ttl``
  seconds ago. Every revocation, deletion, rotation and plan change a user or the operator
  makes shows on the object, and :meth:`pmkeys.verify.cache.KeyCache.invalidate` applies it to
  the cached entries as the event arrives, so a stale entry answers as the latest facts say.
  Without a live watch only the TTL bounds staleness, as it always did.

Why the default ``stale_for`` (15 minutes) is safe: while the watch is live, the only change a
stale entry can miss is one written to Vault *and nowhere else*. The operator never does that —
it revokes on a spec change, a deletion or a rotation, all of which the watch carries, and its
retention sweep only touches records of objects the watch has already reported deleted — and
while this replica cannot reach Vault, the operator usually cannot either. What remains is a
person editing Vault by hand during a partial partition; 15 minutes bounds that, and covers a
Vault restart, an upgrade or an unseal by hand. Past it, a key Vault has not confirmed is
refused with 503 ``vault_unavailable``, as before.

A Vault that fails is not asked again for ``retry_seconds``: requests meanwhile answer from
stale entries at once instead of each waiting for a timeout, and one read per key per interval
finds out when Vault is back. :class:`VaultHealth` keeps that state and what ``/readyz`` and
``/metrics`` show about it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_STALE_FOR = 900.0
RETRY_SECONDS = 1.0


@dataclass
class VaultHealth:
    """Vault as the verifier last found it (monotonic seconds)."""

    retry_seconds: float = RETRY_SECONDS
    clock: Callable[[], float] = time.monotonic
    #: When the current outage began; None while Vault answers.
    down_since: float | None = None
    last_answer: float | None = None
    last_failure: float = field(default=0.0)
    #: Answers given from stale entries because Vault could not be read.
    stale_answers: int = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def answered(self) -> None:
        self.down_since = None
        self.last_answer = self.clock()

    def failed(self) -> None:
        now = self.clock()
        self.last_failure = now
        if self.down_since is None:
            self.down_since = now

    def worth_asking(self) -> bool:
        """Whether a read should go to Vault now (it is up, or the retry interval has passed)."""
        return self.down_since is None or self.clock() - self.last_failure >= self.retry_seconds

    def outage_seconds(self) -> float:
        return 0.0 if self.down_since is None else self.clock() - self.down_since
