"""The start-up clock: the first moment each readiness check held, and ready once all did."""

from __future__ import annotations

import time

from pmkeys.verify.startup import StartupClock, process_age


def test_each_check_is_noted_once_at_its_first_moment_and_ready_once_all_hold() -> None:
    clock = StartupClock()
    clock.look({"vault": True, "watch": False})
    vault = clock.phases["vault"]
    assert "watch" not in clock.phases and "seals" not in clock.phases and not clock.done
    time.sleep(0.02)
    clock.look({"vault": True, "watch": True}, reached={"seals"})
    assert clock.phases["vault"] == vault  # the first moment stays
    assert clock.phases["watch"] >= vault + 0.01
    assert clock.done and clock.phases["ready"] == clock.phases["watch"]
    assert clock.describe().split(", ")[-1] == f"ready {clock.phases['ready']:.2f} s"


def test_a_fact_that_is_not_a_check_does_not_make_it_ready() -> None:
    clock = StartupClock()
    clock.look({"preload": False}, reached={"seals"})
    assert "seals" in clock.phases and not clock.done


def test_phases_count_from_the_process_start_not_from_the_clock() -> None:
    age = process_age()
    clock = StartupClock()
    assert clock.phases["started"] >= round(age, 2) - 0.01
    assert 0 < age < 3600  # this test process, not the machine's uptime
