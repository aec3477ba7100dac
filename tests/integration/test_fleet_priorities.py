"""Several campaigns on one fleet (issue 5): the higher priority goes first; pausing a campaign
stops its new leases within one episode; resuming continues where it stopped."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from orchestrator.runner import FleetRunner
from orchestrator.simfleet import SimFleet
from orchestrator.store.campaigns import set_campaign_status
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import Episode, Trial
from tests.integration.fleet_support import (
    IMAGE,
    check_invariants,
    fast_fleet,
    new_campaign,
    ray_local,  # noqa: F401 - pytest fixture (module-scoped local Ray)
    run_to_done,
    started,
)

pytestmark = pytest.mark.timeout(120)


def _episodes(store: Store, cid: int) -> list[Episode]:
    with store.read() as s:
        return list(s.scalars(select(Episode).join(Trial, Trial.id == Episode.trial_id)
                              .where(Trial.campaign_id == cid).order_by(Episode.id)))


@pytest.mark.usefixtures("ray_local")
def test_higher_priority_campaign_goes_first(sqlite_store, tmp_path: Path) -> None:
    store = sqlite_store
    media = tmp_path / "media"
    low = new_campaign(store, "older-low", priority=0)  # created first: older
    high = new_campaign(store, "newer-high", priority=5)
    with SimFleet(2, image_size=IMAGE) as fleet:
        runner = FleetRunner(store, fast_fleet(fleet, timeout_ms=3000), media_dir=str(media))  # all campaigns
        with started(runner):
            run_to_done(runner, deadline_s=60)
    audit = check_invariants(store, media, [low, high])
    assert audit.trials == 16 and audit.counted == 16 and audit.aborted == []
    hi, lo = _episodes(store, high), _episodes(store, low)
    # episode ids are the start order: every high-priority trial started before any low one
    assert max(e.id for e in hi) < min(e.id for e in lo)
    assert max(e.started_at for e in hi) <= min(e.started_at for e in lo)


@pytest.mark.usefixtures("ray_local")
def test_pause_stops_new_leases_within_one_episode_and_resume_continues(
        sqlite_store, tmp_path: Path) -> None:
    store = sqlite_store
    media = tmp_path / "media"
    a = new_campaign(store, "a-paused", priority=5)
    b = new_campaign(store, "b-filler", priority=0)
    # staff act through the store from elsewhere (the CLI, the dashboard): another engine
    staff = Store(make_engine(str(store.engine.url)))
    state: dict = {}

    def a_running() -> int:
        with store.read() as s:
            return s.scalar(select(func.count()).select_from(Episode)
                            .join(Trial, Trial.id == Episode.trial_id)
                            .where(Trial.campaign_id == a, Episode.status == "running"))

    def max_episode() -> int:
        with store.read() as s:
            return s.scalar(select(func.max(Episode.id))) or 0

    def tick(r: FleetRunner) -> None:
        now = time.monotonic()
        if "paused" not in state:
            if len([e for e in _episodes(store, a) if e.status == "recorded"]) >= 2:
                with staff.write() as s:
                    set_campaign_status(s, "a-paused", "paused", actor="test")
                state["paused"], state["pause_max_id"] = now, max_episode()
                state["a_before"] = {e.trial_id for e in _episodes(store, a)}
        elif "drained" not in state:
            if a_running() == 0:
                state["drained"] = now  # the pause's in-flight episodes have finished
        elif "resumed" not in state:
            # B has had the fleet to itself for a while: resume A
            b_after = [e for e in _episodes(store, b) if e.id > state["pause_max_id"]]
            if len(b_after) >= 3:
                state["resume_min_id"] = max_episode() + 1
                with staff.write() as s:
                    set_campaign_status(s, "a-paused", "running", actor="test")
                state["resumed"] = now

    try:
        with SimFleet(2, image_size=IMAGE) as fleet:
            runner = FleetRunner(store, fast_fleet(fleet, timeout_ms=3000), media_dir=str(media))
            with started(runner):
                run_to_done(runner, deadline_s=90, on_tick=tick)
    finally:
        staff.close()
    assert "resumed" in state, state
    audit = check_invariants(store, media, [a, b])
    assert audit.trials == 16 and audit.counted == 16 and audit.aborted == []
    eps_a = _episodes(store, a)
    # no A episode started while it was paused
    assert not [e.id for e in eps_a if state["pause_max_id"] < e.id < state["resume_min_id"]]
    # what was in flight at the pause finished within about one episode (1 s) and counted
    assert state["drained"] - state["paused"] < 3.0
    # after resuming, A ran exactly the trials it had not started, each once (nothing redone)
    after = [e.trial_id for e in eps_a if e.id >= state["resume_min_id"]]
    with store.read() as s:
        all_a = set(s.scalars(select(Trial.id).where(Trial.campaign_id == a)))
        attempts = set(s.scalars(select(Trial.attempts).where(Trial.campaign_id == a)))
    assert sorted(after) == sorted(all_a - state["a_before"]) and after
    assert attempts == {1}
    # and while A was paused, B had the fleet
    assert [e for e in _episodes(store, b) if e.id < state["resume_min_id"]]
