"""An idle bridge is quiet: a sim with no scene yet has nothing to stream (no traceback ten
times a second), and a driver whose observe keeps failing is reported once per failing streak.
The control loop is observed through its iteration counter, never through sleeps."""

from __future__ import annotations

import logging
import threading

import pytest

from robots.bridge import BridgeConfig, BridgeServer
from robots.client import BridgeClient
from robots.drivers.base import CameraSpec, DriverObservation
from robots.drivers.sim import SimDriver, SimOptions
from robots.types import SceneSpec
from tests.integration.fakes import wait_for

LOOPS = 200  # idle wake-ups watched: at 500 fps each one is due an idle observe
CFG = BridgeConfig(bind="tcp://127.0.0.1:*", pub_bind="tcp://127.0.0.1:*", stream_fps=500)
SCENE = SceneSpec("pick", "coke_can", ("coke_can",), seed=3)


def _sim() -> SimDriver:
    return SimDriver(SimOptions(cameras=(CameraSpec("main", 32, 32),)))


def _loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records
            if r.name.startswith("evalfleet") and (r.levelno >= logging.WARNING or r.exc_info)]


def test_idle_sim_bridge_logs_nothing_until_a_scene_then_streams(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="evalfleet")
    with BridgeServer(_sim(), CFG) as b:
        start = b.loop_iterations
        wait_for(lambda: b.loop_iterations >= start + LOOPS, 30, f"{LOOPS} idle loop iterations")
        assert _loud(caplog) == []
        assert b.counters["driver_errors"] == 0 and b.counters["frames_published"] == 0
        assert b.error is None
        with BridgeClient(b.endpoint, timeout_ms=3000) as c:  # a scene: the stream starts
            assert c.reset(SCENE, "ep-1").ready
            wait_for(lambda: b.counters["frames_published"] > 0, 30, "a published frame")
            c.end_episode("ep-1")
        after = b.loop_iterations
        wait_for(lambda: b.loop_iterations >= after + LOOPS, 30, "more idle loop iterations")
    assert _loud(caplog) == []


class FlakyCameraSim(SimDriver):
    """A sim whose camera read fails while `broken` is set (a real driver's unplugged camera)."""

    def __init__(self) -> None:
        super().__init__(SimOptions(cameras=(CameraSpec("main", 32, 32),)))
        self.broken = threading.Event()
        self.failures = 0

    def observe(self) -> DriverObservation:
        if self.broken.is_set():
            self.failures += 1
            raise OSError("camera main: no frame from /dev/video0")
        return super().observe()


def test_a_failing_camera_is_said_once_per_streak_without_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="evalfleet")
    drv = FlakyCameraSim()
    with BridgeServer(drv, CFG) as b:
        with BridgeClient(b.endpoint, timeout_ms=3000) as c:
            assert c.reset(SCENE, "ep-1").ready
            c.end_episode("ep-1")
        drv.broken.set()
        wait_for(lambda: drv.failures >= 20, 30, "20 failed idle observes")
        failing = b.loop_iterations
        wait_for(lambda: b.loop_iterations >= failing + LOOPS, 30, "more idle loop iterations")
        warnings = _loud(caplog)
        assert len(warnings) == 1 and "live stream paused" in warnings[0], warnings
        assert "/dev/video0" in warnings[0]
        assert not any(r.exc_info for r in caplog.records)
        published = b.counters["frames_published"]
        drv.broken.clear()
        wait_for(lambda: b.counters["frames_published"] > published, 30, "the stream to resume")
        assert b.counters["driver_errors"] == drv.failures  # every failure still counted
    assert any("live stream resumed" in r.getMessage() for r in caplog.records)
    assert len(_loud(caplog)) == 1
