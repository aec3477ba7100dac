"""A tiny in-test RobotDriver: a fixed frame of configurable size, and a record of calls.

Used by the bridge tests and benchmarks/bridge.py (`--driver tests.integration.fakes:FixedFrameDriver`)
so the bridge alone is measured, independent of the simulator. Its privileged state exposes
what it recorded (applied actions, hold times on CLOCK_MONOTONIC) to tests in other processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

import numpy as np

from robots.drivers.base import (
    ActionSpec,
    ArmCommand,
    CameraSpec,
    Capabilities,
    DriverObservation,
    NotReady,
    ResetResult,
    RobotDriver,
    StateSpec,
)
from robots.spaces import CameraRole, GripperConvention, SpaceKind
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


class TwoCameraDriver(FixedFrameDriver):
    def __init__(self, image_size: tuple[int, int] = (64, 64)):
        super().__init__(image_size, cameras=("front", "wrist"))


class JointDriver(FixedFrameDriver):
    """A 3-joint arm with a gripper that declares joint_position (protocol v2 only), an
    external and a wrist camera, and the joint state. Records every ArmCommand it gets."""

    SPEC = ActionSpec(SpaceKind.JOINT_POSITION, ("j1", "j2", "j3", "gripper"), ("rad", "rad", "rad", "1"),
                      (-1.0, -2.0, -0.5, 0.0), (1.0, 2.0, 0.5, 1.0), GripperConvention.CLOSED_IS_1, 10.0)
    STATE = StateSpec(("j1", "j2", "j3", "gripper"), ("rad", "rad", "rad", "1"))

    def __init__(self, image_size: tuple[int, int] = (32, 32)):
        super().__init__(image_size, cameras=("main", "wrist"), control_hz=10.0)
        self.joints = [0.0, 0.0, 0.0, 0.0]
        self.commands: list[ArmCommand] = []

    def capabilities(self) -> Capabilities:
        h, w = self.image_size
        return Capabilities(driver="joint", cameras=(CameraSpec("main", h, w),
                                                     CameraSpec("wrist", h, w, role=CameraRole.WRIST)),
                            action_space=ActionSpace(control_hz=10.0), privileged_state=True,
                            action=self.SPEC, state=self.STATE)

    def observe(self) -> DriverObservation:
        return DriverObservation(dict(self.frames), tuple(self.joints), None, {})

    def apply(self, action: Action) -> None:
        raise AssertionError("a joint-space arm gets apply_command, never apply")

    def apply_command(self, command: ArmCommand) -> None:
        self.joints = list(command.values)
        self.n_applied += 1
        self.commands.append(command)

    def privileged_state(self) -> dict:
        return super().privileged_state() | {"commands": [[*c.values, c.terminate] for c in self.commands[-50:]]}


class NotReadyDriver(FixedFrameDriver):
    """Like a simulator: nothing to observe before the first reset (raises NotReady)."""

    def observe(self) -> DriverObservation:
        if self.resets == 0:
            raise NotReady("no scene yet")
        return super().observe()


class RefusingResetDriver(FixedFrameDriver):
    """An arm that refuses every scene (the driver raises in reset)."""

    def reset(self, scene: SceneSpec) -> ResetResult:
        raise RuntimeError(f"cannot set up {scene.skill!r}: gripper calibration lost")


# --- a bridge in its own process (always killed by the context manager) ---------------------

REPO = Path(__file__).resolve().parents[2]


class BridgeProcess:
    """`with BridgeProcess(tmp_path, watchdog_ms=300) as b: BridgeClient(b.endpoint, ...)`.

    Runs `python -m robots.cli bridge serve` (the real CLI) and waits for its ready file."""

    def __init__(self, tmp_path: Path, *, driver: str = "tests.integration.fakes:FixedFrameDriver",
                 image_size: str = "64x64", bind: str = "tcp://127.0.0.1:*", pub: bool = False,
                 watchdog_ms: float = 300, max_command_age_ms: float = 1000, stream_fps: float = 30,
                 extra: list[str] | tuple[str, ...] = (), start_timeout_s: float = 30.0):
        self.dir = Path(tempfile.mkdtemp(prefix="bridge-", dir=tmp_path))
        self.ready_file = self.dir / "ready.json"
        self.log_file = self.dir / "bridge.log"
        self.args = [sys.executable, "-m", "robots.cli", "bridge", "serve", "--driver", driver,
                     "--image-size", image_size, "--bind", bind, "--watchdog-ms", str(watchdog_ms),
                     "--max-command-age-ms", str(max_command_age_ms), "--stream-fps", str(stream_fps),
                     "--ready-file", str(self.ready_file), "--log-level", "WARNING", *extra]
        if pub:
            self.args += ["--pub-bind", "tcp://127.0.0.1:*"]
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}

    def start(self) -> BridgeProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.log_file, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                self.info = json.loads(self.ready_file.read_text())
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}: {self.log()}")
            time.sleep(0.02)  # polling a condition with a deadline
        self.stop()
        raise RuntimeError(f"bridge not ready within {self.start_timeout_s} s: {self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:]

    @property
    def endpoint(self) -> str:
        return self.info["endpoint"]

    @property
    def pub_endpoint(self) -> str | None:
        return self.info.get("pub_endpoint")

    @property
    def session_id(self) -> str:
        return self.info["session_id"]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(cond, timeout_s: float, what: str, interval_s: float = 0.005):
    """Poll `cond()` until truthy (returned) or raise AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
