"""Published limits of the arms evalfleet ships drivers for (pure data, no SDK).

Universal Robots e-Series (data sheets of the UR3e, UR5e, UR10e, UR16e): joint ranges
+-360 deg, joint speeds per model, tool speed 1 m/s. UFactory xArm 6 / xArm 7 (UFactory xArm
user manual): joint ranges per joint, 180 deg/s per joint, 1000 mm/s at the tool. Values in
rad, rad/s and m/s. A driver config may narrow them (joint_low / joint_high, max speeds),
never widen them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_DEG = math.pi / 180.0
_TWO_PI = 2 * math.pi


@dataclass(frozen=True)
class URModel:
    """Data-sheet limits. Ranges: +-360 deg on every joint (the elbow kept to +-180 deg as in
    Universal Robots' ur_description, since it cannot pass through the upper arm)."""

    name: str
    max_joint_speed: tuple[float, ...]  # rad/s per joint
    max_tool_speed: float = 1.0  # m/s
    joint_low: tuple[float, ...] = (-_TWO_PI, -_TWO_PI, -math.pi, -_TWO_PI, -_TWO_PI, -_TWO_PI)
    joint_high: tuple[float, ...] = (_TWO_PI, _TWO_PI, math.pi, _TWO_PI, _TWO_PI, _TWO_PI)


UR_MODELS = {
    "ur3e": URModel("UR3e", (180 * _DEG,) * 3 + (360 * _DEG,) * 3),
    "ur5e": URModel("UR5e", (180 * _DEG,) * 6),
    "ur10e": URModel("UR10e", (120 * _DEG,) * 2 + (180 * _DEG,) * 4),
    "ur16e": URModel("UR16e", (120 * _DEG,) * 2 + (180 * _DEG,) * 4),
}


@dataclass(frozen=True)
class XArmModel:
    """Data-sheet limits (UFactory xArm user manual): joint ranges, 180 deg/s per joint,
    1000 mm/s at the tool."""

    name: str
    joint_low: tuple[float, ...]
    joint_high: tuple[float, ...]
    max_joint_speed: float = math.pi
    max_tcp_speed: float = 1.0  # m/s

    @property
    def dof(self) -> int:
        return len(self.joint_low)


XARM_MODELS = {
    "xarm6": XArmModel("xArm6", (-2 * math.pi, -118 * _DEG, -225 * _DEG, -2 * math.pi, -97 * _DEG, -2 * math.pi),
                       (2 * math.pi, 120 * _DEG, 11 * _DEG, 2 * math.pi, 180 * _DEG, 2 * math.pi)),
    "xarm7": XArmModel("xArm7", (-2 * math.pi, -118 * _DEG, -2 * math.pi, -11 * _DEG, -2 * math.pi, -97 * _DEG,
                                 -2 * math.pi),
                       (2 * math.pi, 120 * _DEG, 2 * math.pi, 225 * _DEG, 2 * math.pi, 180 * _DEG, 2 * math.pi)),
}
