"""FrankaDriver against a fake `franky` (tests/integration/sdk_fakes/franky.py) and fake
cameras: `bridge check` passes in both joint spaces; limits, units, the gripper convention,
stop on hold/e-stop, motion errors held until an operator reset, and reconnect."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from policies.remote.presets import preset
from robots.check import results as R
from robots.check.loading import load_driver
from robots.check.runner import CheckOptions, run_checks
from robots.drivers.arm_common import DriverError
from robots.drivers.franka import LIMITS, FrankaDriver
from robots.spaces import ArmCommand, GripperConvention, SpaceKind, match_pair
from robots.types import SceneSpec
from tests.integration.sdk_fakes import franky as fake_franky
from tests.integration.sdk_fakes.cameras import Device, new_cv2

SCENE = SceneSpec("pick", "coke_can", ("coke_can",))
CAMERAS = [{"kind": "opencv", "name": "main", "device": 0, "width": 64, "height": 48},
           {"kind": "opencv", "name": "wrist", "device": 1, "width": 64, "height": 48, "role": "wrist"}]


@pytest.fixture(autouse=True)
def cameras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", new_cv2({0: Device(), 1: Device()}))


def make(**over: Any) -> tuple[FrankaDriver, SimpleNamespace]:
    sdk = fake_franky.new()
    cfg: dict[str, Any] = {"host": "172.16.0.2", "control_hz": 20.0, "cameras": CAMERAS, **over}
    return FrankaDriver(sdk=sdk, **cfg), sdk  # type: ignore[arg-type]


def moves(sdk: SimpleNamespace, kind: type) -> list[Any]:
    return [m for m, _ in sdk.arm.calls("move") if isinstance(m, kind)]


@pytest.mark.parametrize("space", ["joint_position", "joint_velocity"])
def test_bridge_check_passes_against_the_fake(space: str) -> None:
    drv, sdk = make(space=space)
    sdk.arm.speed = 0.2  # rad/s: a joint step still runs when the check holds
    results = run_checks(drv)
    assert [(r.name, r.detail) for r in results if not r.passed or r.skipped] == []
    by = {r.name: r for r in results}
    assert by[R.RESET].detail.startswith("case: asks the operator")
    stops = fake_franky.JointStopMotion if space == "joint_position" else fake_franky.JointVelocityStopMotion
    assert moves(sdk, stops)  # hold and e-stop went out as the SDK's stop motion
    assert drv.robot is None and not drv.rig.is_open  # closed at the end


def test_dry_run_and_the_cli_loading_path(monkeypatch: pytest.MonkeyPatch) -> None:
    sdk = fake_franky.new()
    monkeypatch.setitem(sys.modules, "franky", sdk)  # what `bridge check DRIVER --config` imports
    drv = load_driver("robots.drivers.franka:FrankaDriver", {"host": "10.0.0.2", "cameras": CAMERAS})
    results = run_checks(drv, CheckOptions(dry_run=True))
    assert R.exit_code(results) == 0
    assert not moves(sdk, fake_franky.JointMotion)  # nothing forwarded in a dry run


def test_declared_spaces_follow_the_published_limits() -> None:
    fr3, _ = make(joint_margin=0.05)
    spec = fr3.capabilities().action_spec
    assert spec.kind is SpaceKind.JOINT_POSITION and spec.names[-1] == "gripper"
    assert spec.gripper is GripperConvention.CLOSED_IS_1
    assert spec.low[:7] == pytest.approx([x + 0.05 for x in LIMITS["fr3"][0]])
    assert spec.high[3] == pytest.approx(-0.1518 - 0.05)  # FR3 joint 4 never reaches zero
    panda, _ = make(model="panda", joint_margin=0.0)
    assert panda.capabilities().action_spec.high[5] == pytest.approx(3.7525)
    vel, _ = make(space="joint_velocity", max_joint_speed=2.5, model="panda")
    assert vel.capabilities().action_spec.high[:7] == pytest.approx([2.175] * 4 + [2.5] * 3)


def test_joint_velocity_franka_fits_the_droid_preset_without_adapters() -> None:
    drv, _ = make(space="joint_velocity")
    assert match_pair("pi0-droid", preset("droid").io, "franka", drv.capabilities().spaces()) == ()


def test_joint_targets_are_limited_to_one_step_from_where_the_arm_is() -> None:
    drv, sdk = make(max_joint_speed=0.5, control_hz=10.0)
    with drv:
        q = sdk.arm.q.copy()
        target = (*(q + np.array([0.3, 0, 0, 0, 0, 0, -0.01])), 0.0)
        drv.apply_command(ArmCommand(tuple(float(x) for x in target)))
        sent = moves(sdk, fake_franky.JointMotion)[-1].target
        assert sent[0] == pytest.approx(q[0] + 0.05)  # 0.5 rad/s / 10 Hz
        assert sent[6] == pytest.approx(q[6] - 0.01)
        info = drv.observe().info["sent"]
        assert info["call"] == "JointMotion" and info["driver_clipped"] == ["joint_1"]
        assert info["units"] == "rad"


def test_joint_velocity_stops_a_joint_before_its_limit() -> None:
    drv, sdk = make(space="joint_velocity", max_joint_speed=1.0, control_hz=10.0, joint_margin=0.05)
    with drv:
        hi4 = LIMITS["fr3"][1][3] - 0.05
        sdk.arm.q[3] = hi4 - 0.01
        drv.apply_command(ArmCommand((0.2, 0, 0, 1.0, 0, 0, 0, 0.0)))
        m = moves(sdk, fake_franky.JointVelocityMotion)[-1]
        assert m.target[0] == pytest.approx(0.2)
        assert m.target[3] == pytest.approx(0.1, abs=1e-6)  # 0.01 rad left / 0.1 s
        assert m.duration.ms == 200  # two control periods, then franky stops the arm itself
        assert drv.observe().info["sent"]["driver_clipped"] == ["joint_4"]


def test_gripper_convention_grasp_deadband_and_busy() -> None:
    drv, sdk = make()  # closed_is_1
    with drv:
        q = tuple(float(x) for x in sdk.arm.q)
        drv.apply_command(ArmCommand((*q, 0.5)))
        assert sdk.arm.calls("gripper.move_async")[-1] == (pytest.approx(0.04), 0.1)
        n = len(sdk.arm.log)
        drv.apply_command(ArmCommand((*q, 0.52)))  # 1.6 mm: inside the deadband
        assert not [c for c in sdk.arm.log[n:] if c[0].startswith("gripper")]
        sdk.arm.object_width = 0.03
        drv.apply_command(ArmCommand((*q, 1.0)))  # fully closed: grasp with force, any width
        assert sdk.arm.calls("gripper.grasp_async")[-1] == (0.0, 0.1, 20.0, 0.005, 1.0)
        obs = drv.observe()
        assert obs.proprio[7] == pytest.approx(1 - 0.03 / 0.08)  # closed fraction, closed_is_1
        sdk.arm.gripper_busy = True
        drv.apply_command(ArmCommand((*q, 0.0)))
        assert not sdk.arm.calls("gripper.move_async")[1:]  # busy: not resent
    drv2, sdk2 = make(gripper="open_is_1")
    with drv2:
        sdk2.arm.width = 0.02
        assert drv2.observe().proprio[7] == pytest.approx(0.25)
        q = tuple(float(x) for x in sdk2.arm.q)
        drv2.apply_command(ArmCommand((*q, 1.0)))
        assert sdk2.arm.calls("gripper.move_async")[-1][0] == pytest.approx(0.08)


def test_state_units_and_ee_pose() -> None:
    drv, sdk = make()
    with drv:
        obs = drv.observe()
        assert obs.proprio[:7] == pytest.approx(fake_franky.NEUTRAL)
        pose = fake_franky._fk(sdk.arm.q)
        assert obs.proprio[8:11] == pytest.approx(list(pose.translation))
        assert obs.proprio[11:13] == pytest.approx([0.0, 0.0], abs=1e-9)
        assert obs.proprio[13] == pytest.approx(sdk.arm.q[0] + sdk.arm.q[6] - 0.785)
        assert set(obs.frames) == {"main", "wrist"} and obs.frames["main"].shape == (48, 64, 3)


def test_hold_stops_with_the_stop_motion_and_falls_back_to_robot_stop() -> None:
    drv, sdk = make()
    with drv:
        n = len(sdk.arm.log)
        drv.hold()  # idle: nothing runs, nothing to send
        assert sdk.arm.log[n:] == []
        q = tuple(float(x) for x in sdk.arm.q)
        drv.apply_command(ArmCommand((q[0] + 0.02, *q[1:], 0.0)))
        assert sdk.arm.mode is not None
        drv.hold()
        assert moves(sdk, fake_franky.JointStopMotion) and sdk.arm.mode is None
        assert drv.observe().info["holding"] is True
        drv.apply_command(ArmCommand((q[0] + 0.04, *q[1:], 0.0)))
        sdk.arm.pending_error = fake_franky.ControlException("cartesian_reflex")
        drv.hold()  # the stop motion raises the stored reflex: Robot.stop() preempts instead
        assert sdk.arm.calls("stop") and drv.observe().info["sent"]["call"] == "Robot.stop"


def test_a_motion_error_holds_the_arm_until_an_operator_reset() -> None:
    drv, sdk = make()
    with drv:
        q = tuple(float(x) for x in sdk.arm.q)
        sdk.arm.pending_error = fake_franky.ControlException("joint_velocity_violation")
        with pytest.raises(DriverError, match="motion refused.*joint_velocity_violation"):
            drv.apply_command(ArmCommand((*q, 0.0)))
        with pytest.raises(DriverError, match="stopped until an operator resets it"):
            drv.apply_command(ArmCommand((*q, 0.0)))
        assert "joint_velocity_violation" in drv.observe().info["motion_error"]
        sdk.arm.has_errors = True
        first = drv.reset(SCENE)
        assert not first.ready and "Keep clear of the workspace" in first.instructions
        assert drv.reset(SceneSpec.from_dict({**SCENE.to_dict(), "operator_confirmed": True})).ready
        assert sdk.arm.calls("recover_from_errors")[1:]  # once at connect, once at the reset
        drv.apply_command(ArmCommand((*q, 0.0)))


def test_reconnects_after_a_lost_connection() -> None:
    drv, sdk = make()
    with drv:
        sdk.arm.network_down = True
        with pytest.raises(DriverError, match="connection lost"):
            drv.observe()
        assert drv.robot is None
        drv.hold()  # nothing connected: returns, raises nothing
        sdk.arm.network_down = False
        assert len(drv.observe().proprio) == 14
        assert drv.reconnects == 1 and sdk.arm.robots == 2
        assert sdk.arm.calls("relative_dynamics_factor")[-1] == (0.1,)  # settings re-applied


def test_connect_failure_is_one_clear_line() -> None:
    drv, sdk = make()
    sdk.arm.refuse_connect = True
    with pytest.raises(DriverError, match=r"franka at 172.16.0.2: cannot connect .*FCI is active in Desk"):
        drv.connect()


def test_reset_moves_home_when_configured() -> None:
    home = (0.1, -0.5, 0.0, -2.0, 0.0, 1.5, 0.7)
    drv, sdk = make(home=home)
    with drv:
        assert not drv.reset(SCENE).ready
        assert sdk.arm.q == pytest.approx(home) and sdk.arm.calls("join_motion") == [(20.0,)]


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="cameras"):
        FrankaDriver(sdk=fake_franky.new(), host="h", cameras=[])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="seven finite joint angles"):
        make(home=(0.0,) * 6)
    with pytest.raises(ValidationError, match="extra"):
        make(speed=3)


@pytest.mark.skipif(importlib.util.find_spec("franky") is None, reason="extra `franka` not installed")
def test_franka_extra_imports() -> None:
    import franky  # type: ignore[import-not-found]

    for name in ("Robot", "Gripper", "JointMotion", "JointVelocityMotion", "JointStopMotion",
                 "JointVelocityStopMotion", "Duration", "RealtimeConfig", "NetworkException"):
        assert hasattr(franky, name), name
