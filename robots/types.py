"""Value types shared by the robot side, the wire and the policies.

Pure: numpy only. Frozen dataclasses for values; frames are numpy arrays (uint8, HxWx3 RGB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

#: RT-2's action layout: terminate, then 7 continuous dimensions.
CONTINUOUS_DIMS: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


class Skill(StrEnum):
    """Skills of the RT-2 evaluation that the simulated tabletop implements."""

    PICK = "pick"
    MOVE_NEAR = "move_near"
    KNOCK_OVER = "knock_over"
    PLACE_UPRIGHT = "place_upright"
    OPEN_DRAWER = "open_drawer"
    CLOSE_DRAWER = "close_drawer"
    PLACE_INTO_DRAWER = "place_into_drawer"
    PICK_FROM_DRAWER = "pick_from_drawer"


@dataclass(frozen=True)
class Action:
    """One control step: terminate flag, end-effector deltas (m, rad) and gripper (0 closed..1 open)."""

    terminate: bool = False
    dx: float = 0.0
    dy: float = 0.0
    dz: float = 0.0
    droll: float = 0.0
    dpitch: float = 0.0
    dyaw: float = 0.0
    gripper: float = 1.0

    def continuous(self) -> tuple[float, ...]:
        return (self.dx, self.dy, self.dz, self.droll, self.dpitch, self.dyaw, self.gripper)

    @classmethod
    def from_continuous(cls, values: tuple[float, ...] | list[float], terminate: bool = False) -> Action:
        if len(values) != len(CONTINUOUS_DIMS):
            raise ValueError(f"Action needs {len(CONTINUOUS_DIMS)} continuous values, got {len(values)}")
        return cls(terminate, *(float(v) for v in values))

    def is_finite(self) -> bool:
        return all(math.isfinite(v) for v in self.continuous())

    @classmethod
    def hold(cls) -> Action:
        """A zero-motion action that keeps the gripper as commanded by the robot side."""
        return cls(terminate=False, gripper=float("nan"))


@dataclass(frozen=True)
class ActionSpace:
    """Per-step limits of each continuous dimension (inclusive), and the control rate."""

    low: tuple[float, ...] = (-0.05, -0.05, -0.05, -0.25, -0.25, -0.25, 0.0)
    high: tuple[float, ...] = (0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0)
    control_hz: float = 5.0

    def __post_init__(self) -> None:
        if len(self.low) != len(CONTINUOUS_DIMS) or len(self.high) != len(CONTINUOUS_DIMS):
            raise ValueError("ActionSpace.low/high need one bound per continuous dimension")
        if any(lo >= hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError("ActionSpace.low must be below high in every dimension")


@dataclass(frozen=True)
class Workspace:
    """Axis-aligned box (m, robot base frame) the end effector must stay inside."""

    low: tuple[float, float, float] = (-0.35, -0.35, 0.0)
    high: tuple[float, float, float] = (0.35, 0.35, 0.40)


@dataclass(frozen=True)
class SceneSpec:
    """What the arm must set up before an episode (from a protocol task + a scene seed)."""

    skill: str
    target: str
    objects: tuple[str, ...]
    destination: str | None = None
    distractors: tuple[str, ...] = ()
    background: str = "wood"
    environment: str = "kitchen_a"
    instruction: str = ""
    seed: int = 0
    station_needs: tuple[str, ...] = ()  # what the task needs of the station (informational here)
    operator_confirmed: bool = False  # the re-sent reset after an operator confirmed the set-up

    def to_dict(self) -> dict:
        return {
            "skill": self.skill,
            "target": self.target,
            "objects": list(self.objects),
            "destination": self.destination,
            "distractors": list(self.distractors),
            "background": self.background,
            "environment": self.environment,
            "instruction": self.instruction,
            "seed": self.seed,
            "station_needs": list(self.station_needs),
            "operator_confirmed": self.operator_confirmed,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SceneSpec:
        return cls(
            skill=str(d["skill"]),
            target=str(d["target"]),
            objects=tuple(d.get("objects", ())),
            destination=d.get("destination"),
            distractors=tuple(d.get("distractors", ())),
            background=str(d.get("background", "wood")),
            environment=str(d.get("environment", "kitchen_a")),
            instruction=str(d.get("instruction", "")),
            seed=int(d.get("seed", 0)),
            station_needs=tuple(d.get("station_needs", ())),
            operator_confirmed=bool(d.get("operator_confirmed", False)),
        )


@dataclass(frozen=True)
class Observation:
    """What the robot saw at one instant. Frames are HxWx3 uint8 RGB, keyed by camera name."""

    seq: int
    robot_monotonic_ns: int
    robot_wall_ns: int
    frames: dict[str, np.ndarray]
    proprio: tuple[float, ...]  # ee x y z roll pitch yaw, gripper opening
    episode_id: str = ""
    sim_success: bool | None = None  # the simulator's own outcome, None on real arms
    info: dict = field(default_factory=dict)
