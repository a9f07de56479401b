"""Sliding-window rate limits: never more than N admitted in any 60-second window, per key and
per tenant, exactly.

"60 requests per minute" is what a customer reads, so that is what this module enforces: a
request at ``now`` passes when fewer than ``N`` requests were *admitted* in ``(now - 60 s, now]``
— for the key and, when the tenant has a tenant-wide limit, for all of the tenant's keys
together. The state is the log of admission times inside the window (a sliding log): at most
``N`` integers per key, oldest first. Nothing coarser is exact — a GCRA with a burst of ``N``
(what this replaced) lets a greedy client through ``2N - 1`` times in its first minute, and
window counters either over-admit at bucket edges or refuse a client that sends exactly ``N``.

Consequences the tests check (``tests/plans/test_limiter_properties.py``):

* every half-open window ``[t, t + 60 s)`` holds at most ``N`` admissions per key and per tenant;
* a client whose own requests never exceed ``N`` in any window is never refused (the limiter
  refuses only what would break the promise);
* a request refused by one limit is recorded by neither, so a busy sibling key cannot make a
  refused request cost this key anything, and the other way round;
* changing a limit keeps the log: a downgrade refuses until the window has room under the new
  limit, an upgrade admits the difference at once. Nobody gets a fresh bucket.

Memory: 8 bytes per admission in the window (``array('q')``), so at most ``8 N`` bytes plus a
fixed overhead per active key and tenant; a log whose newest admission left the window is
forgotten by :meth:`WindowLimiter.prune`. ``bench/verify.py`` measures it.

``windows.lua`` is the same arithmetic inside Redis, atomically and on Redis's clock; the
property test drives both with the same arrival patterns. Times are integer microseconds.
"""

from __future__ import annotations

import sys
from array import array
from typing import NamedTuple

WINDOW_US = 60_000_000
WINDOW_SECONDS = WINDOW_US // 1_000_000
_US = 1_000_000


def _seconds_up(us: int) -> int:
    return -(-us // _US) if us > 0 else 0


class LimitState(NamedTuple):
    """One limit's state after a decision (times in microseconds from now)."""

    limit: int
    #: Admissions in the window, this request included when it passed.
    used: int
    #: Until the oldest admission leaves the window (0: the window is empty).
    next_us: int
    #: Until a request fits under this limit again (0: one fits now).
    free_us: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def reset(self) -> int:
        """Whole seconds until ``remaining`` grows (the RateLimit header's ``t``)."""
        return _seconds_up(self.free_us if self.remaining == 0 else self.next_us)


class Verdict(NamedTuple):
    """The answer for one request: both limits' states; ``tenant`` None without a tenant limit."""

    allowed: bool
    key: LimitState
    tenant: LimitState | None = None

    @property
    def retry_us(self) -> int:
        """Until a request would pass both limits (0 when this one passed)."""
        if self.allowed:
            return 0
        tenant = self.tenant.free_us if self.tenant is not None else 0
        return max(self.key.free_us, tenant)

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait (at least 1 when refused): the ``Retry-After`` header."""
        return max(1, _seconds_up(self.retry_us)) if not self.allowed else 0

    @property
    def refused_by(self) -> str | None:
        """Which limit refused: ``key``, ``tenant``, or None when admitted."""
        if self.allowed:
            return None
        return "key" if self.key.free_us else "tenant"


def check_limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"rate limit must be at least 1 request per minute, got {limit}")
    return limit


class Log:
    """The admission times of one key or tenant inside the window, oldest first.

    ``times[start:]`` is the live part; the dead prefix is cut once it is half the array, so a
    request costs O(1) amortised and the array never holds more than twice the live entries.
    """

    __slots__ = ("start", "times")

    def __init__(self) -> None:
        self.times = array("q")
        self.start = 0

    def expire(self, cutoff: int) -> int:
        """Drop admissions at or before ``cutoff``; returns how many are left."""
        times, start = self.times, self.start
        end = len(times)
        while start < end and times[start] <= cutoff:
            start += 1
        if start and start * 2 >= end:
            del times[:start]
            start = 0
        self.start = start
        return len(times) - start

    def state(self, limit: int, used: int, now: int, window: int) -> LimitState:
        """The state with ``used`` live entries (already expired up to ``now - window``)."""
        times, start = self.times, self.start
        next_us = times[start] + window - now if used else 0
        free_us = times[start + used - limit] + window - now if used >= limit else 0
        return LimitState(limit, used, next_us, free_us)

    @property
    def newest(self) -> int | None:
        return self.times[-1] if len(self.times) > self.start else None

    def nbytes(self) -> int:
        """Bytes this log holds (object, array header and buffer)."""
        return sys.getsizeof(self) + sys.getsizeof(self.times)


class WindowLimiter:
    """Sliding-window limits for one process: exact for one replica. Not thread-safe (it lives
    on the verifier's event loop)."""

    def __init__(self, *, window_us: int = WINDOW_US) -> None:
        self.window_us = window_us
        self._keys: dict[str, Log] = {}
        self._tenants: dict[str, Log] = {}

    def hit(self, key: str, key_limit: int, now: int, *, tenant: str = "", tenant_limit: int = 0) -> Verdict:
        """Decide one request of ``key`` (and of ``tenant``, if ``tenant_limit``) at ``now``."""
        window = self.window_us
        cutoff = now - window
        key_log = self._keys.get(key)
        if key_log is None:
            key_log = self._keys[key] = Log()
        key_used = key_log.expire(cutoff)
        tenant_log = None
        tenant_used = 0
        if tenant_limit:
            tenant_log = self._tenants.get(tenant)
            if tenant_log is None:
                tenant_log = self._tenants[tenant] = Log()
            tenant_used = tenant_log.expire(cutoff)
        allowed = key_used < key_limit and (tenant_log is None or tenant_used < tenant_limit)
        if allowed:
            key_log.times.append(now)
            key_used += 1
            if tenant_log is not None:
                tenant_log.times.append(now)
                tenant_used += 1
        key_state = key_log.state(key_limit, key_used, now, window)
        if tenant_log is None:
            return Verdict(allowed, key_state)
        return Verdict(allowed, key_state, tenant_log.state(tenant_limit, tenant_used, now, window))

    def tenant_use(self, tenant: str, now: int) -> int:
        """Admissions of ``tenant`` (all its keys) in the window ending at ``now``."""
        log = self._tenants.get(tenant)
        return 0 if log is None else log.expire(now - self.window_us)

    def prune(self, now: int) -> int:
        """Forget logs whose newest admission left the window. Returns how many went."""
        cutoff = now - self.window_us
        gone = 0
        for logs in (self._keys, self._tenants):
            done = [name for name, log in logs.items() if (log.newest or cutoff) <= cutoff]
            for name in done:
                del logs[name]
            gone += len(done)
        return gone

    def nbytes(self) -> int:
        """Bytes held by the logs (not counting the dicts' own tables)."""
        return sum(log.nbytes() for logs in (self._keys, self._tenants) for log in logs.values())

    def __len__(self) -> int:
        return len(self._keys) + len(self._tenants)
