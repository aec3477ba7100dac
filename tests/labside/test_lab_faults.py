"""Faults a real arm hits at once, raised by the lab's own robot side: a reset the driver
refuses (DRIVER_ERROR with a message), and an e-stop latched mid-episode. One local Ray for
the module."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.runner import FleetRunner
from tests.integration.fleet_support import (
    new_campaign,
    ray_local,  # noqa: F401 - pytest fixture (module-scoped local Ray)
    run_to_done,
    started,
)
from tests.labside.conftest import LAB_PROTOCOL, lab_fleet
from tests.labside.support import campaign_status, episodes, trial_statuses, video_frames

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("ray_local")]

REFUSAL = "gripper calibration lost; re-home the arm at the pendant"
ESTOP_AFTER = 3


def test_refused_reset_keeps_code_and_message_in_abort_reason(sqlite_store, lab,
                                                              tmp_path: Path) -> None:
    bridge = lab(refuse_reset=REFUSAL)
    cid = new_campaign(sqlite_store, "lab-refuse", policies=("rand-a",), protocol=LAB_PROTOCOL)
    runner = FleetRunner(sqlite_store, lab_fleet(bridge), media_dir=str(tmp_path / "media"))
    with started(runner):
        run_to_done(runner, deadline_s=60)

    resets = [h for h in bridge.log if h["type"] == "reset"]
    assert resets, "the orchestrator never asked the lab arm for a reset"
    eps = episodes(sqlite_store, cid)
    assert eps and all(e.status == "aborted" and not e.counted for e in eps), eps
    for e in eps:
        reason = e.abort_reason or ""
        assert "DRIVER_ERROR" in reason and REFUSAL in reason, reason
    # every trial gave up (the scene is the trial's own fault): the campaign is not "done"
    assert set(trial_statuses(sqlite_store, cid)) == {"given_up"}
    assert campaign_status(sqlite_store, cid) != "done"


@pytest.mark.parametrize("versions,cameras", [
    ((1,), (("front", "external"),)),
    ((2,), (("front", "external"), ("wrist", "wrist"))),
], ids=["v1", "v2-two-cameras"])
def test_estop_mid_episode_keeps_steps_and_video_up_to_the_stop(
        sqlite_store, lab, tmp_path: Path, versions: tuple[int, ...],
        cameras: tuple[tuple[str, str], ...]) -> None:
    bridge = lab(versions=versions, cameras=cameras, estop_after_acts=ESTOP_AFTER)
    names = sorted(n for n, _ in cameras)
    media = tmp_path / "media"
    cid = new_campaign(sqlite_store, "lab-estop", policies=("rand-a",), protocol=LAB_PROTOCOL)
    runner = FleetRunner(sqlite_store, lab_fleet(bridge), media_dir=str(media))

    def tick(r: FleetRunner) -> None:
        # the lab's operator re-arms once the orchestrator has given the episode up
        if bridge.estopped and any(e.status == "aborted" for e in episodes(sqlite_store, cid)):
            bridge.rearm_local()

    with started(runner):
        run_to_done(runner, deadline_s=60, on_tick=tick)

    eps = episodes(sqlite_store, cid)
    aborted = [e for e in eps if e.status == "aborted"]
    assert len(aborted) == 1, eps
    stopped = aborted[0]
    assert "ESTOPPED" in (stopped.abort_reason or ""), stopped.abort_reason
    assert not stopped.counted
    # the trajectory that led to the stop: every applied act, and its video
    assert stopped.steps == ESTOP_AFTER, stopped
    assert sorted(m["camera"] for m in stopped.media) == names, stopped.media
    for m in stopped.media:
        assert ESTOP_AFTER <= video_frames(media, m) <= ESTOP_AFTER + 1, m
    # after the re-arm the campaign finishes; the stopped trial is run again
    assert trial_statuses(sqlite_store, cid) == ["done", "done"]
    assert sum(e.counted for e in eps) == 2


def test_driver_fault_mid_episode_keeps_code_message_steps_and_video(
        sqlite_store, lab, tmp_path: Path) -> None:
    """§8.8: the driver raises on the 4th act (a servo fault): the bridge holds and answers
    DRIVER_ERROR with the message; the episode aborts with that code and message, keeps the
    3 steps and frames before the fault, and the trial runs again on the same arm."""
    fault = "servo fault on axis 2: following error 12 mm"
    bridge = lab(versions=(2,), fail_act=(ESTOP_AFTER + 1, fault))
    media = tmp_path / "media"
    cid = new_campaign(sqlite_store, "lab-fault", policies=("rand-a",), protocol=LAB_PROTOCOL)
    runner = FleetRunner(sqlite_store, lab_fleet(bridge), media_dir=str(media))
    with started(runner):
        run_to_done(runner, deadline_s=60)

    eps = episodes(sqlite_store, cid)
    aborted = [e for e in eps if e.status == "aborted"]
    assert len(aborted) == 1, eps
    reason = aborted[0].abort_reason or ""
    assert "DRIVER_ERROR" in reason and fault in reason, reason
    assert aborted[0].steps == ESTOP_AFTER, aborted[0]
    assert [m["camera"] for m in aborted[0].media] == ["front"], aborted[0].media
    assert ESTOP_AFTER <= video_frames(media, aborted[0].media[0]) <= ESTOP_AFTER + 1
    assert trial_statuses(sqlite_store, cid) == ["done", "done"]


def test_a_lab_arm_with_a_bad_hello_is_told_what_is_wrong(sqlite_store, lab,
                                                         tmp_path: Path) -> None:
    """The first thing a lab gets wrong is its `hello` (§5.2 "Rules a client checks"): the
    orchestrator refuses the capabilities; the arm's recorded error must say which rule."""
    from sqlalchemy import select

    from orchestrator.store.models import Robot

    bridge = lab(versions=(2,), caps_typo=True)
    new_campaign(sqlite_store, "lab-typo", policies=("rand-a",), protocol=LAB_PROTOCOL)
    runner = FleetRunner(sqlite_store, lab_fleet(bridge), media_dir=str(tmp_path / "media"))

    def robot_error() -> str | None:
        with sqlite_store.read() as s:
            row = s.scalar(select(Robot).where(Robot.name == "lab-1"))
            return (row.capabilities or {}).get("error") if row is not None else None

    deadline = time.monotonic() + 30
    with started(runner):
        runner.run(until_done=False,
                   should_stop=lambda: bool(robot_error()) or time.monotonic() > deadline)
    error = robot_error() or ""
    assert bridge.log and bridge.log[-1]["type"] == "hello"
    assert "7 names but 1 units" in error, error
    assert "\x1b[" not in error and "Traceback" not in error, error


def test_lab_bridge_restarted_between_episodes(sqlite_store, lab, tmp_path: Path) -> None:
    """A lab restarts its bridge process (new session id, §2.1 `sid`) after the first
    episode: the orchestrator says `hello` again (§4: "again after BridgeRestarted") and the
    campaign finishes on the new process; every trial counts exactly once."""
    first = lab(versions=(2,))
    bridges = [first]
    cid = new_campaign(sqlite_store, "lab-restart", policies=("rand-a",),
                       protocol=LAB_PROTOCOL)
    runner = FleetRunner(sqlite_store, lab_fleet(first), media_dir=str(tmp_path / "media"))

    def tick(r: FleetRunner) -> None:
        if len(bridges) == 1 and any(e.status == "recorded"
                                     for e in episodes(sqlite_store, cid)):
            first.close()
            bridges.append(lab(**{**vars(first.cfg), "endpoint": first.endpoint}))

    with started(runner):
        run_to_done(runner, deadline_s=60, on_tick=tick)

    assert len(bridges) == 2 and bridges[1].sid != first.sid
    assert trial_statuses(sqlite_store, cid) == ["done", "done"]
    assert sum(e.counted for e in episodes(sqlite_store, cid)) == 2
    second = [h["type"] for h in bridges[1].log]
    assert "reset" in second and second.index("hello") < second.index("reset"), second


def test_operator_reset_arm_gets_operator_confirmed_after_the_confirm(
        sqlite_store, lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """§4 reset / §5.4: an arm that needs an operator answers `ready: false` with
    instructions; after `evalfleet operator confirm ARM` the orchestrator sends the reset again
    with `operator_confirmed: true` and the episode runs."""
    from typer.testing import CliRunner

    from orchestrator.cli import app
    from orchestrator.config import get_settings

    monkeypatch.setenv("EVALFLEET_DATABASE_URL", str(sqlite_store.engine.url))
    get_settings.cache_clear()
    bridge = lab(versions=(2,), needs_operator_reset=True)
    cid = new_campaign(sqlite_store, "lab-operator", policies=("rand-a",),
                       protocol=LAB_PROTOCOL)
    runner = FleetRunner(sqlite_store, lab_fleet(bridge), media_dir=str(tmp_path / "media"))
    confirmed: list[int] = []

    def tick(r: FleetRunner) -> None:
        # the operator confirms each prompt once (as a person at the arm would)
        if bridge.operator_prompts > len(confirmed):
            res = CliRunner().invoke(app, ["operator", "confirm", "lab-1", "--by", "lab"])
            assert res.exit_code == 0, res.output
            confirmed.append(bridge.operator_prompts)

    with started(runner):
        run_to_done(runner, deadline_s=60, on_tick=tick)

    assert trial_statuses(sqlite_store, cid) == ["done", "done"]
    resets = [h["scene"] for h in bridge.log if h["type"] == "reset"]
    assert [s.get("operator_confirmed", False) for s in resets] == [False, True] * 2, resets
