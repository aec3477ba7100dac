"""The data plane's pure batching decision: wait for arms stepping together, not for others."""

from __future__ import annotations

from orchestrator.batching import expected_soon

PERIOD = 0.2


def test_arm_due_within_the_window_is_waited_for() -> None:
    rhythm = {"a": (10.0, PERIOD), "b": (10.0, PERIOD)}
    # a arrived at 10.2; b is due at 10.2 as well, window ends at 10.25
    assert expected_soon(rhythm, {"a"}, now=10.2, until=10.25)


def test_arm_overdue_by_more_than_half_a_period_is_not_waited_for() -> None:
    rhythm = {"a": (10.55, PERIOD), "b": (10.0, PERIOD)}  # b silent since 10.0, due 10.2
    assert not expected_soon(rhythm, {"a"}, now=10.55, until=10.6)


def test_arm_on_another_phase_is_not_waited_for() -> None:
    rhythm = {"a": (10.0, PERIOD), "b": (10.1, PERIOD)}  # b due at 10.3, after the window
    assert not expected_soon(rhythm, {"a"}, now=10.2, until=10.25)


def test_unknown_rhythm_and_present_arms_are_ignored() -> None:
    assert not expected_soon({"a": (10.0, None)}, set(), now=10.1, until=10.2)
    assert not expected_soon({"a": (10.0, PERIOD)}, {"a"}, now=10.2, until=10.25)
    assert not expected_soon({}, set(), now=0.0, until=1.0)
