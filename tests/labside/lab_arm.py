"""The lab's tiny arm: a point end effector above a 40 x 40 cm table, a target puck on it, an
external top-down camera and a wrist camera. Success: the end effector within 3 cm of the
target. Two ways to drive it (docs/protocol.md §5.1): `ee_delta` (RT-2's space; v1 and v2) or
`joint_position` of a Cartesian gantry (three prismatic axes + gripper; v2 only).
Pure numpy; the bridge (lab_bridge.py) owns the wire and the safety rules."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WORKSPACE_LOW = (-0.20, -0.20, 0.0)
WORKSPACE_HIGH = (0.20, 0.20, 0.30)
SUCCESS_RADIUS = 0.03
HEIGHT, WIDTH = 48, 64  # tiny frames: the tests are about the wire, not pixels
EE_STATE = ("ee_x", "ee_y", "ee_z", "ee_roll", "ee_pitch", "ee_yaw")


@dataclass(frozen=True)
class LabSpace:
    """The arm's declared action space and state (§5.2)."""

    kind: str
    names: tuple[str, ...]
    units: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    state_names: tuple[str, ...]
    state_units: tuple[str, ...]
    gripper: str = "open_is_1"

    def declaration(self, control_hz: float) -> dict[str, Any]:
        return {"kind": self.kind, "names": list(self.names), "units": list(self.units),
                "low": list(self.low), "high": list(self.high), "gripper": self.gripper,
                "control_hz": control_hz}


EE_DELTA = LabSpace(
    kind="ee_delta",
    names=("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
    units=("m", "m", "m", "rad", "rad", "rad", "1"),
    low=(-0.05, -0.05, -0.05, -0.25, -0.25, -0.25, 0.0),
    high=(0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0),
    state_names=(*EE_STATE, "gripper"),
    state_units=("m", "m", "m", "rad", "rad", "rad", "1"),
)
GANTRY = LabSpace(
    kind="joint_position",
    names=("x_axis", "y_axis", "z_axis", "gripper"),
    units=("m", "m", "m", "1"),
    low=(*WORKSPACE_LOW, 0.0),
    high=(*WORKSPACE_HIGH, 1.0),
    state_names=("x_axis", "y_axis", "z_axis", "gripper", *EE_STATE),
    state_units=("m", "m", "m", "1", "m", "m", "m", "rad", "rad", "rad"),
)
SPACES = {"ee_delta": EE_DELTA, "joint_position": GANTRY}


class LabDriverError(RuntimeError):
    """What the lab's driver raises when the arm refuses a request."""


@dataclass
class LabArm:
    space: LabSpace = EE_DELTA
    refuse_reset: str | None = None  # reset raises LabDriverError(this) when set
    pos: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 0.15]))
    gripper: float = 1.0
    target: np.ndarray = field(default_factory=lambda: np.array([0.1, 0.1, 0.0]))
    held: bool = False
    ready: bool = False  # a scene was set up

    def reset(self, scene: dict) -> None:
        if self.refuse_reset:
            raise LabDriverError(self.refuse_reset)
        key = f"{scene['target']}:{scene.get('seed', 0)}".encode()
        rng = np.random.default_rng(zlib.crc32(key))
        self.target = np.array([*rng.uniform(-0.15, 0.15, 2), 0.0])
        self.pos = np.array([*rng.uniform(-0.05, 0.05, 2), 0.15])
        self.gripper = 1.0
        self.held = True
        self.ready = True

    def hold(self) -> None:
        self.held = True

    def apply(self, values: np.ndarray) -> None:
        """One (clipped) step in the declared space."""
        self.held = False
        if self.space.kind == "ee_delta":
            self.pos = self.pos + values[:3]
        else:  # gantry: absolute axis positions
            self.pos = np.array(values[:3], dtype=float)
        self.gripper = float(values[-1])

    def success(self) -> bool:
        return bool(np.linalg.norm(self.pos - self.target) < SUCCESS_RADIUS)

    def state(self) -> list[float]:
        """The state vector in the declared order (v1: `proprio`, x y z r p y gripper)."""
        x, y, z = (float(v) for v in self.pos)
        ee = [x, y, z, 0.0, 0.0, 0.0]
        if self.space.kind == "ee_delta":
            return [*ee, float(self.gripper)]
        return [x, y, z, float(self.gripper), *ee]

    def render(self, camera: str) -> np.ndarray:
        img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        if camera == "wrist":  # the target as seen from the end effector
            img[:] = (60, 60, 70)
            self._dot(img, self.target - self.pos, (220, 30, 30), 4)
        else:  # external, top-down
            img[:] = (150, 120, 90)
            self._dot(img, self.target, (220, 30, 30), 3)
            self._dot(img, self.pos, (30, 30, 220), 2 + int(self.pos[2] * 10))
        return img

    @staticmethod
    def _dot(img: np.ndarray, p: np.ndarray, rgb: tuple[int, int, int], r: int) -> None:
        cx = int((p[0] + 0.2) / 0.4 * (WIDTH - 1))
        cy = int((p[1] + 0.2) / 0.4 * (HEIGHT - 1))
        img[max(0, cy - r):max(0, cy + r + 1), max(0, cx - r):max(0, cx + r + 1)] = rgb
