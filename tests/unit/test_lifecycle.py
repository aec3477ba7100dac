"""The campaign lifecycle rules (pure): when a campaign is done or incomplete, how it reads."""

from __future__ import annotations

import pytest

from orchestrator.store.lifecycle import (
    CampaignState,
    MissingTrial,
    TrialTally,
    incomplete_message,
    progress_text,
    reasons_text,
    requeue_status,
    settled_status,
    shorten_reason,
)


def test_open_trials_keep_a_campaign_going() -> None:
    assert settled_status(TrialTally(pending=1, done=59)) is None
    assert settled_status(TrialTally(leased=1, given_up=2, done=57)) is None


def test_all_counted_is_done_and_anything_missing_is_incomplete() -> None:
    assert settled_status(TrialTally(done=60)) == "done"
    assert settled_status(TrialTally(done=57, given_up=3)) == "incomplete"
    assert settled_status(TrialTally(done=59, cancelled=1)) == "incomplete"
    assert settled_status(TrialTally()) == "done"  # a campaign without trials has nothing missing


def test_tally_from_counts_refuses_unknown_statuses() -> None:
    t = TrialTally.of({"done": 57, "given_up": 3})
    assert (t.planned, t.open, t.missing) == (60, 0, 3)
    with pytest.raises(ValueError, match="lost"):
        TrialTally.of({"lost": 1})


def test_progress_text_never_hides_missing_trials() -> None:
    assert progress_text("incomplete", TrialTally(done=57, given_up=3)) == \
        "incomplete 57/60 (3 given up)"
    assert progress_text("done", TrialTally(done=60)) == "done 60/60"
    assert progress_text("cancelled", TrialTally(done=2, given_up=1, cancelled=7)) == \
        "cancelled 2/10 (1 given up, 7 cancelled)"
    assert progress_text("running", TrialTally(pending=50, leased=2, done=8)) == "running 8/60"


def test_reasons_are_distinct_most_frequent_first_and_keep_their_start() -> None:
    reasons = ["arm sim-1: ESTOPPED: latched", "arm sim-2: NON_FINITE action",
               "arm sim-1: ESTOPPED: latched", "x" * 300]
    text = reasons_text(reasons, limit=2, width=40)
    assert text.startswith("arm sim-1: ESTOPPED: latched (x2); arm sim-2: NON_FINITE action")
    assert text.endswith("and 1 other reason(s)")
    assert reasons_text(["", None or ""]) == "no abort reason recorded"
    long = reasons_text(["NON_FINITE: " + "y" * 300], width=40)
    assert long.startswith("NON_FINITE: ") and len(long) == 40


def test_a_long_reason_keeps_the_arms_code_and_message_and_loses_the_endpoint_first() -> None:
    msg = "LabDriverError: the table is not clear; remove the tools and confirm at the pendant"
    reason = (f"arm lab-1 prepare failed: DRIVER_ERROR: {msg} "
              "(bridge at tcp://127.0.0.1:54321 refused reset)")
    assert reasons_text([reason]) == reason  # fits the default width whole
    short = shorten_reason(reason, 140)
    assert short == f"arm lab-1 prepare failed: DRIVER_ERROR: {msg} (…)", short
    cut = shorten_reason(reason, 60)  # the message itself too long: cut from the end
    assert cut.startswith("arm lab-1 prepare failed: DRIVER_ERROR: ") and len(cut) == 60
    assert "tcp://" not in cut
    assert shorten_reason("arm a: x (y)", 120) == "arm a: x (y)"


def _missing(i: int, status: str = "given_up", reason: str | None = "arm a: NON_FINITE") -> \
        MissingTrial:
    return MissingTrial(i, status, "pick", "alpha", "P-XXXX", 0, 5, reason)


def test_incomplete_message_has_count_reason_and_the_command() -> None:
    state = CampaignState(1, "c1", "incomplete", TrialTally(done=57, given_up=3),
                          tuple(_missing(i) for i in range(3)))
    msg = incomplete_message(state)
    assert msg == ("campaign c1 incomplete: 3 of 60 trials given up (last reasons: arm a: "
                   "NON_FINITE (x3)); `evalfleet campaign requeue c1` re-queues them")
    cancelled = CampaignState(1, "c1", "cancelled", TrialTally(done=5, cancelled=5),
                              tuple(_missing(i, "cancelled", None) for i in range(5)))
    assert incomplete_message(cancelled).endswith(
        "5 of 10 trials cancelled; `evalfleet campaign requeue c1 --status cancelled` re-queues them")


def test_requeue_reopens_closed_campaigns_and_keeps_a_pause() -> None:
    for closed in ("done", "incomplete", "cancelled"):
        assert requeue_status(closed) == "pending"
    for kept in ("pending", "running", "paused"):
        assert requeue_status(kept) == kept
