"""Declared sequential questions in the store (both backends): declared at creation, evaluated
on resolved outcomes (the report's rule; auto labels never), decided once and for good, the
trials only they need taken out of the queue, and the campaign done, not incomplete."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from orchestrator.store import queue
from orchestrator.store.campaigns import (
    CampaignError,
    PolicySpec,
    create_campaign,
    register_policy,
)
from orchestrator.store.db import Store
from orchestrator.store.labels import LabelInput, save_label
from orchestrator.store.lifecycle import TrialTally, campaign_state, requeue_trials
from orchestrator.store.models import (
    Campaign,
    CampaignPolicy,
    CampaignQuestion,
    Episode,
    Event,
    Label,
    Policy,
    Trial,
)
from orchestrator.store.queries import episode_outcomes, list_campaigns
from orchestrator.store.questions import (
    campaigns_to_evaluate,
    evaluate_campaign,
    question_lines,
    resolved_outcomes,
)
from protocols.loader import load_protocol, resolve_protocol_path
from protocols.questions import parse_spec
from protocols.sequential import Question, fixed_n

POLICIES = ("alpha", "beta", "gamma")


def _campaign(store: Store, *specs: str, trials: int = 4, name: str = "cq",
              policies: tuple[str, ...] = POLICIES) -> int:
    loaded = load_protocol(resolve_protocol_path("smoke"))
    with store.write() as s:
        for p in policies:
            register_policy(s, PolicySpec(name=p, kind="random"))
        return create_campaign(s, name=name, loaded=loaded, policy_names=list(policies),
                               trials_per_task=trials, seed=3,
                               questions=[parse_spec(x) for x in specs]).id


def _trials(store: Store, cid: int, policy: str | None = None) -> list[Trial]:
    with store.read() as s:
        stmt = (select(Trial).join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
                .join(Policy, Policy.id == CampaignPolicy.policy_id)
                .where(Trial.campaign_id == cid).order_by(Trial.plan_order))
        if policy is not None:
            stmt = stmt.where(Policy.name == policy)
        rows = list(s.scalars(stmt))
        s.expunge_all()
        return rows


def _lease(store: Store, trial_id: int, holder: str = "orch") -> int:
    with store.write() as s:
        assert queue.lease_trials(s, [trial_id], holder=holder, lease_s=600)
        return queue.start_episode(s, trial_id, holder=holder, robot_id=None)


def _finish(store: Store, episode: int, success: bool | None, holder: str = "orch") -> None:
    with store.write() as s:
        assert queue.complete_episode(s, episode, holder=holder, step_count=1, late_steps=0,
                                      terminated_by="success", media=[], sim_success=success)


def _run(store: Store, trial_id: int, success: bool | None) -> int:
    ep = _lease(store, trial_id)
    _finish(store, ep, success)
    return ep


def _blocks(store: Store, cid: int, pa: str = "alpha",
            pb: str = "beta") -> list[tuple[Trial, Trial]]:
    """(pa's, pb's) trial of each block, in plan order."""
    a = {(t.task_id, t.trial_index): t for t in _trials(store, cid, pa)}
    b = {(t.task_id, t.trial_index): t for t in _trials(store, cid, pb)}
    return sorted(((a[k], b[k]) for k in a), key=lambda ab: ab[0].plan_order)


def _question(store: Store, cid: int, position: int = 0) -> CampaignQuestion:
    with store.read() as s:
        row = s.scalar(select(CampaignQuestion).where(CampaignQuestion.campaign_id == cid,
                                                      CampaignQuestion.position == position))
        assert row is not None
        s.expunge(row)
        return row


def _events(store: Store, kind: str) -> list[Event]:
    with store.read() as s:
        rows = list(s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))
        s.expunge_all()
        return rows


def test_questions_are_stored_with_their_design(store: Store) -> None:
    cid = _campaign(store, "pair:alpha,beta", "threshold:gamma@0.5;category=seen;one_sided;"
                    "alpha=0.1;cap=300")
    pair, thr = _question(store, cid, 0), _question(store, cid, 1)
    assert (pair.kind, pair.category, pair.state, pair.alpha, pair.cap) == (
        "pair", None, "running", 0.05, 20)  # the plan has 5 tasks x 4 blocks
    assert pair.fixed_n == fixed_n(Question.pair(cap=20))
    assert pair.policy_b_id is not None and pair.policy_a_id != pair.policy_b_id
    assert (thr.kind, thr.category, thr.threshold, thr.two_sided, thr.cap) == (
        "threshold", "seen", 0.5, False, 8)  # 2 seen tasks x 4 trials, below the given 300
    assert thr.policy_b_id is None
    with store.read() as s:
        assert campaigns_to_evaluate(s) == [cid]


@pytest.mark.parametrize(("spec", "says"), [
    ("pair:alpha,delta", "policy 'delta' is not one of the campaign's --policy"),
    ("pair:alpha,beta;category=kitchens", ("category='kitchens' is not a category of protocol "
                                           "smoke's tasks")),
    ("pair:alpha,beta;category=reasoning", "is not a category of protocol smoke's tasks"),
    ("pair:alpha,beta;alpha=2", "alpha and power must be in (0, 1)"),
])
def test_a_bad_question_refuses_the_whole_campaign(store: Store, spec: str, says: str) -> None:
    with pytest.raises(CampaignError) as e:
        _campaign(store, spec)
    assert says in str(e.value) and str(e.value).startswith("question 1 (pair:alpha,")
    with store.read() as s:
        assert s.scalar(select(Campaign.id)) is None  # nothing was written
        assert s.scalar(select(CampaignQuestion.id)) is None


def test_resolved_outcomes_follow_the_report_and_never_auto_labels(store: Store) -> None:
    cid = _campaign(store, "pair:alpha,beta")
    (a1, b1), (a2, b2), (a3, _b3) = _blocks(store, cid)[:3]
    e_a1, e_b1 = _run(store, a1.id, True), _run(store, b1.id, True)
    e_a2, e_b2 = _run(store, a2.id, False), _run(store, b2.id, None)  # no sim label
    e_a3 = _run(store, a3.id, True)
    save_label(store, LabelInput(e_a1, "ann", False))  # a human overrides the sim
    save_label(store, LabelInput(e_b1, "ann", True))
    save_label(store, LabelInput(e_b1, "bob", False))  # a human tie: disputed
    with store.write() as s:  # only a detector says e_b2 succeeded: still unresolved
        s.add(Label(episode_id=e_b2, source="auto", evaluator="det", success=True,
                    detector_checksum="sha256:x"))
    with store.read() as s:
        mine = {o.episode_id: o.success for _, o in resolved_outcomes(
            s, cid, [a1.campaign_policy_id, b1.campaign_policy_id])}
        view = {o.episode_id: o.outcome for o in episode_outcomes(s, [cid])}
    assert mine == {e_a1: False, e_a2: False, e_a3: True}
    assert {e for e, o in view.items() if o in ("success", "failure")} == set(mine)
    assert all((view[e] == "success") == ok for e, ok in mine.items())
    (standing,) = evaluate_campaign(store, cid)
    assert standing.outcomes == 0  # no block has both sides resolved
    save_label(store, LabelInput(e_b2, "ann", True))
    (standing,) = evaluate_campaign(store, cid)
    assert standing.outcomes == 1 and standing.state == "running"


def test_a_decision_stops_leasing_is_sticky_and_the_campaign_ends_done(store: Store) -> None:
    cid = _campaign(store, "pair:alpha,beta")
    blocks = _blocks(store, cid)
    # one block leased before the decision: it finishes and counts, as a late outcome
    inflight = [_lease(store, t.id) for t in blocks[-1]]
    decided_at = None
    for i, (a, b) in enumerate(blocks[:-1]):
        _run(store, a.id, True)
        _run(store, b.id, False)
        (st,) = evaluate_campaign(store, cid)
        if st.decided:
            decided_at = i + 1
            break
    assert decided_at is not None and decided_at < len(blocks) - 1
    q = _question(store, cid)
    assert (q.state, q.outcomes, q.decided_after) == ("a_better", decided_at, decided_at)
    assert q.e_value >= 20 and q.decided_at is not None
    # every still-pending alpha/beta trial is not needed; gamma's (no question) still run
    left = len(blocks) - 1 - decided_at
    assert q.trials_saved == 2 * left
    for p in ("alpha", "beta"):
        assert {t.status for t in _trials(store, cid, p)} == {"done", "not_needed", "leased"}
    assert {t.status for t in _trials(store, cid, "gamma")} == {"pending"}
    (nn,) = _events(store, "trials_not_needed")
    assert len(nn.payload["trials"]) == 2 * left and nn.payload["questions"] == {
        str(q.id): 2 * left}
    with store.write() as s:  # nothing of alpha/beta is offered to the runner any more
        offered = {c.policy_name for c in queue.pending_candidates(s, limit=1000)}
    assert offered == {"gamma"}
    # the in-flight block finishes: late, never re-decided, even against the decision
    _finish(store, inflight[0], False)
    _finish(store, inflight[1], True)
    (st,) = evaluate_campaign(store, cid)
    (st,) = evaluate_campaign(store, cid)
    assert (st.state, st.outcomes, st.late) == ("a_better", decided_at, 1)
    assert len(_events(store, "question_decided")) == 1
    assert len(_events(store, "trials_not_needed")) == 1
    # the fixed plan (gamma) runs; then the campaign is done, not incomplete
    for t in _trials(store, cid, "gamma"):
        _run(store, t.id, True)
    with store.write() as s:
        assert queue.finish_campaigns_if_done(s) == [cid]
    with store.read() as s:
        state = campaign_state(s, cid)
        (summary,) = list_campaigns(s, [cid])
        assert campaigns_to_evaluate(s) == []
    assert state.status == "done" and state.tally.missing == 0
    assert state.tally == TrialTally(done=len(_trials(store, cid, "gamma")) + 2 * (decided_at + 1),
                                     not_needed=2 * left)
    assert summary.not_needed == 2 * left
    with store.write() as s, pytest.raises(CampaignError, match="a decision is final"):
        requeue_trials(s, cid, statuses=("not_needed",))


def test_a_trial_aborted_after_the_decision_is_not_run_again(store: Store) -> None:
    cid = _campaign(store, "pair:alpha,beta;category=seen", policies=("alpha", "beta"), trials=6)
    seen = [ab for ab in _blocks(store, cid)]
    with store.read() as s:
        cats = {i: c for i, c in s.execute(text("SELECT id, category FROM tasks"))}
    seen = [ab for ab in seen if cats[ab[0].task_id] == "seen"]
    assert len(seen) == 12
    inflight = _lease(store, seen[-1][0].id)
    for a, b in seen[:-1]:
        _run(store, a.id, True)
        _run(store, b.id, False)
        if evaluate_campaign(store, cid)[0].decided:
            break
    assert evaluate_campaign(store, cid)[0].state == "a_better"
    with store.write() as s:  # the arm failed: the trial goes back to pending ...
        queue.abort_episode(s, inflight, holder="orch", reason="bridge lost")
    (st,) = evaluate_campaign(store, cid)  # ... and the next evaluation takes it out
    status = {t.id: t.status for t in _trials(store, cid)}
    assert status[seen[-1][0].id] == "not_needed"
    assert st.trials_saved == sum(1 for t in _trials(store, cid) if t.status == "not_needed")
    # trials of the other categories are no question's: the fixed plan still runs them
    others = [t for t in _trials(store, cid) if cats[t.task_id] != "seen"]
    assert others and {t.status for t in others} == {"pending"}


def test_report_and_campaign_show_print_the_questions(store: Store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.cli import app as cli

    cid = _campaign(store, "pair:alpha,beta", "threshold:gamma@0.5;min_effect=0.3")
    for a, b in _blocks(store, cid):
        _run(store, a.id, True)
        _run(store, b.id, False)
        if evaluate_campaign(store, cid)[0].decided:
            break
    url = store.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("EVALFLEET_DATABASE_URL", url)
    from orchestrator.config import get_settings

    get_settings.cache_clear()
    runner = CliRunner()
    out = runner.invoke(cli, ["report", "cq", "--format", "json"])
    assert out.exit_code == 0, out.output
    pair, thr = json.loads(out.output)["questions"]
    assert pair["state"] == "a_better" and pair["state_text"] == "decided alpha > beta"
    assert pair["text"] == "alpha vs beta, overall, alpha 0.05, power 0.8, min effect 0.2"
    assert pair["trials_not_needed"] == _question(store, cid).trials_saved > 0
    assert pair["saved_vs_fixed"] == pair["fixed_n"] - pair["outcomes"]
    assert thr["state"] == "running" and thr["saved_vs_fixed"] is None
    blind = runner.invoke(cli, ["report", "cq", "--format", "markdown", "--blind"])
    assert blind.exit_code == 0, blind.output
    assert "## Declared questions" in blind.output
    section = blind.output.split("## Declared questions")[1]
    assert "alpha vs" not in section and "beta" not in section and "P-" in section
    show = runner.invoke(cli, ["campaign", "show", "cq"])
    assert show.exit_code == 0, show.output
    assert "Declared questions" in show.output and "decided alpha > beta" in show.output
    assert "not needed" in show.output
    with store.read() as s:
        (line, _) = question_lines(s, [cid])
    assert line.policy_a == "alpha" and line.not_needed == pair["trials_not_needed"]


def test_cli_create_takes_questions_and_refuses_bad_ones(store: Store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.cli import app as cli
    from orchestrator.config import get_settings

    url = store.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("EVALFLEET_DATABASE_URL", url)
    get_settings.cache_clear()
    with store.write() as s:
        for p in ("alpha", "beta"):
            register_policy(s, PolicySpec(name=p, kind="random"))
    runner = CliRunner()
    bad = runner.invoke(cli, ["campaign", "create", "--protocol", "smoke", "--policy", "alpha",
                              "--policy", "beta", "--question", "pair:alpha,beta;colour=red"])
    assert bad.exit_code != 0 and "unknown key 'colour'" in bad.output
    ok = runner.invoke(cli, ["campaign", "create", "--protocol", "smoke", "--policy", "alpha",
                             "--policy", "beta", "--name", "cli-q", "--question",
                             "pair:alpha,beta;cap=6", "--question", "threshold:alpha@0.5"])
    assert ok.exit_code == 0, ok.output
    assert "alpha vs beta, overall" in ok.output and "running" in ok.output
    with store.read() as s:
        caps = list(s.scalars(select(CampaignQuestion.cap).order_by(CampaignQuestion.position)))
    assert caps == [6, 15]  # smoke: 5 tasks x 3 trials
    help_text = runner.invoke(cli, ["campaign", "create", "--help"]).output
    assert "pair:A,B" in help_text and "threshold:A@0.5" in help_text


def test_episode_outcome_rows_are_ignored_for_other_campaigns(store: Store) -> None:
    one = _campaign(store, "pair:alpha,beta", name="one")
    two = _campaign(store, "pair:alpha,beta", name="two")
    for a, b in _blocks(store, two)[:12]:
        _run(store, a.id, True)
        _run(store, b.id, False)
    evaluate_campaign(store, two)
    (st,) = evaluate_campaign(store, one)
    assert st.outcomes == 0 and st.state == "running"
    with store.read() as s:
        assert s.scalar(select(Episode.id).join(Trial).where(Trial.campaign_id == one)) is None


def test_the_runner_hook_evaluates_after_an_episode_and_on_its_tick(store: Store) -> None:
    from orchestrator.runner import RunStats
    from orchestrator.runner_upkeep import UpkeepMixin

    class Hook(UpkeepMixin):  # the runner's store access, without arms
        def __init__(self, ids: list[int] | None) -> None:
            self.campaign_ids, self._stopped, self.stats = ids, None, RunStats()

        def _db(self, fn):  # type: ignore[no-untyped-def]
            return store.retrying(fn)

    cid = _campaign(store, "pair:alpha,beta", policies=("alpha", "beta"))
    plain = _campaign(store, name="plain", policies=("alpha", "beta"))  # no question
    blocks = _blocks(store, cid)
    for a, b in blocks[:12]:
        _run(store, a.id, True)
        _run(store, b.id, False)
    assert _question(store, cid).state == "running"  # nothing evaluated it yet
    after_episode = Hook([cid, plain])
    after_episode._check_questions(cid)  # after an episode of that campaign
    q = _question(store, cid)
    assert q.state == "a_better" and q.trials_saved == 2 * (len(blocks) - 12)
    # what `campaign run`'s progress bar takes off its total
    assert after_episode.stats.not_needed == q.trials_saved
    # a human relabels a block in the dashboard; the tick (every campaign) re-reads it
    with store.read() as s:
        ep = s.scalar(select(Episode.id).join(Trial).where(
            Trial.id == blocks[11][0].id, Episode.counted))
    save_label(store, LabelInput(ep, "ann", False))
    hook = Hook(None)
    hook._check_questions()
    assert _question(store, cid).state == "a_better"  # sticky
    assert {t.status for t in _trials(store, plain)} == {"pending"}  # untouched
    # not-needed trials are no longer planned: the report does not call them lost
    from orchestrator.reporting import build_report_for_ids
    from protocols.report import notes

    report = build_report_for_ids(store, [cid])
    (account,) = report.campaigns
    assert [p.planned for p in account.policies] == [12, 12] and account.planned_blocks == 12
    assert not [line for line in notes(report) if line.startswith("WARNING")]
