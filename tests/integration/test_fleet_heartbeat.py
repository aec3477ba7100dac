"""The runner keeps an online arm's heartbeat fresh and notices a bridge that dies while the
arm is idle (before, an online arm was never looked at again: its row said "online" forever).
The Fleet page's stale rule (orchestrator.liveness) relies on both."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import runner_arms as runner_mod  # probing lives there
from orchestrator.liveness import ArmState, displayed_state
from orchestrator.runner import FleetRunner
from orchestrator.simfleet import SimFleet
from orchestrator.store.db import Store
from orchestrator.store.models import Robot
from tests.integration.fleet_support import (  # noqa: F401 - ray_local is a fixture
    IMAGE,
    fast_fleet,
    ray_local,
    robot_id,
    started,
    wait_for,
)

ARM = "sim-1"


def _row(store: Store, rid: int) -> tuple[str, object]:
    with store.read() as s:
        r = s.get(Robot, rid)
        return r.status, r.last_heartbeat


@pytest.mark.usefixtures("ray_local")
def test_idle_arm_heartbeat_advances_and_a_dead_bridge_goes_offline(
        sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = sqlite_store
    monkeypatch.setattr(runner_mod, "HEARTBEAT_S", 0.2)  # probe often: the test stays short
    with SimFleet(1, image_size=IMAGE) as fleet:
        runner = FleetRunner(store, fast_fleet(fleet), media_dir=str(tmp_path / "media"))
        with started(runner):
            rid = robot_id(store, ARM)

            def step_until(pred, what: str):  # type: ignore[no-untyped-def]
                return wait_for(lambda: (runner.step(), pred())[1], timeout_s=60, what=what)

            step_until(lambda: _row(store, rid)[0] == "online", "the arm online")
            first = _row(store, rid)[1]
            step_until(lambda: _row(store, rid)[1] > first, "a newer heartbeat while idle")
            assert _row(store, rid)[0] == "online"
            fleet.kill_arm(ARM)
            step_until(lambda: _row(store, rid)[0] == "offline", "the dead bridge offline")
    status, _ = _row(store, rid)
    assert displayed_state(status, 0.0).state is ArmState.OFFLINE
