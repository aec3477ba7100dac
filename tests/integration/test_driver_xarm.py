"""XArmDriver against the xarm-python-sdk fake (tests/integration/sdk_fakes/xarm.py): `bridge
check` passes in both spaces; the arm's own limits, units (mm/degree SDK defaults vs the
driver's m/rad), gripper conventions, stops, emergency stop, error codes, reconnect and resets,
with a hand-moved clock; the CLI path a lab uses; and, when xarm-python-sdk is installed, that
the real SDK has every call the driver makes."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from robots.check import results as R
from robots.check.loading import DriverLoadError, load_driver
from robots.check.runner import CheckOptions, run_checks
from robots.drivers.arm_common import DriverError, camera_specs
from robots.drivers.cameras import OpenCVCameraConfig
from robots.drivers.xarm import XARM_MODELS, XArmConfig, XArmDriver
from robots.spaces import ArmCommand
from robots.types import SceneSpec
from tests.integration.sdk_fakes.arm_parts import FakeFrameSource, ManualClock
from tests.integration.sdk_fakes.xarm import FakeXArm

CAMS = (OpenCVCameraConfig(name="main", height=32, width=32),)
SCENE = SceneSpec("pick", "coke_can", ("coke_can",))
CONFIRMED = SceneSpec("pick", "coke_can", ("coke_can",), operator_confirmed=True)
WS = {"workspace_low": (0.1, -0.3, 0.0), "workspace_high": (0.6, 0.3, 0.5)}


def make(space: str = "joint_position", clock: ManualClock | None = None, model: str = "xarm7",
         **fields: object) -> tuple[XArmDriver, FakeXArm]:
    dof = XARM_MODELS[model].dof
    arm = FakeXArm(dof=dof, clock=clock) if clock is not None else FakeXArm(dof=dof)
    drv = XArmDriver(sdk=arm.sdk(), frame_source=FakeFrameSource(camera_specs(CAMS)), host=arm.host, space=space,
                     model=model, cameras=CAMS, **{**WS, **fields})
    return drv, arm


def last(arm: FakeXArm, name: str) -> tuple[tuple, dict]:
    return next((args, kw) for n, args, kw in reversed(arm.calls) if n == name)


def after(arm: FakeXArm, name: str, args: tuple | None = None) -> list[tuple[str, tuple]]:
    """The commands (getters left out) from the last `name` call (with `args`, if given) on."""
    calls = [(n, a) for n, a, _ in arm.calls if not n.startswith("get_")]
    i = max(k for k, (n, a) in enumerate(calls) if n == name and (args is None or a == args))
    return calls[i:]


# --- bridge check ---------------------------------------------------------------------------


@pytest.mark.parametrize(("space", "model"), [("joint_position", "xarm7"), ("ee_delta", "xarm7"),
                                              ("joint_position", "xarm6")])
def test_bridge_check_passes_against_the_fake(space: str, model: str) -> None:
    drv, arm = make(space, model=model)
    results = run_checks(drv)
    assert R.failed(results) == (), R.failure_lines(results)
    assert not any(r.skipped for r in results)
    assert ("set_state", (4,), {}) in arm.calls
    assert arm.names()[-1] == "disconnect"


def test_bridge_check_dry_run_sends_no_motion() -> None:
    drv, arm = make()
    assert R.failed(run_checks(drv, CheckOptions(dry_run=True))) == ()
    assert "set_servo_angle_j" not in arm.names()


# --- limits and units -----------------------------------------------------------------------


def test_declared_limits_are_the_data_sheet_ranges_in_radians() -> None:
    spec = XArmDriver(host="h", model="xarm6").capabilities().action_spec
    assert spec.label == "joint_position[7]"
    assert spec.low[2] == pytest.approx(math.radians(-225)) and spec.high[2] == pytest.approx(math.radians(11))
    assert spec.low[4] == pytest.approx(math.radians(-97)) and spec.high[4] == pytest.approx(math.pi)
    with pytest.raises(ValidationError, match="exceeds the xArm7 data sheet"):
        XArmConfig(host="h", max_joint_speed=4.0)
    with pytest.raises(ValidationError, match="joint_high"):
        XArmConfig(host="h", model="xarm6", joint_high=(1.0,) * 7)


def test_joint_targets_go_out_in_radians_a_step_at_a_time() -> None:
    clock = ManualClock()
    drv, arm = make(clock=clock)
    with drv:
        q = drv.observe().proprio[:7]
        target = (q[0] + 1.0, q[1] - 0.01, *q[2:], 0.0)
        drv.apply_command(ArmCommand(target))
        (angles,), kw = last(arm, "set_servo_angle_j")
        assert kw == {"is_radian": True}  # the SDK's default is degrees
        step = 0.5 / 15  # max_joint_speed / control_hz
        assert angles[0] == pytest.approx(q[0] + step) and angles[1] == pytest.approx(q[1] - 0.01)
        assert drv.last_sent.driver_clipped == ("joint_1",)  # type: ignore[union-attr]
        clock.advance(0.1)
        assert drv.observe().proprio[0] == pytest.approx(q[0] + step)


def test_ee_delta_goes_out_in_mm_and_radians() -> None:
    drv, arm = make("ee_delta", clock=ManualClock())
    with drv:
        obs = drv.observe().proprio
        x, _y, z, roll = obs[7:11]
        assert (x, z, roll) == pytest.approx((0.3, 0.25, math.pi))  # m and rad, from mm and rad
        drv.apply_command(ArmCommand((0.004, -0.002, 0.5, 0.0, 0.01, -0.02, 1.0)))
        (pose,), kw = last(arm, "set_servo_cartesian")
        assert kw == {"is_radian": True}
        assert pose[:3] == pytest.approx([304.0, -2.0, 260.0])  # mm; dz clipped to max_step_m 1 cm
        assert pose[4:] == pytest.approx([obs[11] + 0.01, obs[12] - 0.02])
        assert drv.last_sent.units == "mm, rad" and "dz" in drv.last_sent.driver_clipped  # type: ignore[union-attr]


def test_ee_targets_stay_inside_the_workspace() -> None:
    drv, arm = make("ee_delta", clock=ManualClock(), workspace_high=(0.305, 0.3, 0.5))
    with drv:
        drv.apply_command(ArmCommand((0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)))
        assert last(arm, "set_servo_cartesian")[0][0][0] == pytest.approx(305.0)


# --- gripper convention ---------------------------------------------------------------------


@pytest.mark.parametrize(("space", "value", "pos"), [("joint_position", 1.0, 0.0), ("ee_delta", 1.0, 850.0),
                                                     ("joint_position", 0.25, 637.5)])
def test_gripper_convention_is_explicit(space: str, value: float, pos: float) -> None:
    clock = ManualClock()
    drv, arm = make(space, clock=clock)
    with drv:
        base = drv.observe().proprio[:7] if space == "joint_position" else (0.0,) * 6
        drv.apply_command(ArmCommand((*base, value)))
        (sent,), kw = last(arm, "set_gripper_position")
        assert sent == pytest.approx(pos) and kw == {"wait": False, "speed": 3000.0}
        clock.advance(1.0)
        assert drv.observe().proprio[-1] == pytest.approx(value)


# --- stops, e-stop, error codes -------------------------------------------------------------


def test_hold_stops_and_the_next_command_reenters_servo_mode() -> None:
    clock = ManualClock()
    drv, arm = make(clock=clock, max_joint_speed=3.0)
    arm.joint_speed = 0.5  # slower than the commanded step: the arm is still moving at the hold
    with drv:
        q0 = drv.observe().proprio[0]
        drv.apply_command(ArmCommand((q0 + 0.2, *drv.observe().proprio[1:7], 0.0)))
        clock.advance(0.05)
        drv.hold()
        assert last(arm, "set_state") == ((4,), {})
        q1 = drv.observe().proprio[0]
        clock.advance(1.0)
        assert drv.observe().proprio[0] == q1 and q0 < q1 < q0 + 0.2
        drv.apply_command(ArmCommand((*drv.observe().proprio[:7], 0.0)))
        assert [n for n, _ in after(arm, "set_state", (4,))][:4] == ["set_state", "set_mode", "set_state",
                                                                     "set_servo_angle_j"]
        assert after(arm, "set_mode")[:2] == [("set_mode", (1,)), ("set_state", (0,))]


def test_estop_is_the_sdk_emergency_stop_and_needs_an_operator_reset() -> None:
    drv, arm = make(clock=ManualClock())
    with drv:
        hold = (*drv.observe().proprio[:7], 0.0)
        drv.estop()
        assert "emergency_stop" in arm.names() and drv.observe().info["estopped"] is True
        with pytest.raises(DriverError, match="emergency stopped"):
            drv.apply_command(ArmCommand(hold))
        assert not drv.reset(SCENE).ready
        assert drv.reset(CONFIRMED).ready
        drv.apply_command(ArmCommand(hold))
        tail = [n for n, _ in after(arm, "emergency_stop")]
        assert tail.index("motion_enable") < tail.index("set_servo_angle_j")


def test_controller_errors_are_kept_and_surfaced() -> None:
    drv, arm = make(clock=ManualClock())
    with drv:
        hold = (*drv.observe().proprio[:7], 0.0)
        arm.fault(31)
        with pytest.raises(DriverError, match=r"code 1 \(uncleared controller errors\); controller error 31"):
            drv.apply_command(ArmCommand(hold))
        assert drv.last_fault is not None and drv.last_fault.error_code == 31
        drv.hold()  # the controller has stopped the arm already: no error raised, the fault kept
        assert last(arm, "set_state") == ((4,), {}) and drv.last_fault.call == "set_state(4)"
        info = drv.observe().info["sdk_error"]
        assert info["error_code"] == 31 and "controller error 31" in info["last_fault"]
        first = drv.reset(SCENE)
        assert not first.ready and "error 31" in first.instructions
        assert drv.reset(CONFIRMED).ready and "clean_error" in arm.names()
        drv.apply_command(ArmCommand(hold))


def test_connect_refuses_an_arm_in_error() -> None:
    arm = FakeXArm()
    arm.error_code = 22
    with pytest.raises(DriverError, match="controller error 22"):
        XArmDriver(sdk=arm.sdk(), host=arm.host).connect()
    with pytest.raises(DriverError, match="cannot connect to xArm7 at 10.9.9.9"):
        XArmDriver(sdk=arm.sdk(), host="10.9.9.9").connect()


# --- connection -----------------------------------------------------------------------------


def test_a_dropped_connection_is_reconnected_and_servo_mode_reentered() -> None:
    drv, arm = make(clock=ManualClock())
    with drv:
        hold = (*drv.observe().proprio[:7], 0.0)
        arm.drop()
        drv.apply_command(ArmCommand(hold))
        tail = [n for n, _ in after(arm, "connect")]
        assert tail[:4] == ["connect", "set_mode", "set_state", "set_servo_angle_j"]
        assert drv.reconnects == 1 and drv.observe().info["reconnects"] == 1


def test_a_connection_that_stays_down_raises_a_clear_error() -> None:
    drv, arm = make(clock=ManualClock())
    with drv:
        arm.drop()
        arm.refuse_reconnects = 10
        with pytest.raises(DriverError, match="dropped and 2 reconnect"):
            drv.observe()
        arm.refuse_reconnects = 0


# --- resets ---------------------------------------------------------------------------------


def test_reset_moves_home_in_position_mode_and_waits_for_it() -> None:
    clock = ManualClock()
    home = (0.0, -0.2, 0.0, 0.5, 0.0, 0.7, 0.0)
    drv, arm = make(clock=clock, home_joints=home)
    with drv:
        assert not drv.reset(SCENE).ready
        assert last(arm, "set_mode") == ((0,), {})
        _, kw = last(arm, "set_servo_angle")
        assert kw == {"angle": list(home), "speed": 0.35, "is_radian": True, "wait": False}
        assert "not reached its home pose" in drv.reset(CONFIRMED).instructions
        clock.advance(5.0)
        assert drv.reset(CONFIRMED).ready and last(arm, "set_mode") == ((1,), {})


# --- the lab's path -------------------------------------------------------------------------


def test_lazy_import_and_the_cli_with_a_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = "import sys, robots.drivers.xarm; assert 'xarm' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", probe], check=False, timeout=60).returncode == 0
    arm = FakeXArm(dof=6)
    for name, mod in arm.modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    cfg = tmp_path / "xarm6.yaml"
    cfg.write_text(f"host: {arm.host}\nmodel: xarm6\ncontrol_hz: 20\n"
                   "workspace_low: [0.1, -0.3, 0.0]\nworkspace_high: [0.6, 0.3, 0.5]\n"
                   "camera_source: tests.integration.sdk_fakes.arm_parts:FakeFrameSource\n"
                   "cameras: [{kind: opencv, name: main, height: 32, width: 32}]\n")
    from orchestrator.cli import app

    res = CliRunner().invoke(app, ["bridge", "check", "robots.drivers.xarm:XArmDriver", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "driver conforms: 13 passed, 0 skipped, 0 failed" in res.output
    with pytest.raises(DriverLoadError, match="model"):
        load_driver("robots.drivers.xarm:XArmDriver", {"host": "h", "model": "xarm9"})


def test_without_the_sdk_connect_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xarm", None)
    monkeypatch.setitem(sys.modules, "xarm.wrapper", None)
    with pytest.raises(DriverError, match=r"pip install 'evalfleet\[xarm\]'"):
        XArmDriver(host="h").connect()


def test_the_real_sdk_has_every_call_the_driver_makes() -> None:
    wrapper = pytest.importorskip("xarm.wrapper")
    for name in ("connect", "disconnect", "motion_enable", "set_mode", "set_state", "clean_error", "clean_warn",
                 "get_err_warn_code", "emergency_stop", "set_servo_angle_j", "set_servo_cartesian", "set_servo_angle",
                 "get_servo_angle", "get_position", "set_gripper_enable", "set_gripper_mode",
                 "set_gripper_position", "get_gripper_position", "connected", "error_code", "warn_code"):
        assert hasattr(wrapper.XArmAPI, name), name


def test_an_error_is_shown_to_the_operator_then_cleared_and_the_arm_sent_home() -> None:
    clock = ManualClock()
    home = (0.0, -0.2, 0.0, 0.5, 0.0, 0.7, 0.0)
    drv, arm = make(clock=clock, home_joints=home)
    with drv:
        arm.fault(22)
        first = drv.reset(SCENE)
        assert not first.ready and "error 22" in first.instructions
        assert "set_servo_angle" not in arm.names()  # nothing moves while the error stands
        second = drv.reset(CONFIRMED)
        assert not second.ready and "moving to its home pose" in second.instructions
        assert arm.error_code == 0 and last(arm, "set_servo_angle")[1]["angle"] == list(home)
        clock.advance(5.0)
        assert drv.reset(CONFIRMED).ready
