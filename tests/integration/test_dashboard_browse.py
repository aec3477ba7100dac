"""orchestrator.store.browse: the dashboard's queries, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.store import browse
from orchestrator.store.campaigns import log_event
from orchestrator.store.db import Store
from orchestrator.store.labels import LabelInput, save_label
from orchestrator.store.models import Event
from tests.dashboard_sample import CampaignSpec, Sample, populate


@pytest.fixture
def sample(store: Store, tmp_path: Path) -> Sample:
    return populate(store, tmp_path / "media", [CampaignSpec("b", "smoke", ("p1", "p2"))],
                    evaluators=())


def test_label_queue_is_per_evaluator_and_blind(store: Store, sample: Sample) -> None:
    first, second = sample.episode_ids[:2]
    save_label(store, LabelInput(first, "ann", True))
    save_label(store, LabelInput(second, "bob", False))
    with store.read() as s:
        ann, n_ann = browse.label_queue(s, evaluator="ann")
        capped, _ = browse.label_queue(s, evaluator="cyd", max_human_labels=1)
        other, n_other = browse.label_queue(s, evaluator="ann", campaign_ids=[999])
        view = browse.blind_episode(s, first, evaluator="ann")
    assert first not in [i.episode_id for i in ann] and n_ann == len(sample.episode_ids) - 1
    assert {first, second}.isdisjoint(i.episode_id for i in capped)
    assert (other, n_other) == ([], 0)
    assert next(i for i in ann if i.episode_id == second).human_labels == 1
    assert view.mine is not None and view.mine.success and view.mine.version == 1
    assert view.item.blind_code.startswith("P-") and len(view.media) == 2
    assert "policy" not in {f for f in browse.QueueItem.__dataclass_fields__}


def test_disagreements_votes_and_per_evaluator_counts(store: Store, sample: Sample) -> None:
    a, b, c = sample.episode_ids[:3]
    for ep, who, ok in [(a, "ann", True), (a, "bob", False), (b, "ann", True), (b, "bob", True),
                        (c, "ann", False), (c, "bob", True), (c, "cyd", True)]:
        save_label(store, LabelInput(ep, who, ok))
    with store.read() as s:
        dis = browse.disagreements(s)
        votes = browse.human_votes(s)
        hs = browse.human_vs_sim(s, sample.campaign_ids)
    assert [(d.item.episode_id, d.status) for d in dis] == [
        (a, "disputed (tie)"), (c, "majority success")]
    assert len(votes) == 7
    assert sum(x.n for x in hs) == 2  # a is a tie: left out


def test_operator_prompts_and_confirmation(store: Store, sample: Sample) -> None:
    arm1 = sample.robots["arm-1"]
    with store.write() as s:
        log_event(s, "operator_setup_required", robot_id=arm1, robot="arm-1",
                  instructions="put the apple down", trial_id=3)
    with store.read() as s:
        prompts = {p.robot: p for p in browse.pending_operator_prompts(s)}
    assert set(prompts) == {"arm-1", "arm-2"}  # the sample leaves one on arm-2
    with store.write() as s:
        browse.confirm_operator_setup(s, prompts["arm-1"].event_id, actor="op")
    with store.write() as s, pytest.raises(browse.BrowseError, match="already confirmed by op"):
        browse.confirm_operator_setup(s, prompts["arm-1"].event_id, actor="op2")
    with store.read() as s:
        assert [p.robot for p in browse.pending_operator_prompts(s)] == ["arm-2"]
        # exactly what the orchestrator's runner waits for
        assert s.scalar(select(Event.id).where(
            Event.kind == "operator_confirmed", Event.robot_id == arm1,
            Event.id > prompts["arm-1"].event_id))
        ev = s.scalar(select(Event).where(Event.kind == "operator_confirmed"))
        assert ev.payload["trial_id"] == 3 and ev.actor == "op"
    with store.write() as s:
        browse.request_estop(s, "arm-2", actor="op")
        browse.request_estop(s, "all", actor="op")
        with pytest.raises(browse.BrowseError, match="no robot named"):
            browse.request_estop(s, "arm-9", actor="op")
    with store.read() as s:
        fleet = browse.fleet(s)
        safety = browse.events(s, safety=True)
    assert [r.name for r in fleet] == ["arm-1", "arm-2"]
    assert {"estop_requested", "robot_estopped", "estop_rearmed"} <= {e.kind for e in safety}
