"""GCRA (the generic cell rate algorithm): an exact per-key rate limit with one number of state.

A key with a limit of ``L`` requests per minute gets one request every ``T = 60 s / L`` and may
spend its whole minute at once (a burst of ``L``). The only state is the *theoretical arrival
time* (TAT): when the key's quota would be full again. A request at ``now`` passes if
``max(TAT, now) + T - now <= L * T``, and moves TAT forward by ``T``. So in any window of one
minute no more than ``L`` (plus the requests the window's own length earns) pass — no fixed
window edges to double-dip at, nothing to sweep.

All arithmetic is in integer microseconds, and ``T`` is rounded *up* so that ``L * T`` is the
period used for the comparison: a burst admits exactly ``L``, never ``L - 1`` through a rounding
error, and the long-run rate is never above the limit. ``gcra.lua`` is the same arithmetic
inside Redis (Redis's own clock, so replicas' clocks do not matter); :func:`step` is the
reference both are tested against.
"""

from __future__ import annotations

from typing import NamedTuple

PERIOD_US = 60_000_000
_US = 1_000_000


class RateState(NamedTuple):
    """The limiter's answer for one request (times in microseconds)."""

    allowed: bool
    limit: int
    remaining: int
    #: Until the quota is full again.
    reset_us: int
    #: Until the next request can pass; 0 when this one passed.
    retry_us: int

    @property
    def reset(self) -> int:
        """Whole seconds until the quota is full again (rounded up)."""
        return -(-self.reset_us // _US)

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait before retrying (at least 1 when refused)."""
        if self.allowed:
            return 0
        return max(1, -(-self.retry_us // _US))


def emission_interval_us(limit: int) -> int:
    """Microseconds between requests at ``limit`` per minute, rounded up."""
    if limit < 1:
        raise ValueError(f"rate limit must be at least 1 request per minute, got {limit}")
    return -(-PERIOD_US // limit)


def step(tat: int | None, now: int, limit: int) -> tuple[int | None, RateState]:
    """One request at ``now`` against state ``tat``: the new TAT (None: refused, unchanged)."""
    t = emission_interval_us(limit)
    period = t * limit
    base = tat if tat is not None and tat > now else now
    new_tat = base + t
    if new_tat - now > period:
        return None, RateState(False, limit, 0, base - now, new_tat - period - now)
    return new_tat, RateState(True, limit, (period - (new_tat - now)) // t, new_tat - now, 0)


def would_refuse(tat: int | None, now: int, limit: int) -> bool:
    """Whether the next request would be refused (a peek that spends nothing)."""
    if tat is None or tat <= now:
        return False
    t = emission_interval_us(limit)
    return tat + t - now > t * limit


class LocalLimiter:
    """GCRA state for one process: ``name → TAT``. Exact for one replica; not thread-safe
    (it lives on the verifier's event loop)."""

    def __init__(self) -> None:
        self._tat: dict[str, int] = {}

    def hit(self, name: str, limit: int, now: int) -> RateState:
        new_tat, state = step(self._tat.get(name), now, limit)
        if new_tat is not None:
            self._tat[name] = new_tat
        return state

    def peek(self, name: str, limit: int, now: int) -> RateState:
        """What :meth:`hit` would answer now, without spending anything."""
        return step(self._tat.get(name), now, limit)[1]

    def refuses(self, name: str, limit: int, now: int) -> bool:
        return would_refuse(self._tat.get(name), now, limit)

    def prune(self, now: int) -> int:
        """Forget names whose quota is full again (their state is the default). Returns how many."""
        done = [name for name, tat in self._tat.items() if tat <= now]
        for name in done:
            del self._tat[name]
        return len(done)

    def __len__(self) -> int:
        return len(self._tat)
