"""Declared action, camera and state spaces, and the policy/arm match (pure: no I/O).

An arm declares what it accepts (bridge `hello` capabilities, docs/protocol.md §5): an
`ActionSpec` (kind, named dimensions, units, per-step limits, gripper convention, control
rate), its cameras (`CameraSpec`: name, role, resolution) and its state vector (`StateSpec`:
named fields). A policy declares what it emits and reads (`PolicyIO`). `match_pair` says,
before any trial is leased, whether the pair fits, which explicit adapters make it fit, or
why not, in one line naming both sides. Nothing is ever reinterpreted silently: the only
conversions are the `Adapter`s below, each a pure tested function.

RT-2's 8-number action (terminate + 7 end-effector deltas) is the `ee_delta` space with the
terminate flag carried beside the vector (`ArmCommand.terminate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from robots.types import CONTINUOUS_DIMS, ActionSpace


class SpaceKind(StrEnum):
    EE_DELTA = "ee_delta"  # per-step end-effector deltas (m, rad), RT-2's space
    EE_POSE = "ee_pose"  # absolute end-effector pose (m, rad), robot base frame
    JOINT_POSITION = "joint_position"  # absolute joint angles (rad)
    JOINT_VELOCITY = "joint_velocity"  # joint velocities (rad/s)


class GripperConvention(StrEnum):
    OPEN_IS_1 = "open_is_1"  # last dimension: 0 closed .. 1 open (RT-2, the sim)
    CLOSED_IS_1 = "closed_is_1"  # last dimension: 0 open .. 1 closed (DROID, openpi)
    NONE = "none"  # no gripper dimension


class CameraRole(StrEnum):
    EXTERNAL = "external"
    WRIST = "wrist"


class Adapter(StrEnum):
    """Explicit, well-defined conversions between a policy's and an arm's action space."""

    FLIP_GRIPPER = "flip_gripper"  # g -> 1 - g on the last dimension
    POSE_TO_DELTA = "pose_to_delta"  # absolute ee pose target -> per-step ee delta
    DELTA_TO_POSE = "delta_to_pose"  # per-step ee delta -> absolute ee pose target


@dataclass(frozen=True)
class ActionSpec:
    """One step's action vector as an arm accepts it or a policy emits it."""

    kind: SpaceKind
    names: tuple[str, ...]
    units: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    gripper: GripperConvention = GripperConvention.OPEN_IS_1
    control_hz: float = 5.0

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0 or n > 32:
            raise ValueError(f"action space {self.kind}: needs 1..32 dimensions, got {n}")
        if len(set(self.names)) != n:
            raise ValueError(f"action space {self.kind}: dimension names must be unique")
        for what, seq in (("units", self.units), ("low", self.low), ("high", self.high)):
            if len(seq) != n:
                raise ValueError(f"action space {self.kind}: {what} has {len(seq)} entries, names has {n}")
        if not all(math.isfinite(v) for v in (*self.low, *self.high)):
            raise ValueError(f"action space {self.kind}: limits must be finite")
        if any(lo >= hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError(f"action space {self.kind}: low must be below high in every dimension")
        if not (0 < self.control_hz <= 1000):
            raise ValueError(f"action space {self.kind}: control_hz must be in (0, 1000]")

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def label(self) -> str:
        """e.g. `joint_velocity[8]`: how errors and pages name the space."""
        return f"{self.kind.value}[{self.dim}]"

    @property
    def gripper_index(self) -> int | None:
        return None if self.gripper is GripperConvention.NONE else self.dim - 1

    def clip(self, values: Sequence[float]) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """Finite values clipped to [low, high] -> (clipped, indices that were clipped).
        The caller refuses non-finite values first."""
        if len(values) != self.dim:
            raise ValueError(f"{self.label}: action has {len(values)} values")
        out: list[float] = []
        hit: list[int] = []
        for i, (v, lo, hi) in enumerate(zip(values, self.low, self.high, strict=True)):
            c = lo if v < lo else hi if v > hi else float(v)
            if c != v:
                hit.append(i)
            out.append(c)
        return tuple(out), tuple(hit)


@dataclass(frozen=True)
class CameraSpec:
    name: str
    height: int
    width: int
    encoding: str = "raw"  # raw | jpeg (what the bridge sends by default)
    role: CameraRole = CameraRole.EXTERNAL


@dataclass(frozen=True)
class StateSpec:
    """The named fields of an observation's state vector, in order, with units."""

    names: tuple[str, ...]
    units: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.units):
            raise ValueError(f"state: {len(self.names)} names but {len(self.units)} units")
        if len(set(self.names)) != len(self.names):
            raise ValueError("state: field names must be unique")


@dataclass(frozen=True)
class ArmCommand:
    """What the bridge hands a driver for one step: a finite, clipped vector in the arm's
    declared action space, and RT-2's terminate flag (the episode ends after this step)."""

    values: tuple[float, ...]
    terminate: bool = False


#: RT-2's space: 7 continuous end-effector deltas + gripper (0 closed .. 1 open).
EE_DELTA_UNITS: tuple[str, ...] = ("m", "m", "m", "rad", "rad", "rad", "1")
EE_STATE = StateSpec(("ee_x", "ee_y", "ee_z", "ee_roll", "ee_pitch", "ee_yaw", "gripper"),
                     ("m", "m", "m", "rad", "rad", "rad", "1"))


def ee_delta_spec(space: ActionSpace | None = None) -> ActionSpec:
    """The RT-2 `ee_delta` ActionSpec of a version-1 ActionSpace (limits and rate kept)."""
    a = space or ActionSpace()
    return ActionSpec(SpaceKind.EE_DELTA, CONTINUOUS_DIMS, EE_DELTA_UNITS, tuple(a.low), tuple(a.high),
                      GripperConvention.OPEN_IS_1, a.control_hz)


RT2_ACTION = ee_delta_spec()


@dataclass(frozen=True)
class PolicyIO:
    """What a policy emits and reads. `state` names the state fields it needs (a subset of
    the arm's, any order); `cameras` the roles it needs, one camera each; `camera_names` the
    cameras it reads by name (e.g. a `camera: main` option; empty: it takes whatever camera
    the arm declares), each of which the arm must declare."""

    emits: SpaceKind = SpaceKind.EE_DELTA
    action_dim: int = 7
    gripper: GripperConvention = GripperConvention.OPEN_IS_1
    cameras: tuple[CameraRole, ...] = (CameraRole.EXTERNAL,)
    state: tuple[str, ...] = ()
    camera_names: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.emits.value}[{self.action_dim}]"


RT2_IO = PolicyIO()


@dataclass(frozen=True)
class ArmSpaces:
    action: ActionSpec
    cameras: tuple[CameraSpec, ...]
    state: StateSpec = EE_STATE


class SpaceMismatch(ValueError):
    """A policy/arm pair that does not fit; the message is one line naming both sides."""


def match_pair(policy: str, io: PolicyIO, arm: str, spaces: ArmSpaces) -> tuple[Adapter, ...]:
    """The adapters that make `policy` drive `arm`, in the order they apply; raises
    SpaceMismatch (one line, both sides named) when no explicit adapter makes them fit."""
    a = spaces.action
    adapters: list[Adapter] = []
    if io.emits is not a.kind:
        pair = (io.emits, a.kind)
        if pair == (SpaceKind.EE_POSE, SpaceKind.EE_DELTA):
            adapters.append(Adapter.POSE_TO_DELTA)
        elif pair == (SpaceKind.EE_DELTA, SpaceKind.EE_POSE):
            adapters.append(Adapter.DELTA_TO_POSE)
        else:
            raise SpaceMismatch(f"policy {policy} emits {io.label}; arm {arm} accepts {a.label}")
        if not _has_ee_pose(spaces.state):
            raise SpaceMismatch(f"policy {policy} emits {io.label}; arm {arm} accepts {a.label} and its "
                                f"state has no ee pose (ee_x..ee_yaw) to convert with")
    if io.action_dim != a.dim:
        raise SpaceMismatch(f"policy {policy} emits {io.label}; arm {arm} accepts {a.label}")
    pg, ag = io.gripper, a.gripper
    if (pg is GripperConvention.NONE) != (ag is GripperConvention.NONE):
        raise SpaceMismatch(f"policy {policy} emits {io.label} with gripper {pg.value}; arm {arm} "
                            f"accepts {a.label} with gripper {ag.value}")
    if pg is not ag:
        adapters.append(Adapter.FLIP_GRIPPER)
    have = ", ".join(f"{c.name} ({c.role.value})" for c in spaces.cameras) or "none"
    names = {c.name for c in spaces.cameras}
    for name in io.camera_names:
        if name not in names:
            raise SpaceMismatch(f"policy {policy} reads camera {name!r}; arm {arm} has cameras: {have}")
    roles = [c.role for c in spaces.cameras]
    for role in set(io.cameras):
        if roles.count(role) < io.cameras.count(role):
            raise SpaceMismatch(f"policy {policy} reads a {role.value} camera; arm {arm} has cameras: {have}")
    missing = [n for n in io.state if n not in spaces.state.names]
    if missing:
        raise SpaceMismatch(f"policy {policy} reads state {missing}; arm {arm} reports state "
                            f"{list(spaces.state.names)}")
    return tuple(adapters)


_EE_POSE = ("ee_x", "ee_y", "ee_z", "ee_roll", "ee_pitch", "ee_yaw")


def _has_ee_pose(state: StateSpec) -> bool:
    return all(n in state.names for n in _EE_POSE)


def ee_pose_of(state: StateSpec, values: Sequence[float]) -> tuple[float, ...]:
    """The 6 ee pose numbers of a state vector, by name."""
    idx = {n: i for i, n in enumerate(state.names)}
    return tuple(float(values[idx[n]]) for n in _EE_POSE)


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def apply_adapters(adapters: Sequence[Adapter], values: Sequence[float], *, state: StateSpec,
                   state_values: Sequence[float]) -> tuple[float, ...]:
    """Convert one policy action to the arm's space. Pure; angles wrap to (-pi, pi]."""
    out = [float(v) for v in values]
    for ad in adapters:
        if ad is Adapter.FLIP_GRIPPER:
            out[-1] = 1.0 - out[-1]
        elif ad is Adapter.POSE_TO_DELTA:
            pose = ee_pose_of(state, state_values)
            d = [t - p for t, p in zip(out[:6], pose, strict=True)]
            out[:6] = d[:3] + [_wrap(x) for x in d[3:]]
        elif ad is Adapter.DELTA_TO_POSE:
            pose = ee_pose_of(state, state_values)
            t = [p + d for p, d in zip(pose, out[:6], strict=True)]
            out[:6] = t[:3] + [_wrap(x) for x in t[3:]]
    return tuple(out)


def as_vector(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """A float64 1-D copy (for chunk arrays and plots)."""
    return np.asarray(values, dtype=np.float64).reshape(-1).copy()
