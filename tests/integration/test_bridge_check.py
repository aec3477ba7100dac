"""`evalfleet bridge check` against real drivers: the sim passes (both action spaces, and in a
dry run); deliberately broken drivers written here fail it naming the check and the reason;
the CLI exits 1 naming the failing check.

The broken drivers run at 50 Hz so their runs are short; the sim runs at its default 5 Hz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from robots.check import results as R
from robots.check.runner import CheckOptions, run_checks
from robots.drivers.base import (
    Capabilities,
    DriverObservation,
    ResetResult,
    RobotDriver,
)
from robots.drivers.sim import SimDriver, SimOptions
from robots.spaces import CameraRole, CameraSpec, StateSpec
from robots.types import Action, ActionSpace, SceneSpec

SMALL = (CameraSpec("main", 32, 32), CameraSpec("wrist", 16, 16))
MOTION = (R.HOLD_STOPS, R.ESTOP_STOPS)


def by_name(results: tuple[R.CheckResult, ...]) -> dict[str, R.CheckResult]:
    assert tuple(r.name for r in results) == R.CHECK_NAMES
    return {r.name: r for r in results}


# --- the sim passes -----------------------------------------------------------------------


@pytest.mark.parametrize("space", ["ee_delta", "joint_position"])
def test_sim_passes_every_check(space: str) -> None:
    results = by_name(run_checks(SimDriver(SimOptions(cameras=SMALL, space=space))))
    assert [r for r in results.values() if not r.passed or r.skipped] == []
    assert results[R.RESET].detail == "case: resets itself (ready on the first reset)"
    how = "executed" if space == "ee_delta" else "recorded, not executed"  # absolute targets
    assert results[R.ACT_CLIP].detail.endswith(f"({how})")
    assert "acts refused while latched" in results[R.ESTOP_STOPS].detail


def test_dry_run_passes_with_motion_skipped_and_never_forwards_a_command() -> None:
    drv = SimDriver(SimOptions(cameras=SMALL))
    forwarded: list[object] = []
    real = drv.apply_command
    drv.apply_command = lambda c: (forwarded.append(c), real(c))  # type: ignore[method-assign]
    results = by_name(run_checks(drv, CheckOptions(dry_run=True)))
    assert R.exit_code(tuple(results.values())) == 0 and forwarded == []
    for name in MOTION:
        assert results[name].skipped and results[name].detail.startswith("skipped (dry run)")
    assert results[R.ACT_CLIP].passed and not results[R.ACT_CLIP].skipped
    assert "act skipped (dry run)" in results[R.TIMING].detail


# --- broken drivers -----------------------------------------------------------------------


class ToyArm(RobotDriver):
    """A minimal ee_delta arm: apply moves the ee by the deltas; hold keeps it still."""

    cameras = (CameraSpec("main", 16, 16),)
    state = StateSpec(("ee_x", "ee_y", "ee_z", "ee_roll", "ee_pitch", "ee_yaw", "gripper"),
                      ("m", "m", "m", "rad", "rad", "rad", "1"))
    operator_reset = False

    def __init__(self) -> None:
        self.pose = [0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0]
        self.applied: list[Action] = []

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def capabilities(self) -> Capabilities:
        return Capabilities(driver="toy", cameras=self.cameras, action_space=ActionSpace(control_hz=50.0),
                            needs_operator_reset=self.operator_reset, state=self.state)

    def reset(self, scene: SceneSpec) -> ResetResult:
        if self.operator_reset and not scene.operator_confirmed:
            return ResetResult(False, f"put the {scene.target} on the mark, then confirm")
        return ResetResult(True)

    def frames(self) -> dict[str, np.ndarray]:
        return {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in self.cameras}

    def observe(self) -> DriverObservation:
        return DriverObservation(self.frames(), tuple(self.pose))

    def apply(self, action: Action) -> None:
        self.applied.append(action)
        for i, d in enumerate(action.continuous()[:6]):
            self.pose[i] += d
        self.pose[6] = action.gripper

    def hold(self) -> None: ...


class OperatorArm(ToyArm):
    operator_reset = True


class KeepsMoving(ToyArm):
    """Ignores hold: keeps moving at the last commanded speed (feedback changes every observe)."""

    def __init__(self) -> None:
        super().__init__()
        self.velocity = 0.0

    def apply(self, action: Action) -> None:
        self.velocity = action.dx or self.velocity

    def observe(self) -> DriverObservation:
        self.pose[0] += self.velocity
        return super().observe()


class MissingWrist(ToyArm):
    cameras = (CameraSpec("main", 16, 16), CameraSpec("wrist", 16, 16, role=CameraRole.WRIST))

    def frames(self) -> dict[str, np.ndarray]:
        return {"main": np.zeros((16, 16, 3), np.uint8)}


class DuplicateState(ToyArm):
    def capabilities(self) -> Capabilities:
        state = StateSpec(("ee_x", "ee_x", "ee_z", "ee_roll", "ee_pitch", "ee_yaw", "gripper"),
                          ToyArm.state.units)
        return Capabilities(driver="toy", cameras=self.cameras, state=state)


class SilentNotReady(ToyArm):
    def reset(self, scene: SceneSpec) -> ResetResult:
        return ResetResult(ready=False)


def test_toy_arms_that_conform_pass() -> None:
    for drv in (ToyArm(), OperatorArm()):
        results = by_name(run_checks(drv))
        assert [r for r in results.values() if not r.passed] == []
    assert results[R.RESET].detail == "case: asks the operator (put the coke_can on the mark, then confirm)"


@pytest.mark.parametrize(("driver", "check", "reason"), [
    (KeepsMoving, R.HOLD_STOPS, "still moving"),
    (MissingWrist, R.OBSERVE_CAMERAS, "camera 'wrist' missing from observe() #1 (frames: ['main'])"),
    (DuplicateState, R.CAPABILITIES, "capabilities() raised ValueError: state: field names must be unique"),
    (SilentNotReady, R.RESET, ("reset() returned not ready with no instructions: an operator "
                               "cannot know what to set up")),
])
def test_broken_driver_fails_naming_the_check(driver: type[ToyArm], check: str, reason: str) -> None:
    results = run_checks(driver())
    failing = {r.name: r.detail for r in R.failed(results)}
    assert check in failing and failing[check].startswith(reason)
    if driver is KeepsMoving:
        assert failing[check].endswith("ee_x changed by 0.0125 m between the last two observations")
        assert results[-2].skipped  # the e-stop path calls the same hold(): not run again
    if driver is SilentNotReady:  # no known state: nothing moves the arm
        assert all(r.skipped for r in results if r.name in (R.ACT_CLIP, *MOTION))


# --- the CLI ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    from orchestrator.cli import app

    return lambda *args: CliRunner().invoke(app, list(args))


def test_cli_help_teaches(cli) -> None:
    res = cli("bridge", "check", "--help")
    assert res.exit_code == 0
    for text in ("--dry-run", "--config", "--json", "safe state", "module:Factory", "docs/drivers.md"):
        assert text in res.output


def test_cli_exits_1_naming_the_failing_check(cli, tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    res = cli("bridge", "check", f"{__name__}:SilentNotReady", "--json", str(out))
    assert res.exit_code == 1, res.output
    assert "FAIL reset: reset() returned not ready with no instructions" in res.output
    assert "driver does NOT conform" in res.output
    doc = json.loads(out.read_text())
    assert doc["passed"] is False
    assert [c["name"] for c in doc["checks"] if c["status"] == "fail"] == ["reset"]


def test_cli_dry_run_of_the_sim_with_a_config_exits_0(cli, tmp_path: Path) -> None:
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("space: joint_position\ncameras: [main=32x32, wrist=16x16]\n")
    res = cli("bridge", "check", "sim", "--config", str(cfg), "--dry-run")
    assert res.exit_code == 0, res.output
    assert "driver conforms: 11 passed, 2 skipped, 0 failed" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("spaces: joint_position\n")
    res = cli("bridge", "check", "sim", "--config", str(bad))
    assert res.exit_code == 2 and "unknown config key(s) ['spaces']" in res.output


def test_serve_takes_the_same_config_and_refuses_a_bad_one_before_serving(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: warp_drive\n")
    res = cli("bridge", "serve", "--driver", "sim", "--config", str(bad))
    assert res.exit_code == 2 and "warp_drive" in res.output
    res = cli("bridge", "serve", "--config", str(bad), "--space", "ee_delta")
    assert res.exit_code == 2 and "--config replaces" in res.output
