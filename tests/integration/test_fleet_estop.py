"""`evalfleet fleet stop` e-stops a running sim arm before it returns; the runner then
holds that arm out of scheduling (no trial burnt on a latched arm) until it is re-armed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from orchestrator.config import get_settings
from orchestrator.runner import FleetRunner
from orchestrator.simfleet import SimFleet
from orchestrator.store.models import Event, Robot
from robots.client import BridgeClient, BridgeError
from tests.integration.fleet_support import (
    IMAGE,
    check_invariants,
    fast_fleet,
    new_campaign,
    ray_local,  # noqa: F401 - pytest fixture (module-scoped local Ray)
    robot_id,
    run_to_done,
    started,
)

pytestmark = pytest.mark.timeout(120)


class _StatusWatch:
    """Polls a bridge's status on its own socket; notes when it first shows the e-stop."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.seen_at: float | None = None
        self.polls = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with BridgeClient(self.endpoint, timeout_ms=1000, name="test-watch") as c:
            while not self._stop.is_set():
                try:
                    st = c.status()
                except BridgeError as e:  # a slow reply under load: note it, keep watching
                    self.errors.append(str(e))
                    continue
                self.polls += 1
                if st.get("estopped"):
                    self.seen_at = time.perf_counter()
                    return

    def __enter__(self) -> _StatusWatch:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(timeout=5)


@pytest.mark.usefixtures("ray_local")
def test_fleet_stop_estops_before_returning_and_arm_waits_for_rearm(
        sqlite_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli import app

    store = sqlite_store
    monkeypatch.setenv("EVALFLEET_DATABASE_URL", str(store.engine.url))
    get_settings.cache_clear()
    media = tmp_path / "media"
    cid = new_campaign(store, "estop", policies=("rand-a",))  # 4 trials, 10 Hz
    with SimFleet(1, image_size=IMAGE) as fleet:
        cfg = fast_fleet(fleet)
        fleet_yaml = tmp_path / "fleet.yaml"
        fleet_yaml.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        endpoint = cfg.arms[0].endpoint
        runner = FleetRunner(store, cfg, media_dir=str(media))
        state: dict = {}

        def tick(r: FleetRunner) -> None:
            arm = r.arms["sim-1"]
            if "stopped" not in state:
                job = arm.job
                if job and job.phase == "run" and time.monotonic() - job.started < 0.3:
                    state["episode"] = job.episode_id
                    with _StatusWatch(endpoint) as watch:
                        while watch.polls == 0:  # the watcher is connected and answering
                            time.sleep(0.001)
                        t0_ns = time.monotonic_ns()  # CLOCK_MONOTONIC is system-wide
                        res = CliRunner().invoke(app, ["fleet", "stop", "sim-1", "--fleet",
                                                       str(fleet_yaml), "--reason", "test"])
                        t_exit_ns = time.monotonic_ns()
                        state["cli"] = (res.exit_code, res.output)
                        watch.thread.join(timeout=5)
                    # when the bridge latched it, by its own monotonic clock (a busy watcher
                    # socket must not inflate the figure)
                    with BridgeClient(endpoint, timeout_ms=5000, name="test-check") as c:
                        since = c.status().get("estop_since_mono_ns") or 0
                    state["latched"] = (t0_ns, since, t_exit_ns)
                    state["watch_seen"] = watch.seen_at is not None
                    state["errors"] = watch.errors
                    state["stopped"] = True
            elif "rearmed" not in state:
                with store.read() as s:
                    status = s.get(Robot, arm.robot_id).status
                if status == "estopped":
                    # while latched the runner gives the arm nothing: hold it a little longer
                    state.setdefault("seen_estopped", time.monotonic())
                    if time.monotonic() - state["seen_estopped"] > 1.0:
                        with BridgeClient(endpoint, timeout_ms=1000, name="test-rearm") as c:
                            c.rearm()
                        state["rearmed"] = True

        with started(runner):
            run_to_done(runner, deadline_s=60, on_tick=tick)

    assert state["cli"][0] == 0, state["cli"][1]
    assert "sim-1: e-stopped" in state["cli"][1]
    t0_ns, since, t_exit_ns = state["latched"]  # latched by the command, before it returned
    assert since and t0_ns <= since <= t_exit_ns, (state["latched"], state.get("errors"))
    assert state.get("rearmed"), state
    audit = check_invariants(store, media, [cid])
    assert audit.trials == 4 and audit.counted == 4
    # one attempt aborted (the one the e-stop interrupted); no trial burnt on the latched arm
    assert [e for e, _, _ in audit.aborted] == [state["episode"]]
    assert "ESTOPPED" in audit.aborted[0][2] or "e-stop" in audit.aborted[0][2]
    rid = robot_id(store, "sim-1")
    with store.read() as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.robot_id == rid,
                                                         Event.kind.like("robot_%"))
                               .order_by(Event.id)))
        logged = s.scalar(select(Event.id).where(Event.kind == "estop_requested"))
    assert kinds[-2:] == ["robot_estopped", "robot_online"], kinds
    assert logged is not None


@pytest.mark.usefixtures("ray_local")
def test_estop_requested_event_reaches_the_arm_through_the_runner(
        sqlite_store, tmp_path: Path) -> None:
    """The dashboard's e-stop button writes an estop_requested event; the runner e-stops the
    arm through its RobotActor (which holds the arm's keys) even if the direct call failed."""
    from orchestrator.store.campaigns import log_event

    store = sqlite_store
    new_campaign(store, "estop-event", policies=("rand-a",))
    with SimFleet(1, image_size=IMAGE) as fleet:
        cfg = fast_fleet(fleet)
        endpoint = cfg.arms[0].endpoint
        runner = FleetRunner(store, cfg, media_dir=str(tmp_path / "media"))
        state: dict = {}

        def tick(r: FleetRunner) -> None:
            arm = r.arms["sim-1"]
            if "requested" not in state and arm.job and arm.job.phase == "run":
                with store.write() as s:
                    log_event(s, "estop_requested", actor="dashboard", robot="all")
                state["requested"] = time.perf_counter()
            elif "requested" in state and "seen" not in state:
                with BridgeClient(endpoint, timeout_ms=1000, name="test-watch") as c:
                    if c.status().get("estopped"):
                        state["seen"] = time.perf_counter() - state["requested"]
                        c.rearm()

        with started(runner):
            run_to_done(runner, deadline_s=60, on_tick=tick)
    assert state.get("seen") is not None, state  # the runner e-stopped the arm
