"""GCRA arithmetic: exact bursts, exact refill, never more than the limit in any minute."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pmkeys.verify.gcra import PERIOD_US, LocalLimiter, emission_interval_us, step, would_refuse

SECOND = 1_000_000


def test_a_fresh_key_may_spend_its_whole_minute_at_once() -> None:
    limiter = LocalLimiter()
    states = [limiter.hit("k", 60, 0) for _ in range(61)]
    assert [s.allowed for s in states] == [True] * 60 + [False]
    assert [s.remaining for s in states[:3]] == [59, 58, 57]
    assert states[59].remaining == 0
    assert states[60].retry_us == SECOND, "the next unit comes one emission interval later"
    assert states[60].retry_after == 1


def test_refill_is_one_request_per_emission_interval() -> None:
    limiter = LocalLimiter()
    for _ in range(10):
        limiter.hit("k", 10, 0)
    t = emission_interval_us(10)
    assert not limiter.hit("k", 10, t - 1).allowed
    assert limiter.hit("k", 10, t).allowed
    assert not limiter.hit("k", 10, t).allowed


def test_reset_and_retry_are_rounded_up_to_whole_seconds() -> None:
    _, first = step(None, 0, 7)  # T = 8571429 µs
    assert first.reset == 9
    assert first.retry_after == 0
    tat = 7 * emission_interval_us(7)
    _, refused = step(tat, 0, 7)
    assert not refused.allowed and refused.retry_after == 9


def test_keys_do_not_share_state() -> None:
    limiter = LocalLimiter()
    assert limiter.hit("a", 1, 0).allowed
    assert not limiter.hit("a", 1, 0).allowed
    assert limiter.hit("b", 1, 0).allowed


def test_peek_spends_nothing_and_prune_forgets_full_keys() -> None:
    limiter = LocalLimiter()
    limiter.hit("a", 2, 0)
    assert limiter.peek("a", 2, 0).allowed
    assert limiter.hit("a", 2, 0).allowed
    assert limiter.refuses("a", 2, 0) and not limiter.peek("a", 2, 0).allowed
    assert limiter.prune(PERIOD_US) == 1 and len(limiter) == 0


def test_limits_below_one_are_refused_with_a_message() -> None:
    try:
        emission_interval_us(0)
    except ValueError as exc:
        assert "at least 1" in str(exc)
    else:
        raise AssertionError("limit 0 accepted")


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=1000),
    gaps=st.lists(st.integers(min_value=0, max_value=3 * SECOND), min_size=1, max_size=400),
)
def test_no_minute_ever_admits_more_than_the_limit(limit: int, gaps: list[int]) -> None:
    """Over any sequence of arrivals, every window of 60 s admits at most ``limit``, plus what
    the window's own length earns (GCRA's burst is the whole limit)."""
    limiter = LocalLimiter()
    now = 0
    admitted: list[int] = []
    for gap in gaps:
        now += gap
        if limiter.hit("k", limit, now).allowed:
            admitted.append(now)
    t = emission_interval_us(limit)
    for i, start in enumerate(admitted):
        in_window = sum(1 for x in admitted[i:] if x < start + PERIOD_US)
        assert in_window <= limit + PERIOD_US // t


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(min_value=1, max_value=1000), count=st.integers(min_value=1, max_value=1200))
def test_a_burst_admits_exactly_min_of_count_and_limit(limit: int, count: int) -> None:
    limiter = LocalLimiter()
    admitted = sum(limiter.hit("k", limit, 5 * SECOND).allowed for _ in range(count))
    assert admitted == min(count, limit)


@given(tat=st.one_of(st.none(), st.integers(0, 10 * PERIOD_US)), now=st.integers(0, 10 * PERIOD_US),
       limit=st.integers(1, 1000))  # fmt: skip
def test_would_refuse_agrees_with_step(tat: int | None, now: int, limit: int) -> None:
    assert would_refuse(tat, now, limit) == (not step(tat, now, limit)[1].allowed)
