"""A tiny in-test RobotDriver: a fixed frame of configurable size, and a record of calls.

Used by the bridge tests and benchmarks/bridge.py (`--driver tests.integration.fakes:FixedFrameDriver`)
so the bridge alone is measured, independent of the simulator. Its privileged state exposes
what it recorded (applied actions, hold times on CLOCK_MONOTONIC) to tests in other processes.
"""

from __future__ import annotations

import time

import numpy as np

from robots.drivers.base import CameraSpec, Capabilities, DriverObservation, ResetResult, RobotDriver
from robots.types import Action, ActionSpace, SceneSpec


class FixedFrameDriver(RobotDriver):
    def __init__(self, image_size: tuple[int, int] = (64, 64), cameras: tuple[str, ...] = ("front",),
                 control_hz: float = 5.0, keep: int = 1000):
        self.image_size, self.cameras, self.control_hz, self.keep = image_size, cameras, control_hz, keep
        h, w = image_size
        rng = np.random.default_rng(0)
        self.frames = {c: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for c in cameras}
        for f in self.frames.values():
            f.flags.writeable = False
        self.pose = [0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0]
        self.applied: list[tuple[float, ...]] = []
        self.holds: list[int] = []  # time.monotonic_ns() of every hold
        self.n_applied = 0
        self.resets = 0
        self.connected = False

    def connect(self) -> None:
        self.connected = True

    def capabilities(self) -> Capabilities:
        h, w = self.image_size
        return Capabilities(driver="fixed", cameras=tuple(CameraSpec(c, h, w) for c in self.cameras),
                            action_space=ActionSpace(control_hz=self.control_hz), privileged_state=True)

    def reset(self, scene: SceneSpec) -> ResetResult:
        self.resets += 1
        self.pose = [0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0]
        if scene.skill == "needs_operator":
            return ResetResult(False, f"place {scene.target} on the table")
        return ResetResult(True)

    def observe(self) -> DriverObservation:
        return DriverObservation(dict(self.frames), tuple(self.pose), None, {})

    def apply(self, action: Action) -> None:
        vals = action.continuous()
        for i in range(6):
            self.pose[i] += vals[i]
        self.pose[6] = vals[6]
        self.n_applied += 1
        if len(self.applied) < self.keep:
            self.applied.append((1.0 if action.terminate else 0.0, *vals))

    def hold(self) -> None:
        if len(self.holds) < self.keep:
            self.holds.append(time.monotonic_ns())

    def privileged_state(self) -> dict:
        return {"applied": self.applied[-50:], "n_applied": self.n_applied, "holds": self.holds[-50:],
                "n_holds": len(self.holds), "pose": list(self.pose)}

    def close(self) -> None:
        self.connected = False


class FailingDriver(FixedFrameDriver):
    """Raises on apply when dx > 0.04 (to test DRIVER_ERROR handling)."""

    def apply(self, action: Action) -> None:
        if action.dx > 0.04:
            raise RuntimeError("simulated SDK fault")
        super().apply(action)
