"""Pure parts of the Franka and SO-101 drivers: quaternions to roll/pitch/yaw, the declared
joint ranges, and the SO-101's ticks, sign-magnitude positions and goal limiting."""

from __future__ import annotations

import math

import pytest

from robots.drivers.franka import FrankaConfig, action_spec, joint_bounds, quat_to_rpy
from robots.drivers.so101 import (
    GripperCalibration,
    JointCalibration,
    SO101Config,
    decode_position,
    goal_bytes,
    goal_ticks,
    gripper_ticks,
    gripper_value,
)
from robots.spaces import GripperConvention

CAM = [{"kind": "opencv", "name": "main"}]


@pytest.mark.parametrize("rpy", [(0.0, 0.0, 0.0), (0.3, -0.2, 1.0), (-1.2, 0.4, -2.9)])
def test_quaternion_xyzw_to_rpy(rpy: tuple[float, float, float]) -> None:
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = (math.cos(r / 2), math.sin(r / 2), math.cos(p / 2), math.sin(p / 2),
                              math.cos(y / 2), math.sin(y / 2))
    q = (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
         cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)  # [x, y, z, w], R = Rz Ry Rx
    assert quat_to_rpy(q) == pytest.approx(rpy)


def test_franka_bounds_and_velocity_space() -> None:
    cfg = FrankaConfig(host="h", joint_margin=0.1, cameras=CAM)  # type: ignore[arg-type]
    low, high = joint_bounds(cfg)
    assert low[5] == pytest.approx(0.5445 + 0.1) and high[3] == pytest.approx(-0.1518 - 0.1)
    vel = action_spec(FrankaConfig(host="h", space="joint_velocity", max_joint_speed=0.4,
                                   cameras=CAM))  # type: ignore[arg-type]
    assert vel.high == pytest.approx((0.4,) * 7 + (1.0,)) and vel.low[:7] == pytest.approx((-0.4,) * 7)
    assert vel.units[-1] == "1" and vel.gripper is GripperConvention.CLOSED_IS_1


def test_so101_ticks() -> None:
    assert decode_position(0x8000 | 12) == -12 and decode_position(2048) == 2048
    assert goal_bytes(3000) == [3000 & 0xFF, 3000 >> 8]
    g = GripperCalibration(id=6, closed_ticks=3000, open_ticks=2000)  # reversed mounting
    assert gripper_value(2000, g, GripperConvention.OPEN_IS_1) == 1.0
    assert gripper_ticks(0.25, g, GripperConvention.CLOSED_IS_1) == 2250
    assert gripper_value(9999, g, GripperConvention.OPEN_IS_1) == 0.0  # clipped, not extrapolated


def test_so101_goal_ticks_limit_range_and_step() -> None:
    cfg = SO101Config(port="p", control_hz=10.0, max_joint_speed=0.5, margin_ticks=10,  # type: ignore[arg-type]
                      joints={"shoulder_pan": JointCalibration(id=1, min_ticks=1000, max_ticks=3000),
                              "shoulder_lift": JointCalibration(id=2, sign=-1),
                              "elbow_flex": JointCalibration(id=3),
                              "wrist_flex": JointCalibration(id=4),
                              "wrist_roll": JointCalibration(id=5)},
                      cameras=CAM)
    present = {1: 2985, 2: 2048, 3: 2048, 4: 2048, 5: 2048, 6: 2500}
    goals, hit = goal_ticks(cfg, present, (2.0, 0.01, 0.0, 0.0, 0.0, 1.0))
    assert goals[1] == 2990  # the calibrated max less the margin, within one step (32.6 ticks)
    assert goals[2] == 2048 - 7  # sign -1: +0.01 rad is 6.5 ticks down
    assert goals[6] == 3072 and hit == ("shoulder_pan",)
