"""orchestrator.faults: which aborts count against a trial, and what they do to the arm."""

from __future__ import annotations

import pytest

from orchestrator.faults import (
    TRIAL_CAUSES,
    AbortCause,
    ArmFate,
    cause_of_refusal,
    counts_against_trial,
    disposition,
    should_give_up,
)
from robots.protocol import ErrorCode

INFRASTRUCTURE = (
    AbortCause.BRIDGE, AbortCause.ESTOP, AbortCause.OTHER_CLIENT, AbortCause.ROBOT_ACTOR,
    AbortCause.WORKER, AbortCause.MEDIA, AbortCause.ARM_LEASE_LOST, AbortCause.LEASE_EXPIRED,
    AbortCause.SHUTDOWN,
)


def test_every_cause_is_either_the_trials_or_infrastructure() -> None:
    assert set(INFRASTRUCTURE) | TRIAL_CAUSES == set(AbortCause)
    assert not set(INFRASTRUCTURE) & TRIAL_CAUSES


@pytest.mark.parametrize("cause", [AbortCause.POLICY, AbortCause.SCENE, AbortCause.UNKNOWN])
def test_the_trials_own_causes_count_and_keep_the_arm(cause: AbortCause) -> None:
    assert counts_against_trial(cause)
    assert disposition(cause).counts_against_trial
    assert disposition(cause).arm is ArmFate.KEEP


@pytest.mark.parametrize("cause", INFRASTRUCTURE)
def test_infrastructure_faults_never_count(cause: AbortCause) -> None:
    assert not counts_against_trial(cause)
    assert not disposition(cause).counts_against_trial


def test_what_infrastructure_faults_do_to_the_arm() -> None:
    fates = {c: disposition(c).arm for c in INFRASTRUCTURE}
    assert fates == {
        AbortCause.BRIDGE: ArmFate.OFFLINE,
        AbortCause.ESTOP: ArmFate.OFFLINE,
        AbortCause.OTHER_CLIENT: ArmFate.OFFLINE,
        AbortCause.ROBOT_ACTOR: ArmFate.OFFLINE,
        AbortCause.MEDIA: ArmFate.MEDIA_CHECK,
        # not the arm's fault: it takes the next trial (a dead worker is recreated; the
        # others end this runner's use of the arm or the trial anyway)
        AbortCause.WORKER: ArmFate.KEEP,
        AbortCause.ARM_LEASE_LOST: ArmFate.KEEP,
        AbortCause.LEASE_EXPIRED: ArmFate.KEEP,
        AbortCause.SHUTDOWN: ArmFate.KEEP,
    }


def test_give_up_after_max_attempts_of_the_trials_own_aborts() -> None:
    assert [should_give_up(n, 5) for n in range(7)] == [False] * 5 + [True] * 2


def test_refusal_codes_at_reset() -> None:
    got = {code: cause_of_refusal(code.value, during_reset=True) for code in ErrorCode}
    assert got[ErrorCode.ESTOPPED] is AbortCause.ESTOP
    assert got[ErrorCode.DRIVER_ERROR] is AbortCause.SCENE  # the driver could not set it up
    assert got[ErrorCode.NOT_SUPPORTED] is AbortCause.SCENE
    assert got[ErrorCode.BAD_MESSAGE] is AbortCause.SCENE
    assert got[ErrorCode.UNAUTHORIZED] is AbortCause.BRIDGE
    assert got[ErrorCode.INTERNAL] is AbortCause.BRIDGE
    assert got[ErrorCode.STALE_COMMAND] is AbortCause.OTHER_CLIENT


def test_refusal_codes_mid_episode() -> None:
    got = {code: cause_of_refusal(code.value, during_reset=False) for code in ErrorCode}
    assert got[ErrorCode.ESTOPPED] is AbortCause.ESTOP
    assert got[ErrorCode.NOT_IN_EPISODE] is AbortCause.OTHER_CLIENT  # someone reset the arm
    assert got[ErrorCode.STALE_COMMAND] is AbortCause.OTHER_CLIENT
    assert got[ErrorCode.NON_FINITE] is AbortCause.POLICY  # the policy's action
    assert got[ErrorCode.DRIVER_ERROR] is AbortCause.BRIDGE
    assert {c for c, v in got.items() if counts_against_trial(v)} == {
        ErrorCode.NON_FINITE, ErrorCode.NOT_SUPPORTED}


def test_unknown_refusal_codes_are_the_bridges() -> None:
    assert cause_of_refusal("SOMETHING_NEW", during_reset=True) is AbortCause.BRIDGE
    assert cause_of_refusal("SOMETHING_NEW", during_reset=False) is AbortCause.BRIDGE


def test_outage_paragraph_is_one_paragraph_saying_what_when_and_that_a_rerun_is_safe() -> None:
    from datetime import UTC, datetime

    from orchestrator.runner_faults import outage_paragraph

    text = outage_paragraph(url="postgresql+psycopg://x@db/evalfleet", window_s=25.0,
                            last_error="connection refused", in_flight=3,
                            leases_until=datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC),
                            campaigns="demo")
    assert "\n" not in text
    assert "unreachable for 25 s" in text and "connection refused" in text
    assert "3 trial(s) that were running return to the queue" in text
    assert "by 01:02:03 UTC" in text
    assert "rerun is safe" in text and "`evalfleet campaign run demo`" in text
