"""The sim arm's kinematics (robots/sim/kinematics.py): UR5e forward kinematics from its DH
table, the Jacobian, damped-least-squares IK, and its reach over the tabletop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robots.sim import kinematics as k
from robots.sim.world import HOME


def test_fk_at_zero_matches_the_hand_derived_pose() -> None:
    # All joints 0 (by hand from the DH table): frame 1 turns +90 deg about x, so joints 2
    # and 3 stretch the arm along the base's x by a2 + a3; d4 then runs along the base's -y,
    # d5 down (-z), d6 and the tool along -y again. Position in the base frame:
    # (a2 + a3, -(d4 + d6 + tool), d1 - d5); the tool's z axis is the base's -y. The base
    # stands at BASE_XYZ turned by BASE_YAW about the vertical.
    t = k.fk([0.0] * 6)
    px, py, pz = -0.425 - 0.3922, -(0.1333 + 0.0996 + k.TOOL), 0.1625 - 0.0997
    c, s = math.cos(k.BASE_YAW), math.sin(k.BASE_YAW)
    bx, by, bz = k.BASE_XYZ
    assert t[:3, 3] == pytest.approx((bx + c * px - s * py, by + s * px + c * py, bz + pz),
                                     abs=1e-12)
    assert t[:3, 2] == pytest.approx((s, -c, 0.0), abs=1e-12)


def test_fk_turning_the_base_joint_turns_the_tool_about_the_base_axis() -> None:
    q = [0.3, -1.2, 1.0, -1.4, -1.57, 0.2]
    a = k.fk(q)[:3, 3] - np.array(k.BASE_XYZ)
    b = k.fk([q[0] + math.pi / 2, *q[1:]])[:3, 3] - np.array(k.BASE_XYZ)
    assert b == pytest.approx((-a[1], a[0], a[2]), abs=1e-12)  # +90 deg about the vertical


def test_jacobian_matches_finite_differences() -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        q = rng.uniform(-2.5, 2.5, 6)
        j = k.jacobian(q)
        eps = 1e-6
        num = np.zeros((6, 6))
        for i in range(6):
            dq = np.zeros(6)
            dq[i] = eps
            t1, t0 = k.fk(q + dq), k.fk(q - dq)
            num[:3, i] = (t1[:3, 3] - t0[:3, 3]) / (2 * eps)
            num[3:, i] = k._rot_err(t1[:3, :3], t0[:3, :3]) / (2 * eps)
        assert np.abs(j - num).max() < 1e-7


def test_rpy_round_trip_and_down_is_zero() -> None:
    for rpy in [(0.0, 0.0, 0.0), (0.3, -0.5, 2.0), (-0.9, 0.9, -3.0)]:
        assert k.rpy_of(k.rot_of(*rpy)) == pytest.approx(rpy, abs=1e-12)
    assert k.rot_of(0, 0, 0)[:, 2] == pytest.approx((0, 0, -1))  # tool z points down


def test_ik_round_trip_from_a_nearby_seed() -> None:
    rng = np.random.default_rng(7)
    for _ in range(10):
        q = rng.uniform(-2.5, 2.5, 6)
        r = k.ik(k.ee_pose(q), q + rng.normal(0, 0.15, 6))
        assert r.ok, r
        assert k.ee_pose(r.q) == pytest.approx(k.ee_pose(q), abs=1e-5)


def test_ik_is_deterministic_and_bounded() -> None:
    pose = (0.1, -0.1, 0.05, 0.0, 0.0, 1.0)
    a = k.ik(pose, k.home_joints(), iters=40)
    assert a == k.ik(pose, k.home_joints(), iters=40)
    assert a.iterations <= 40
    far = k.ik((2.0, 0.0, 0.2, 0, 0, 0), k.home_joints(), iters=25)  # out of reach
    assert not far.ok and far.iterations == 25 and all(math.isfinite(v) for v in far.q)
    with pytest.raises(ValueError, match="x y z roll pitch yaw"):
        k.ik((0.0, 0.0, 0.1), k.home_joints())


def test_home_joints_put_the_gripper_at_the_world_home_pointing_down() -> None:
    q = k.home_joints()
    assert k.ee_pose(q) == pytest.approx(HOME, abs=1e-6)
    assert all(lo <= v <= hi for v, lo, hi in zip(q, k.JOINT_LOW, k.JOINT_HIGH, strict=True))


def test_the_gripper_reaches_the_task_region_pointing_down() -> None:
    home = k.home_joints()
    for x in np.linspace(-0.3, 0.3, 5):
        for y in np.linspace(-0.3, 0.3, 5):
            for z in (0.0, 0.2, 0.4):
                for yaw in (0.0, 2.8):
                    r = k.ik((x, y, z, 0.0, 0.0, yaw), home, iters=200)
                    assert r.ok, ((x, y, z, yaw), r)
