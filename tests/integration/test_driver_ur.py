"""URDriver against the ur-rtde fake (tests/integration/sdk_fakes/ur_rtde.py): `bridge check`
passes in both spaces; the arm's own limits, units, gripper conventions, stops, protective
stop, reconnect and resets, with a hand-moved clock; the CLI path a lab uses (config YAML,
SDK found under its import names); and, when ur-rtde is installed, that the real SDK has
every call the driver makes."""

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
from robots.drivers.arm_common import DriverError, camera_specs, rotvec_to_rpy, wrap
from robots.drivers.cameras import CameraError, OpenCVCameraConfig
from robots.drivers.ur import UR_MODELS, URConfig, URDriver
from robots.spaces import ArmCommand, GripperConvention
from robots.types import SceneSpec
from tests.integration.sdk_fakes.arm_parts import FakeFrameSource, FakeGripper, ManualClock
from tests.integration.sdk_fakes.ur_rtde import FakeURArm

CAMS = (OpenCVCameraConfig(name="main", height=32, width=32),
        OpenCVCameraConfig(name="wrist", height=16, width=16, role="wrist"))
SCENE = SceneSpec("pick", "coke_can", ("coke_can",))
CONFIRMED = SceneSpec("pick", "coke_can", ("coke_can",), operator_confirmed=True)


def make(space: str = "joint_velocity", clock: ManualClock | None = None, gripper: bool = True,
         **fields: object) -> tuple[URDriver, FakeURArm, FakeGripper]:
    arm = FakeURArm(clock=clock) if clock is not None else FakeURArm()
    grip = FakeGripper()
    drv = URDriver(sdk=arm.sdk(), gripper_port=grip if gripper else None,
                   frame_source=FakeFrameSource(camera_specs(CAMS)), host=arm.host, space=space, cameras=CAMS,
                   **fields)
    return drv, arm, grip


def last(arm: FakeURArm, name: str) -> tuple:
    return next(args for n, args in reversed(arm.calls) if n == name)


# --- bridge check ---------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["joint_velocity", "ee_delta"])
def test_bridge_check_passes_against_the_fake(space: str) -> None:
    drv, arm, _ = make(space)
    results = run_checks(drv)
    assert [r.name for r in results] == list(R.CHECK_NAMES)
    assert R.failed(results) == (), R.failure_lines(results)
    assert not any(r.skipped for r in results)
    assert ("speedStop" if space == "joint_velocity" else "servoStop") in arm.names()
    assert arm.names()[-1] == "stopScript"  # closed at the end


def test_bridge_check_dry_run_sends_no_motion() -> None:
    drv, arm, _ = make()
    results = run_checks(drv, CheckOptions(dry_run=True))
    assert R.failed(results) == ()
    assert "speedJ" not in arm.names()


def test_a_hold_that_does_not_stop_fails_the_check() -> None:
    class NoStop(URDriver):
        def hold(self) -> None:
            pass

    arm = FakeURArm()
    drv = NoStop(sdk=arm.sdk(), gripper_port=FakeGripper(), frame_source=FakeFrameSource(camera_specs(CAMS)), host=arm.host,
                 cameras=CAMS)
    by = {r.name: r for r in run_checks(drv)}
    assert not by[R.HOLD_STOPS].passed and "still moving" in by[R.HOLD_STOPS].detail


# --- limits and units -----------------------------------------------------------------------


def test_declared_limits_come_from_config_and_the_data_sheet() -> None:
    drv = URDriver(host="h", model="ur10e", max_joint_speed=3.0)
    spec = drv.capabilities().action_spec
    assert spec.high[:2] == pytest.approx((UR_MODELS["ur10e"].max_joint_speed[0],) * 2)  # 120 deg/s
    assert spec.high[2:6] == pytest.approx((3.0,) * 4)
    assert spec.gripper is GripperConvention.NONE and spec.dim == 6  # no gripper configured
    with pytest.raises(ValidationError, match="exceeds the UR5e data sheet"):
        URConfig(host="h", max_joint_speed=4.0)
    with pytest.raises(ValidationError, match="joint_high"):
        URConfig(host="h", joint_high=(7.0,) * 6)
    with pytest.raises(ValidationError, match="extra"):
        URConfig(host="h", speed=1.0)  # type: ignore[call-arg]


def test_joint_velocity_is_clipped_to_the_arms_limits_and_ranges() -> None:
    clock = ManualClock()
    drv, arm, _ = make(clock=clock, joint_high=(0.5, 6.0, 3.0, 6.0, 6.0, 6.0))
    with drv:
        arm.q[0] = 0.49  # 0.01 rad below the configured range's top
        drv.apply_command(ArmCommand((5.0, -5.0, 0.2, 0.0, 0.0, 0.0, 0.0)))
        qd, accel, t = last(arm, "speedJ")
        period = 1 / 15
        assert qd[0] == pytest.approx((0.5 - 0.49) / period)  # stops at the range within one period
        assert qd[1] == -1.0 and qd[2] == 0.2  # max_joint_speed 1 rad/s, the SI units ur-rtde takes
        assert (accel, t) == (4.0, 0.0)
        assert set(drv.last_sent.driver_clipped) == {"joint_1", "joint_2"}  # type: ignore[union-attr]
        clock.advance(period)  # one step's worth; later the next step (or the bridge's watchdog) decides
        assert drv.observe().proprio[0] <= 0.5 + 1e-9


def test_ee_delta_servoL_targets_the_pose_plus_delta_in_SI_and_rotation_vectors() -> None:
    drv, arm, _ = make("ee_delta", clock=ManualClock())
    with drv:
        before = drv.observe().proprio
        x, y, z, roll, pitch, yaw = before[12:18]
        drv.apply_command(ArmCommand((0.005, -0.004, 0.003, 0.02, -0.01, 0.03, 1.0)))
        pose, _speed, _acc, t, lookahead, gain = last(arm, "servoL")
        assert pose[:3] == pytest.approx([x + 0.005, y - 0.004, z + 0.003])
        got = rotvec_to_rpy(pose[3:])
        want = (roll + 0.02, pitch - 0.01, yaw + 0.03)
        assert [wrap(g - w) for g, w in zip(got, want, strict=True)] == pytest.approx([0.0] * 3, abs=1e-9)
        assert t == pytest.approx(1 / 15) and (lookahead, gain) == (0.1, 300.0)
        drv.apply_command(ArmCommand((0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)))  # beyond max_step_m
        assert last(arm, "servoL")[0][0] == pytest.approx(x + 0.01)
        assert drv.last_sent.driver_clipped == ("dx",)  # type: ignore[union-attr]


def test_ee_targets_stay_inside_the_workspace() -> None:
    drv, arm, _ = make("ee_delta", clock=ManualClock(), workspace_high=(0.35, 0.35, 0.251))
    with drv:
        z = drv.observe().proprio[14]
        assert z < 0.251
        drv.apply_command(ArmCommand((0.0, 0.0, 0.01, 0.0, 0.0, 0.0, 1.0)))
        assert last(arm, "servoL")[0][2] == pytest.approx(0.251)
        assert "ee_z" in drv.last_sent.driver_clipped  # type: ignore[union-attr]


# --- gripper convention ---------------------------------------------------------------------


@pytest.mark.parametrize(("space", "given", "value", "closed"), [
    ("joint_velocity", None, 1.0, 1.0),  # DROID: 1 closed
    ("ee_delta", None, 1.0, 0.0),  # RT-2: 1 open
    ("joint_velocity", "open_is_1", 0.25, 0.75),
])
def test_gripper_convention_is_explicit(space: str, given: str | None, value: float, closed: float) -> None:
    drv, _, grip = make(space, clock=ManualClock(), gripper_convention=given)
    with drv:
        cmd = (0.0,) * 6 + (value,)
        drv.apply_command(ArmCommand(cmd))
        assert grip.moves == [closed]
        assert drv.observe().proprio[-1] == pytest.approx(value)  # the state in the same convention
        drv.apply_command(ArmCommand(cmd))
        assert grip.moves == [closed]  # unchanged: not re-sent


# --- stops ----------------------------------------------------------------------------------


def test_hold_decelerates_to_rest_with_speedStop() -> None:
    clock = ManualClock()
    drv, arm, _ = make(clock=clock)
    with drv:
        drv.apply_command(ArmCommand((0.5,) + (0.0,) * 6))
        clock.advance(0.5)
        assert drv.observe().proprio[6] == pytest.approx(0.5)  # joint_1_vel
        drv.hold()
        assert last(arm, "speedStop") == (10.0,)
        clock.advance(0.06)  # 0.5 rad/s at 10 rad/s^2: 50 ms
        q = drv.observe().proprio
        assert q[6:12] == (0.0,) * 6
        clock.advance(0.5)
        assert drv.observe().proprio[:6] == q[:6]


def test_estop_is_a_protective_stop_that_refuses_commands_until_cleared() -> None:
    clock = ManualClock()
    drv, arm, _ = make(clock=clock)
    with drv:
        drv.apply_command(ArmCommand((0.5,) + (0.0,) * 6))
        drv.estop()
        assert arm.protective_stopped and "triggerProtectiveStop" in arm.names()
        assert drv.observe().info["protective_stop"] is True
        with pytest.raises(DriverError, match="protective stop; clear it on the teach pendant"):
            drv.apply_command(ArmCommand((0.1,) + (0.0,) * 6))
        assert not drv.reset(CONFIRMED).ready  # still stopped on the controller
        assert "clear it on the teach pendant first" in drv.reset(SCENE).instructions
        arm.protective_stopped = False  # the operator clears it on the pendant
        first = drv.reset(SCENE)
        assert not first.ready and "coke_can" in first.instructions
        assert drv.reset(CONFIRMED).ready
        drv.apply_command(ArmCommand((0.1,) + (0.0,) * 6))
        assert last(arm, "speedJ")[0][0] == 0.1


# --- connection -----------------------------------------------------------------------------


def test_a_dropped_connection_is_reconnected_before_the_next_command() -> None:
    drv, arm, _ = make(clock=ManualClock())
    with drv:
        arm.drop()
        drv.apply_command(ArmCommand((0.2,) + (0.0,) * 6))
        assert "reconnect" in arm.names() and last(arm, "speedJ")[0][0] == 0.2
        obs = drv.observe()
        assert drv.reconnects >= 1 and obs.info["reconnects"] == drv.reconnects
        assert obs.info["sent"]["call"] == "speedJ"  # what really went out


def test_a_connection_that_stays_down_raises_a_clear_error() -> None:
    drv, arm, _ = make(clock=ManualClock())
    with drv:
        arm.drop()
        arm.refuse_reconnects = 10
        with pytest.raises(DriverError, match="dropped and 2 reconnect"):
            drv.apply_command(ArmCommand((0.2,) + (0.0,) * 6))
        arm.refuse_reconnects = 0


def test_connect_refused_names_the_arm() -> None:
    arm = FakeURArm(host="10.0.0.1")
    with pytest.raises(DriverError, match="cannot open RTDE to UR5e at 10.0.0.2"):
        URDriver(sdk=arm.sdk(), host="10.0.0.2").connect()
    arm.emergency_stopped = True
    with pytest.raises(DriverError, match="emergency/protective stopped"):
        URDriver(sdk=arm.sdk(), host="10.0.0.1").connect()


# --- resets ---------------------------------------------------------------------------------


def test_reset_moves_home_and_waits_for_it() -> None:
    clock = ManualClock()
    home = (0.0, -1.6, -1.5, -1.5, 1.57, 0.0)
    drv, arm, _ = make(clock=clock, home_joints=home)
    with drv:
        assert not drv.reset(SCENE).ready
        q, speed, _acc, asynchronous = last(arm, "moveJ")
        assert (q, speed, asynchronous) == (list(home), 0.5, True)
        waiting = drv.reset(CONFIRMED)
        assert not waiting.ready and "not reached its home pose" in waiting.instructions
        clock.advance(10.0)
        assert drv.reset(CONFIRMED).ready


# --- the lab's path: config file, SDK under its import names ---------------------------------


def test_lazy_import_and_the_cli_with_a_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = "import sys, robots.drivers.ur; assert 'rtde_control' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", probe], check=False, timeout=60).returncode == 0  # imported lazily
    arm = FakeURArm()
    for name, mod in arm.modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    cfg = tmp_path / "ur5e.yaml"
    cfg.write_text(f"host: {arm.host}\nspace: joint_velocity\ncontrol_hz: 20\n"
                   "gripper: tests.integration.sdk_fakes.arm_parts:gripper_for\n"
                   "camera_source: tests.integration.sdk_fakes.arm_parts:FakeFrameSource\n"
                   "cameras: [{kind: opencv, name: main, height: 32, width: 32}]\n")
    from orchestrator.cli import app

    res = CliRunner().invoke(app, ["bridge", "check", "robots.drivers.ur:URDriver", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "driver conforms: 13 passed, 0 skipped, 0 failed" in res.output
    assert "speedJ" in arm.names()
    with pytest.raises(DriverLoadError, match="speed"):
        load_driver("robots.drivers.ur:URDriver", {"host": "h", "speed": 1})


def test_without_the_sdk_connect_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rtde_control", None)
    with pytest.raises(DriverError, match=r"pip install 'evalfleet\[ur\]'"):
        URDriver(host="h").connect()


def test_the_real_sdk_has_every_call_the_driver_makes() -> None:
    rtde_control = pytest.importorskip("rtde_control")
    rtde_receive = pytest.importorskip("rtde_receive")
    for name in ("speedJ", "speedStop", "servoL", "servoStop", "moveJ", "triggerProtectiveStop", "stopScript",
                 "isConnected", "reconnect", "disconnect"):
        assert hasattr(rtde_control.RTDEControlInterface, name), name
    for name in ("getActualQ", "getActualQd", "getActualTCPPose", "isProtectiveStopped", "isEmergencyStopped",
                 "isConnected", "reconnect", "disconnect"):
        assert hasattr(rtde_receive.RTDEReceiveInterface, name), name
    assert math.isclose(UR_MODELS["ur5e"].max_joint_speed[0], math.pi)


# --- cameras: robots/drivers/cameras.py's rig by default -------------------------------------


def test_declared_cameras_open_a_camera_rig_before_the_arm(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.integration.sdk_fakes.cameras import Device, new_cv2

    devices = {0: Device(height=32, width=32)}
    monkeypatch.setitem(sys.modules, "cv2", new_cv2(devices))
    arm = FakeURArm(clock=ManualClock())
    drv = URDriver(sdk=arm.sdk(), host=arm.host, cameras=(OpenCVCameraConfig(name="main", height=32, width=32),))
    with drv:
        assert drv.observe().frames["main"].shape == (32, 32, 3)
    assert devices[0].released and arm.names()[-1] == "stopScript"
    monkeypatch.setitem(sys.modules, "cv2", new_cv2({}))  # no camera at index 0
    drv = URDriver(sdk=arm.sdk(), host=arm.host, cameras=(OpenCVCameraConfig(name="main", height=32, width=32),))
    calls = len(arm.calls)
    with pytest.raises(CameraError, match="main"):
        drv.connect()
    assert len(arm.calls) == calls and drv._ctrl is None  # the arm was never opened
