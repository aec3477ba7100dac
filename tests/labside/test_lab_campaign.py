"""A lab's own robot side (tests/labside/lab_bridge.py, written from docs/protocol.md alone)
runs evalfleet campaigns: the orchestrator used as a lab would, through a fleet config that
points at the lab's endpoint. One local Ray and one campaign per version for the module; the
tests read what the campaign left in the store and what the lab's bridge received."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runner import FleetRunner
from orchestrator.store import migrate
from orchestrator.store.db import Store, make_engine
from tests.integration.fleet_support import (
    new_campaign,
    ray_local,  # noqa: F401 - pytest fixture (module-scoped local Ray)
    run_to_done,
    started,
)
from tests.labside.conftest import LAB_PROTOCOL, lab_fleet
from tests.labside.lab_bridge import LabBridge, LabConfig
from tests.labside.lab_spec import SCENE_KEYS
from tests.labside.support import (
    campaign_status,
    episodes,
    step_actions,
    step_ages_ms,
    trial_statuses,
    video_frames,
)

pytestmark = pytest.mark.timeout(120)

TWO_CAMERAS = (("front", "external"), ("wrist", "wrist"))


@dataclass
class Ran:
    store: Store
    bridge: LabBridge
    media: Path
    campaign_id: int
    error: str | None  # the run itself failed (the tests then fail with it)

    def requests(self, type_: str) -> list[dict[str, Any]]:
        return [h for h in self.bridge.log if h.get("type") == type_]


def _terminating_campaign(store: Store, name: str) -> int:
    """A campaign of a random policy that asks to terminate at its first step."""
    from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
    from protocols.loader import load_protocol

    with store.write() as s:
        register_policy(s, PolicySpec(name="rand-stop", kind="random", config={
            "kind": "random", "options": {"terminate_prob": 1.0}}))
        return create_campaign(s, name=name, loaded=load_protocol(LAB_PROTOCOL),
                               policy_names=["rand-stop"], trials_per_task=1, seed=1,
                               priority=0).id


def _campaign(tmp: Path, cfg: LabConfig, *, terminate: bool = False) -> Iterator[Ran]:
    engine = make_engine(f"sqlite:///{tmp / 'store.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    bridge = LabBridge(cfg).start()
    media = tmp / "media"
    error = None
    try:
        cid = (_terminating_campaign(store, tmp.name) if terminate else
               new_campaign(store, tmp.name, policies=("rand-a",), protocol=LAB_PROTOCOL))
        runner = FleetRunner(store, lab_fleet(bridge), media_dir=str(media))
        try:
            with started(runner):
                run_to_done(runner, deadline_s=60)
        except Exception as e:  # noqa: BLE001 - reported by every test that uses the run
            error = f"{e.__class__.__name__}: {e}"
        yield Ran(store, bridge, media, cid, error)
    finally:
        bridge.close()
        store.close()


@pytest.fixture(scope="module")
def v1_run(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:  # noqa: F811
    # the robot host's wall clock 45 s behind the orchestrator's (§7: the client dates its acts
    # in the bridge's clock, so the age check still passes)
    yield from _campaign(tmp_path_factory.mktemp("lab-v1"),
                         LabConfig(versions=(1,), clock_skew_s=-45.0))


@pytest.fixture(scope="module")
def v2_run(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:  # noqa: F811
    yield from _campaign(tmp_path_factory.mktemp("lab-v2"),
                         LabConfig(versions=(2,), cameras=TWO_CAMERAS, blind_until_reset=True,
                                   extras=frozenset({"reply", "counter"})))


def _completed(run: Ran, versions: set[int], cameras: list[str]) -> None:
    assert run.error is None, run.error
    cid = run.campaign_id
    assert trial_statuses(run.store, cid) == ["done", "done"]
    assert campaign_status(run.store, cid) == "done"
    eps = episodes(run.store, cid)
    assert [(e.status, e.counted) for e in eps] == [("recorded", True)] * 2, eps
    for e in eps:
        assert 1 <= e.steps <= 8, e
        assert sorted(m["camera"] for m in e.media) == cameras, e.media
        for m in e.media:
            assert video_frames(run.media, m) == e.steps, m
    # the lab's side: every act was accepted, and spoken in a version the arm speaks
    assert len(run.requests("act")) == sum(e.steps for e in eps)
    assert {h["v"] for h in run.bridge.log if h["type"] != "hello"} <= versions
    refused = run.bridge.counters["refused_total"]
    hellos_refused = sum(1 for h in run.requests("hello") if h["v"] not in versions)
    assert refused == hellos_refused, run.bridge.counters  # only the negotiation's first try


def test_a_campaign_runs_to_completion_on_the_v1_lab_arm(v1_run: Ran) -> None:
    _completed(v1_run, {1}, ["front"])


def test_a_campaign_runs_to_completion_on_the_v2_lab_arm_with_two_cameras(v2_run: Ran) -> None:
    _completed(v2_run, {2}, ["front", "wrist"])
    # v2: every act carried a 7-number vector of the declared ee_delta space and a terminate
    for h in v2_run.requests("act"):
        assert len(h["action"]) == 7 and isinstance(h["terminate"], bool), h


@pytest.mark.parametrize("which", ["v1_run", "v2_run"])
def test_one_round_trip_per_control_step(which: str, request: pytest.FixtureRequest) -> None:
    """§4 act: "one round trip per control step (the client feeds that observation to the
    policy for the next step; it never needs an `observe` per step)"."""
    run: Ran = request.getfixturevalue(which)
    assert run.error is None, run.error
    resets, observes = len(run.requests("reset")), len(run.requests("observe"))
    assert observes <= resets, (f"{observes} observe requests for {resets} episodes and "
                                f"{len(run.requests('act'))} acts")


@pytest.mark.parametrize("which", ["v1_run", "v2_run"])
def test_scenes_keep_to_the_page(which: str, request: pytest.FixtureRequest) -> None:
    """§5.4: the orchestrator sends the keys the page lists, with the page's types."""
    run: Ran = request.getfixturevalue(which)
    assert run.error is None, run.error
    for h in run.requests("reset"):
        scene = h["scene"]
        assert {"skill", "target"} <= set(scene), scene
        assert set(scene) <= set(SCENE_KEYS), sorted(set(scene) - set(SCENE_KEYS))
        bad = {k: v for k, v in scene.items() if not SCENE_KEYS[k](v)}
        assert not bad, bad


def test_no_watchdog_hold_during_the_campaign(v2_run: Ran) -> None:
    """§8.4: armed by the first accepted act, so the policy's first-episode start-up is not a
    silence; at 10 Hz with a 2 s watchdog, no step leaves the arm silent that long."""
    assert v2_run.error is None, v2_run.error
    assert v2_run.bridge.counters["watchdog_holds"] == 0, v2_run.bridge.counters


def test_acts_are_dated_in_the_robot_hosts_clock(v1_run: Ran) -> None:
    """§7: with the robot host's clock 45 s off, `sent_wall_ns` is the client's clock plus
    the offset from `hello`: no act is refused as stale, and the stored observation ages are
    those of a healthy loop, not 45 s."""
    assert v1_run.error is None, v1_run.error
    assert v1_run.bridge.counters["stale_refused"] == 0
    ages = step_ages_ms(v1_run.store, v1_run.campaign_id)
    assert ages and all(0.0 <= a < 1000.0 for a in ages), ages


@pytest.fixture(scope="module")
def stop_runs(ray_local: None,  # noqa: F811
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Ran]]:
    runs = {v: _campaign(tmp_path_factory.mktemp(f"lab-stop-v{v}"), LabConfig(versions=(v,)),
                         terminate=True) for v in (1, 2)}
    try:
        yield {v: next(gen) for v, gen in runs.items()}
    finally:
        for gen in runs.values():
            next(gen, None)  # runs the generator's cleanup


@pytest.mark.parametrize("v", [1, 2])
def test_terminate_reaches_the_arm_and_ends_the_episode(stop_runs: dict[int, Ran],
                                                        v: int) -> None:
    """§5.1: v1 `action[0] >= 0.5` / v2 `terminate: true` means "episode done after this
    step"; the orchestrator then ends the episode (`end_episode`, §4)."""
    run = stop_runs[v]
    assert run.error is None, run.error
    eps = episodes(run.store, run.campaign_id)
    assert [(e.status, e.steps) for e in eps] == [("recorded", 1)] * 2, eps
    acts = run.requests("act")
    assert len(acts) == 2
    for h in acts:
        assert (h["action"][0] >= 0.5) if v == 1 else (h["terminate"] is True), h
    ended = [h["episode_id"] for h in run.requests("end_episode")]
    assert ended == [h["episode_id"] for h in run.requests("reset")], ended
    with run.store.read() as s:
        from sqlalchemy import select

        from orchestrator.store.models import Episode

        reasons = set(s.scalars(select(Episode.terminated_by)))
    assert reasons == {"terminate"}, reasons


@pytest.mark.parametrize("which", ["v1_run", "v2_run"])
def test_steps_keep_what_the_arm_executed(which: str, request: pytest.FixtureRequest) -> None:
    """§4 act: `applied` is "the action actually applied"; the stored steps keep exactly
    that vector (after the arm's clipping), in the arm's declared space."""
    run: Ran = request.getfixturevalue(which)
    assert run.error is None, run.error
    stored = step_actions(run.store, run.campaign_id)
    assert [sp for _, sp in stored] == ["ee_delta[7]"] * len(run.bridge.applied)
    assert len(stored) == len(run.bridge.applied)
    for (a, _), b in zip(stored, run.bridge.applied, strict=True):
        assert a == pytest.approx(b), (a, b)
