"""A campaign with given-up or cancelled trials is incomplete, never silently done, and
`campaign requeue` brings those trials back with a fresh attempt budget (both backends)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from orchestrator.faults import AbortCause
from orchestrator.store import lifecycle, migrate, queue
from orchestrator.store.campaigns import CampaignError, set_campaign_status
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import Campaign, Episode, Event, Trial
from tests.integration.test_store_queue import _run_episode
from tests.support import make_campaign

REASON = "arm sim-1: NON_FINITE: the policy sent a NaN action"


def _trial_ids(store: Store, cid: int) -> list[int]:
    with store.read() as s:
        return list(s.scalars(select(Trial.id).where(Trial.campaign_id == cid)
                              .order_by(Trial.plan_order)))


def _abort_once(store: Store, trial_id: int, reason: str = REASON,
                cause: AbortCause = AbortCause.POLICY, holder: str = "orch-A") -> None:
    with store.write() as s:
        assert queue.lease_trials(s, [trial_id], holder=holder, lease_s=60)
        ep = queue.start_episode(s, trial_id, holder=holder, robot_id=None)
        queue.abort_episode(s, ep, holder=holder, reason=reason, cause=cause)


def _give_up(store: Store, trial_id: int, reason: str = REASON) -> None:
    """The real path: MAX_ATTEMPTS aborts the trial caused, each through the queue."""
    for _ in range(queue.MAX_ATTEMPTS):
        _abort_once(store, trial_id, reason)
    assert _status(store, trial_id) == "given_up"


def _complete(store: Store, trial_id: int, holder: str = "orch-A") -> None:
    with store.write() as s:
        assert queue.lease_trials(s, [trial_id], holder=holder, lease_s=60)
    assert _run_episode(store, trial_id, holder)


def _status(store: Store, trial_id: int) -> str:
    with store.read() as s:
        return s.get(Trial, trial_id).status


def _campaign(store: Store, cid: int) -> Campaign:
    with store.read() as s:
        return s.get(Campaign, cid)


def _finish(store: Store) -> list[int]:
    with store.write() as s:
        return queue.finish_campaigns_if_done(s)


def test_given_up_trial_makes_the_campaign_incomplete_not_done(store: Store) -> None:
    cid = make_campaign(store, policies=("alpha",), trials=1)  # 5 tasks x 1 policy x 1
    first, *rest = _trial_ids(store, cid)
    _give_up(store, first)
    for t in rest:
        _complete(store, t)
    assert _finish(store) == [cid]
    c = _campaign(store, cid)
    assert c.status == "incomplete"
    with store.read() as s:
        state = lifecycle.campaign_state(s, cid)
        ev = s.scalar(select(Event).where(Event.kind == "campaign_incomplete"))
        by_policy = lifecycle.status_counts_by_policy(s, cid)
    assert state.tally == lifecycle.TrialTally(done=4, given_up=1)
    (m,) = state.missing
    assert (m.trial_id, m.status, m.attempts, m.last_reason) == (first, "given_up", 5, REASON)
    assert ev.campaign_id == cid and ev.payload["given_up"] == 1 and ev.payload["planned"] == 5
    assert by_policy == [("alpha", by_policy[0][1], {"pending": 0, "leased": 0, "done": 4,
                                                      "given_up": 1, "cancelled": 0,
                                                      "not_needed": 0})]
    msg = lifecycle.incomplete_message(state)
    assert msg.startswith("campaign c1 incomplete: 1 of 5 trials given up (last reasons: "
                          "arm sim-1: NON_FINITE") and "campaign requeue c1" in msg
    # a campaign with every trial counted is done, as before
    other = make_campaign(store, name="c2", policies=("alpha",), trials=1)
    for t in _trial_ids(store, other):
        _complete(store, t)
    assert _finish(store) == [other]
    assert _campaign(store, other).status == "done"


def test_requeue_gives_a_fresh_attempt_budget_and_keeps_the_audit(store: Store) -> None:
    cid = make_campaign(store, policies=("alpha",), trials=1)
    first, *rest = _trial_ids(store, cid)
    _give_up(store, first)
    for t in rest:
        _complete(store, t)
    _finish(store)
    with store.write() as s:
        res = lifecycle.requeue_trials(s, "c1", actor="alice")
    assert res == lifecycle.RequeueResult(cid, "c1", (first,), "incomplete", "pending")
    with store.read() as s:
        trial = s.get(Trial, first)
        aborted = s.scalar(select(func.count()).select_from(Episode)
                           .where(Episode.trial_id == first, Episode.status == "aborted"))
        ev = s.scalar(select(Event).where(Event.kind == "trials_requeued"))
    assert (trial.status, trial.attempts, trial.requeued_at_attempt) == ("pending", 5, 5)
    assert aborted == 5  # the earlier attempts stay for the audit
    assert ev.actor == "alice" and ev.campaign_id == cid and ev.payload["trials"] == [first]
    assert _campaign(store, cid).status == "pending"
    # a fresh budget: four more aborts the trial caused do not give it up, the fifth does
    for _ in range(queue.MAX_ATTEMPTS - 1):
        _abort_once(store, first)
    assert _status(store, first) == "pending"
    _abort_once(store, first)
    assert _status(store, first) == "given_up"
    _finish(store)
    assert _campaign(store, cid).status == "incomplete"
    # re-queued again, it completes: the campaign is done, every trial counted once
    with store.write() as s:
        lifecycle.requeue_trials(s, cid, trial_ids=[first])
    _complete(store, first)
    _finish(store)
    assert _campaign(store, cid).status == "done"
    with store.read() as s:
        trial = s.get(Trial, first)
        eps = list(s.scalars(select(Episode).where(Episode.trial_id == first)
                             .order_by(Episode.id)))
    assert [e.attempt for e in eps] == list(range(1, 12))  # attempt numbers stay unique
    assert [e.counted for e in eps] == [False] * 10 + [True]
    assert trial.attempts == 11 and trial.status == "done"


def test_requeue_refuses_what_it_cannot_requeue_and_changes_nothing(store: Store) -> None:
    cid = make_campaign(store, policies=("alpha",), trials=1)
    first, second, *_ = _trial_ids(store, cid)
    with store.write() as s, pytest.raises(CampaignError, match="no given_up trials"):
        lifecycle.requeue_trials(s, cid)
    _give_up(store, first)
    with store.write() as s, pytest.raises(CampaignError, match=rf"{second} \(pending\)"):
        lifecycle.requeue_trials(s, cid, trial_ids=[first, second])
    with store.write() as s, pytest.raises(CampaignError, match=r"999999 \(not in c1\)"):
        lifecycle.requeue_trials(s, cid, trial_ids=[999999])
    with store.write() as s, pytest.raises(CampaignError, match="given_up, cancelled"):
        lifecycle.requeue_trials(s, cid, statuses=("done",))
    assert _status(store, first) == "given_up"
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Event)
                        .where(Event.kind == "trials_requeued")) == 0


def test_cancelled_campaign_is_reopened_only_on_request(store: Store) -> None:
    cid = make_campaign(store, policies=("alpha",), trials=1)
    first, *rest = _trial_ids(store, cid)
    _give_up(store, first)
    _complete(store, rest[0])
    with store.write() as s:
        set_campaign_status(s, cid, "cancelled", actor="bob")
    with store.read() as s:
        state = lifecycle.campaign_state(s, cid)
    assert state.tally == lifecycle.TrialTally(done=1, given_up=1, cancelled=3)
    assert lifecycle.progress_text(state.status, state.tally) == \
        "cancelled 1/5 (1 given up, 3 cancelled)"
    with store.write() as s, pytest.raises(CampaignError, match="--status cancelled"):
        lifecycle.requeue_trials(s, cid)
    with store.write() as s:
        res = lifecycle.requeue_trials(s, cid, statuses=("given_up", "cancelled"))
    assert sorted(res.trial_ids) == sorted([first, *rest[1:]])
    assert res.status == "pending"
    with store.read() as s:
        assert lifecycle.campaign_state(s, cid).tally == lifecycle.TrialTally(pending=4, done=1)


def test_resume_of_an_incomplete_campaign_points_to_requeue(store: Store) -> None:
    cid = make_campaign(store, policies=("alpha",), trials=1)
    first, *rest = _trial_ids(store, cid)
    _give_up(store, first)
    for t in rest:
        _complete(store, t)
    _finish(store)
    with store.write() as s, pytest.raises(CampaignError, match="evalfleet campaign requeue c1"):
        set_campaign_status(s, cid, "pending")
    assert _campaign(store, cid).status == "incomplete"


def test_migration_0007_converts_given_up_rows_and_keeps_every_row(db_url: str) -> None:
    """Up and down with data: a cancelled trial of a live campaign was a give-up; nothing is
    lost on either backend (SQLite must not rebuild `trials`: its FKs cascade)."""
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        store = Store(engine)
        cid = make_campaign(store, policies=("alpha",), trials=1)
        first, *rest = _trial_ids(store, cid)
        _give_up(store, first)
        for t in rest:
            _complete(store, t)
        _finish(store)
        tables = ("campaigns", "trials", "episodes", "steps", "labels", "events")

        def snapshot() -> tuple[dict[str, int], str, list[str]]:
            with engine.connect() as c:
                counts = {t: c.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in tables}
                camp = c.execute(text("SELECT status FROM campaigns")).scalar()
                trials = sorted(c.execute(text("SELECT status FROM trials")).scalars())
            return counts, camp, trials

        counts, camp, trials = snapshot()
        assert camp == "incomplete" and trials == ["done"] * 4 + ["given_up"]
        migrate.downgrade(engine, "0006")
        assert snapshot() == (counts, "done", ["cancelled"] + ["done"] * 4)
        migrate.upgrade(engine)
        assert snapshot() == (counts, camp, trials)
        # the widened CHECK admits the new statuses and still nothing else
        with engine.connect() as c, pytest.raises(IntegrityError, match="(?i)check"):
            c.execute(text("UPDATE trials SET status = 'lost'"))
        store.close()
    finally:
        engine.dispose()


# --- the CLI (no fleet) -------------------------------------------------------------------

cli_runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    from orchestrator.cli import app

    res = cli_runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return res.exit_code, res.output


def test_cli_list_show_resume_and_requeue(_isolated_home: Path) -> None:
    assert cli("db", "upgrade")[0] == 0
    assert cli("policy", "register", "alpha", "--kind", "random")[0] == 0
    code, out = cli("campaign", "create", "--protocol", "smoke", "--policy", "alpha",
                    "--trials", "1", "--name", "c1")
    assert code == 0, out
    with Store.open() as store:
        cid = 1
        first, *rest = _trial_ids(store, cid)
        _give_up(store, first)
        for t in rest:
            _complete(store, t)
        _finish(store)
    code, out = cli("campaign", "list")
    assert code == 0 and "incomplete 4/5 (1 given up)" in out, out
    code, out = cli("campaign", "show", "c1")
    assert code == 0, out
    assert f"trial {first} given up" in out and REASON in out
    assert "1 of 5 trials given up" in out and "campaign requeue c1" in out
    code, out = cli("campaign", "resume", "c1")
    assert code == 1 and "campaign requeue c1" in out and "Traceback" not in out
    code, out = cli("campaign", "requeue", "c1", "--trials", "1,x")
    assert code == 1 and "--trials" in out and len(out.strip().splitlines()) == 1
    code, out = cli("campaign", "requeue", "c1", "--trials", str(rest[0]))
    assert code == 1 and f"{rest[0]} (done)" in out and len(out.strip().splitlines()) == 1
    code, out = cli("campaign", "requeue", "c1", "--by", "alice")
    assert code == 0 and "1 trial re-queued" in out and "incomplete -> pending" in out, out
    code, out = cli("campaign", "list")
    assert "pending 4/5" in out and "given up" not in out, out
