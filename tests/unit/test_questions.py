"""Declared questions, the pure part: the --question SPEC parser, which trials a question covers,
the order outcomes reach the test, a question's standing, and the report section."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from protocols import report_questions as rq
from protocols.questions import (
    QuestionSpec,
    ResolvedOutcome,
    Scope,
    SpecError,
    StoredStanding,
    covered,
    late_count,
    not_needed,
    ordered_outcomes,
    parse_spec,
    resolved_success,
    scope_cap,
    standing,
)
from protocols.sequential import Decision, Question, QuestionKind, fixed_n

T0 = datetime(2026, 12, 2, tzinfo=UTC)


def test_parse_pair_with_every_key() -> None:
    spec = parse_spec("pair:oracle,random;category=unseen_objects;alpha=0.05;power=0.8;"
                      "min_effect=0.2;cap=60;discordance=0.5")
    assert spec == QuestionSpec(QuestionKind.PAIR, "oracle", "random", category="unseen_objects",
                                alpha=0.05, power=0.8, min_effect=0.2, cap=60, discordance=0.5)
    q = spec.question(cap=40)
    assert (q.kind, q.cap, q.alpha, q.discordance, q.two_sided) == (QuestionKind.PAIR, 40,
                                                                    0.05, 0.5, True)


def test_parse_threshold_one_sided_and_versioned_policy() -> None:
    spec = parse_spec("threshold:oracle@2@0.5;min_effect=0.2;one_sided")
    assert (spec.kind, spec.policy_a, spec.threshold, spec.two_sided) == (
        QuestionKind.THRESHOLD, "oracle@2", 0.5, False)
    q = spec.question(cap=10)
    assert q.threshold == 0.5 and q.min_effect == 0.2 and not q.two_sided
    assert parse_spec(" pair: a , b ;").policy_b == "b"  # spaces and a trailing ; are fine


def test_pair_default_discordance_covers_a_large_min_effect() -> None:
    q = parse_spec("pair:a,b;min_effect=0.6").question(cap=10)
    assert q.discordance == 0.6  # the planning guess is raised to the minimal effect


@pytest.mark.parametrize(("spec", "says"), [
    ("oracle,random", "starts with pair:A,B or threshold:A@P0"),
    ("triple:a,b", "kinds: pair, threshold"),
    ("pair:a", "pair takes two policies"),
    ("pair:a,a", "two different policies"),
    ("threshold:a", "threshold takes one policy and a rate"),
    ("threshold:a@half", "threshold='half' is not a number"),
    ("pair:a,b;colour=red", ("unknown key 'colour' (keys: category, alpha, power, min_effect, "
                             "cap, discordance, one_sided)")),
    ("pair:a,b;alpha=0.05;alpha=0.1", "alpha given twice"),
    ("pair:a,b;alpha", "alpha needs a value"),
    ("pair:a,b;cap=ten", "cap='ten' is not an integer"),
    ("pair:a,b;cap=0", "cap=0 must be >= 1"),
    ("pair:a,b;one_sided=yes", "one_sided is a flag"),
])
def test_bad_specs_say_what_is_wrong_in_one_line(spec: str, says: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    assert says in str(e.value) and "\n" not in str(e.value)
    assert repr(spec) in str(e.value)


def test_rates_are_checked_by_the_sequential_question() -> None:
    with pytest.raises(ValueError, match="alpha and power must be in"):
        parse_spec("pair:a,b;alpha=1.5").question(cap=10)
    with pytest.raises(ValueError, match="threshold must be in"):
        parse_spec("threshold:a@1.5").question(cap=10)


def test_cap_defaults_to_and_never_exceeds_the_plan() -> None:
    assert scope_cap(None, 40) == 40
    assert scope_cap(60, 40) == 40
    assert scope_cap(30, 40) == 30
    assert scope_cap(None, 500) == 200


def test_coverage_rule() -> None:
    overall = Scope(1, frozenset({10, 11}), None, running=False, decided_at=1.0)
    objects = Scope(2, frozenset({10, 12}), "unseen_objects", running=True)
    assert covered(overall, 10, "seen") and not covered(overall, 12, "seen")
    assert covered(objects, 12, "unseen_objects") and not covered(objects, 12, "seen")
    # covered only by the decided question: not needed, saved by it
    assert not_needed([overall, objects], 11, "unseen_objects") == 1
    assert not_needed([overall, objects], 10, "seen") == 1
    # also covered by a running one: still needed
    assert not_needed([overall, objects], 10, "unseen_objects") is None
    # covered by none: the fixed plan runs it
    assert not_needed([overall, objects], 13, "seen") is None
    assert not_needed([overall, objects], 12, "seen") is None
    # two decided questions: the one decided last counts it
    later = Scope(3, frozenset({10}), None, running=False, decided_at=5.0)
    assert not_needed([overall, later], 10, "seen") == 3


def test_resolution_rule_matches_the_report() -> None:
    assert resolved_success(1, 0, 0, 5) is True  # human overrides sim
    assert resolved_success(1, 1, 1, 0) is None  # human tie: disputed, sim ignored
    assert resolved_success(0, 0, 2, 1) is True
    assert resolved_success(0, 0, 1, 1) is None
    assert resolved_success(0, 0, 0, 0) is None


def _o(eid: int, policy: int, task: int, index: int, success: bool, minutes: int
       ) -> ResolvedOutcome:
    return ResolvedOutcome(eid, policy, task, index, success, T0 + timedelta(minutes=minutes))


def test_pairs_are_matched_blocks_in_the_order_the_later_side_resolved() -> None:
    outcomes = [
        _o(1, 10, 1, 0, True, 5), _o(2, 11, 1, 0, False, 1),  # block (1, 0) at minute 5
        _o(3, 10, 2, 0, False, 2), _o(4, 11, 2, 0, False, 3),  # block (2, 0) at minute 3
        _o(5, 10, 3, 0, True, 0),  # b never resolved: not matched
        _o(6, 12, 1, 0, True, 0),  # another policy
        _o(7, 10, 1, 1, True, 4), _o(8, 11, 1, 1, True, 5),  # minute 5 too: ids break the tie
    ]
    assert ordered_outcomes(QuestionKind.PAIR, 10, 11, outcomes) == [
        (False, False), (True, False), (True, True)]
    assert ordered_outcomes(QuestionKind.PAIR, 10, 11, reversed(outcomes)) == [
        (False, False), (True, False), (True, True)]  # deterministic whatever the input order
    assert ordered_outcomes(QuestionKind.THRESHOLD, 10, None, outcomes) == [
        True, False, True, True]


def test_standing_replays_until_decided_and_then_is_sticky() -> None:
    q = Question.pair(cap=50)
    running = StoredStanding(Decision.RUNNING, 0, None)
    few = standing(q, running, [(True, False)] * 3)
    assert few is not None and few.state is Decision.RUNNING and few.outcomes == 3
    assert not few.newly_decided and few.decided_after is None
    many = standing(q, running, [(True, False)] * 12)
    assert many is not None and many.newly_decided and many.state is Decision.A_BETTER
    assert many.decided_after == many.outcomes < 12 and many.late == 12 - many.outcomes
    assert many.e_value >= 1 / q.alpha
    decided = StoredStanding(Decision.A_BETTER, many.outcomes, many.decided_after)
    assert standing(q, decided, [(False, True)] * 40) is None  # never re-decided
    assert late_count(decided, 15) == 15 - many.outcomes
    futile = standing(q, running, [(True, True)] * 30)
    assert futile is not None and futile.state is Decision.NO_DIFFERENCE
    assert futile.e_value >= 1 / (1 - q.power)  # the futility e-value decided it


def _line(state: Decision, **kw: object) -> rq.QuestionLine:
    q = Question.pair(cap=20)
    base = rq.QuestionLine(
        campaign_id=3, campaign="c-q", position=0, question=q, policy_a="oracle",
        code_a="P-AAAA", policy_b="random", code_b="P-BBBB", category=None,
        fixed_n=fixed_n(q), state=state, outcomes=9, late=2, e_value=30.3,
        decided_after=9, not_needed=22)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_report_section_in_words() -> None:
    line = _line(Decision.A_BETTER)
    assert rq.question_text(line) == ("oracle vs random, overall, alpha 0.05, power 0.8, "
                                      "min effect 0.2")
    assert rq.state_text(line) == "decided oracle > random"
    assert rq.state_text(_line(Decision.B_BETTER)) == "decided random > oracle"
    assert rq.state_text(line, blind=True) == "decided P-AAAA > P-BBBB"
    assert rq.state_text(_line(Decision.NO_DIFFERENCE)) == "decided no difference"
    assert rq.state_text(_line(Decision.CAP_REACHED)) == "cap reached"
    running = _line(Decision.RUNNING, decided_after=None, late=0, not_needed=0)
    assert rq.state_text(running) == "running" and rq.saved_vs_fixed(running) is None
    assert rq.saved_vs_fixed(line) == line.fixed_n - 9
    (row,) = rq.rows([line], blind=True)
    assert "oracle" not in str(row) and "random" not in str(row) and row["campaign"] == "#3"
    assert row["evidence"] == "e-value 30.3 (decides at 20)"
    assert row["trials not needed"] == "22" and row["late"] == "2"
    (js,) = rq.render_json([line])
    assert js["state"] == "a_better" and js["saved_vs_fixed"] == line.fixed_n - 9
    assert js["boundary"] == pytest.approx(20) and js["trials_not_needed"] == 22
    md = rq.render_markdown([line])
    assert "## Declared questions" in md and "decided oracle > random" in md
    t = _line(Decision.B_BETTER, question=Question.against_threshold(0.5, cap=20),
              policy_b=None, code_b=None, category="unseen_objects")
    assert rq.question_text(t) == ("oracle against success rate 0.5, unseen objects, alpha "
                                   "0.05, power 0.8, min effect 0.2")
    assert rq.state_text(t) == "decided oracle below 0.5"


def test_not_needed_trials_close_a_campaign_as_done() -> None:
    from orchestrator.store.lifecycle import TrialTally, progress_text, settled_status

    tally = TrialTally.of({"done": 40, "not_needed": 20})
    assert tally.planned == 60 and tally.missing == 0
    assert settled_status(tally) == "done"
    assert settled_status(TrialTally(done=40, not_needed=19, leased=1)) is None
    assert progress_text("done", tally) == "done 40/60 (20 not needed)"
    assert progress_text("incomplete", TrialTally(done=38, given_up=2, not_needed=20)) == \
        "incomplete 38/60 (2 given up, 20 not needed)"
