"""The durable queue and episode lifecycle: leases, expiry, counting once, labels."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from orchestrator.store import queue
from orchestrator.store.db import Store
from orchestrator.store.labels import LabelConflict, LabelInput, save_label
from orchestrator.store.models import Episode, Label, Trial, utcnow
from tests.support import make_campaign


def _lease_one(store: Store, holder: str, lease_s: float = 60.0) -> queue.LeasedTrial:
    with store.write() as s:
        cands = queue.pending_candidates(s, limit=1)
        (leased,) = queue.lease_trials(s, [cands[0].trial_id], holder=holder, lease_s=lease_s)
        return leased


def _run_episode(store: Store, trial_id: int, holder: str, *, success: bool = True) -> bool:
    with store.write() as s:
        ep = queue.start_episode(s, trial_id, holder=holder, robot_id=None)
        queue.add_step_rows(
            s,
            [
                {"episode_id": ep, "idx": i, "dx": 0.0, "dy": 0.0, "dz": 0.0, "droll": 0.0,
                 "dpitch": 0.0, "dyaw": 0.0, "gripper": 1.0, "proprio": [0.0] * 7}
                for i in range(3)
            ],
        )
    with store.write() as s:
        return queue.complete_episode(
            s, ep, holder=holder, step_count=3, late_steps=0, terminated_by="success",
            media=[], sim_success=success,
        )


def test_plan_lands_in_order_and_by_priority(store: Store) -> None:
    low = make_campaign(store, name="low", priority=0)
    high = make_campaign(store, name="high", priority=5)
    with store.write() as s:
        cands = queue.pending_candidates(s, limit=1000)
    assert {c.campaign_id for c in cands[: len(cands) // 2]} == {high}
    assert [c.plan_order for c in cands if c.campaign_id == low] == sorted(
        c.plan_order for c in cands if c.campaign_id == low
    )


def test_trial_counts_once_and_expired_lease_requeues(store: Store) -> None:
    make_campaign(store)
    leased = _lease_one(store, "orch-A", lease_s=60)
    with store.write() as s:
        ep = queue.start_episode(s, leased.trial_id, holder="orch-A", robot_id=None)
    # orchestrator A dies: its lease expires, the trial returns to the queue
    with store.write() as s:
        n = queue.reclaim_expired_leases(s, now=utcnow() + timedelta(seconds=120))
    assert n == 1
    with store.read() as s:
        assert s.get(Episode, ep).status == "aborted"
        assert "lease expired" in s.get(Episode, ep).abort_reason
        assert s.get(Trial, leased.trial_id).status == "pending"
    # B takes it and completes; a late completion by A must not count
    with store.write() as s:
        (b,) = queue.lease_trials(s, [leased.trial_id], holder="orch-B", lease_s=60)
    assert _run_episode(store, b.trial_id, "orch-B") is True
    with store.write() as s, pytest.raises(queue.LeaseLostError):
        queue.start_episode(s, leased.trial_id, holder="orch-A", robot_id=None)
    with store.read() as s:
        counted = s.scalar(
            select(func.count()).select_from(Episode).where(
                Episode.trial_id == leased.trial_id, Episode.counted
            )
        )
        assert counted == 1
        assert s.get(Trial, leased.trial_id).status == "done"


def test_unique_index_forbids_two_counted_episodes(store: Store) -> None:
    make_campaign(store)
    leased = _lease_one(store, "x")
    assert _run_episode(store, leased.trial_id, "x")
    with pytest.raises(IntegrityError), store.write() as s:
        s.add(Episode(trial_id=leased.trial_id, status="recorded", counted=True))


def test_aborted_attempt_is_kept_and_trial_requeued(store: Store) -> None:
    make_campaign(store)
    leased = _lease_one(store, "x")
    with store.write() as s:
        ep = queue.start_episode(s, leased.trial_id, holder="x", robot_id=None)
        queue.abort_episode(s, ep, holder="x", reason="bridge timeout on arm-1")
    with store.read() as s:
        assert s.get(Episode, ep).abort_reason == "bridge timeout on arm-1"
        assert s.get(Trial, leased.trial_id).status == "pending"


def test_sqlite_concurrent_writers_wait_instead_of_failing(sqlite_store: Store) -> None:
    make_campaign(sqlite_store, trials=3)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for _ in range(6):
                with sqlite_store.write() as s:
                    cands = queue.pending_candidates(s, limit=1)
                    if cands:
                        queue.lease_trials(s, [cands[0].trial_id], holder=name, lease_s=60)
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    with sqlite_store.read() as s:
        holders = s.execute(
            select(Trial.lease_holder, func.count()).where(Trial.status == "leased")
            .group_by(Trial.lease_holder)
        ).all()
    assert sum(n for _, n in holders) == 24  # each lease went to exactly one worker


def _recorded_episode(store: Store) -> int:
    make_campaign(store)
    leased = _lease_one(store, "x")
    _run_episode(store, leased.trial_id, "x")
    with store.read() as s:
        return s.scalar(select(Episode.id).where(Episode.trial_id == leased.trial_id))


def test_two_evaluators_label_at_once_and_lose_nothing(store: Store) -> None:
    ep = _recorded_episode(store)
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def label(who: str, ok: bool) -> None:
        try:
            barrier.wait()
            save_label(store, LabelInput(episode_id=ep, evaluator=who, success=ok, progress=0.5))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=label, args=(w, w == "ann")) for w in ("ann", "bob")]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert not errors
    with store.read() as s:
        rows = s.execute(
            select(Label.evaluator, Label.success).where(Label.episode_id == ep, Label.source == "human")
        ).all()
    assert sorted(rows) == [("ann", True), ("bob", False)]


def test_saving_over_the_same_label_is_a_conflict(store: Store) -> None:
    ep = _recorded_episode(store)
    v1 = save_label(store, LabelInput(episode_id=ep, evaluator="ann", success=True))
    # two tabs of ann both loaded version v1 and save: the second gets a conflict
    save_label(store, LabelInput(episode_id=ep, evaluator="ann", success=False, expected_version=v1))
    with pytest.raises(LabelConflict, match="reload"):
        save_label(store, LabelInput(episode_id=ep, evaluator="ann", success=True, expected_version=v1))
    # a fresh save without having seen the existing label is also a conflict
    with pytest.raises(LabelConflict):
        save_label(store, LabelInput(episode_id=ep, evaluator="ann", success=True))
    with store.read() as s:
        lab = s.scalar(select(Label).where(Label.episode_id == ep, Label.evaluator == "ann"))
        assert lab.success is False and lab.version == v1 + 1


def test_view_outcome_matches_pure_rule(store: Store) -> None:
    """v_episode_outcomes resolves labels exactly like protocols.stats.resolve_outcome."""
    from protocols.stats import LabelVote, resolve_outcome

    make_campaign(store, trials=3)
    cases = [
        [], [("sim", True)], [("sim", False)], [("sim", True), ("h1", False)],
        [("h1", True), ("h2", False)], [("h1", True), ("h2", True), ("h3", False)],
        [("sim", False), ("h1", True)], [("h1", False)], [("h1", True), ("h2", False), ("sim", True)],
    ]
    eps = []
    for votes in cases:
        leased = _lease_one(store, "x")
        with store.write() as s:
            ep = queue.start_episode(s, leased.trial_id, holder="x", robot_id=None)
            queue.complete_episode(
                s, ep, holder="x", step_count=0, late_steps=0, terminated_by="max_steps",
                media=[], sim_success=None,
            )
            for who, ok in votes:
                src = "sim" if who == "sim" else "human"
                s.add(Label(episode_id=ep, source=src, evaluator=who, success=ok))
        eps.append(ep)
    with store.read() as s:
        got = dict(s.execute(text("SELECT episode_id, outcome FROM v_episode_outcomes")).all())
    for ep, votes in zip(eps, cases, strict=True):
        pure = resolve_outcome(
            [LabelVote(source="sim" if w == "sim" else "human", evaluator=w, success=ok, progress=None)
             for w, ok in votes]
        )
        expected = {"resolved": "success" if pure.success else "failure"}.get(pure.status, pure.status)
        assert got[ep] == expected, (votes, got[ep], pure)
