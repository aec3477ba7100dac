"""The real-arm drivers' pure helpers (robots/drivers/arm_common.py): rotations, the arm's own
limits, gripper conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robots.drivers import arm_common as C
from robots.spaces import CameraSpec, GripperConvention

angle = st.floats(-math.pi + 1e-3, math.pi - 1e-3)


@given(angle, st.floats(-1.5, 1.5), angle)
def test_rpy_rotvec_round_trip(roll: float, pitch: float, yaw: float) -> None:
    rv = C.rpy_to_rotvec(roll, pitch, yaw)
    assert np.allclose(C.rotvec_to_matrix(rv), C.rpy_to_matrix(roll, pitch, yaw), atol=1e-9)
    assert np.allclose(C.rpy_to_matrix(*C.rotvec_to_rpy(rv)), C.rpy_to_matrix(roll, pitch, yaw), atol=1e-9)


def test_known_rotations() -> None:
    assert C.rpy_to_rotvec(0.0, 0.0, math.pi / 2) == pytest.approx((0.0, 0.0, math.pi / 2))
    rv = C.rpy_to_rotvec(math.pi, 0.0, 0.0)  # the tool pointing down: an angle of pi about x
    assert abs(rv[0]) == pytest.approx(math.pi) and rv[1:] == pytest.approx((0.0, 0.0), abs=1e-6)
    assert C.rotvec_to_rpy((0.0, 0.0, 0.0)) == (0.0, 0.0, 0.0)
    assert C.wrap(3 * math.pi / 2) == pytest.approx(-math.pi / 2) and C.wrap(-math.pi) == math.pi


def test_clip_vector_names_what_it_clipped() -> None:
    out, hit = C.clip_vector((2.0, -0.5, -3.0), (-1.0,) * 3, (1.0,) * 3, ("a", "b", "c"))
    assert out == (1.0, -0.5, -1.0) and hit == ("a", "c")


def test_joint_velocity_guard_keeps_one_period_inside_the_range() -> None:
    names = ("j1", "j2", "j3")
    out, hit = C.guard_joint_velocity((0.95, 0.0, 1.2), (1.0, 1.0, 1.0), (-1.0,) * 3, (1.0,) * 3, 0.1, names)
    assert out == pytest.approx((0.5, 1.0, 0.0)) and hit == ("j1", "j3")  # j3 past its limit: no further
    out, hit = C.guard_joint_velocity((1.2,), (-1.0,), (-1.0,), (1.0,), 0.1, ("j",))
    assert out == (-1.0,) and hit == ()  # back inwards is allowed


def test_step_toward_moves_at_most_max_step() -> None:
    out, hit = C.step_toward((0.0, 1.0), (1.0, 1.01), (0.1, 0.1), ("a", "b"))
    assert out == pytest.approx((0.1, 1.01)) and hit == ("a",)


@pytest.mark.parametrize(("convention", "value", "closed"), [(GripperConvention.OPEN_IS_1, 1.0, 0.0),
                                                             (GripperConvention.OPEN_IS_1, 0.2, 0.8),
                                                             (GripperConvention.CLOSED_IS_1, 0.2, 0.2)])
def test_gripper_conventions(convention: GripperConvention, value: float, closed: float) -> None:
    assert C.to_closed(value, convention) == pytest.approx(closed)
    assert C.from_closed(closed, convention) == pytest.approx(value)


def test_default_conventions_follow_the_space() -> None:
    assert C.default_convention("ee_delta", None) is GripperConvention.OPEN_IS_1
    assert C.default_convention("joint_velocity", None) is GripperConvention.CLOSED_IS_1
    assert C.default_convention("ee_delta", "closed_is_1") is GripperConvention.CLOSED_IS_1


def test_read_frames_needs_a_source_for_declared_cameras() -> None:
    cams = (CameraSpec("main", 16, 16),)
    assert C.read_frames(None, ()) == {}
    with pytest.raises(C.DriverError, match="connect"):
        C.read_frames(None, cams)

    class Empty:
        def read(self) -> dict[str, np.ndarray]:
            return {}

        def close(self) -> None:
            pass

    with pytest.raises(C.DriverError, match=r"no frame for \['main'\]"):
        C.read_frames(Empty(), cams)
    with pytest.raises(C.DriverError, match="package.module:Factory"):
        C.load_factory("nocolon", "gripper")
