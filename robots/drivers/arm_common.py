"""What the real-arm drivers (robots/drivers/ur.py, xarm.py) share: pure helpers and seams.

Pure parts (unit-tested without an SDK):
- rotations: RPY (roll, pitch, yaw; R = Rz(yaw) Ry(pitch) Rx(roll), the convention of the
  sim and of UR's `rpy2rotvec`) <-> rotation vector (axis * angle, what UR poses carry);
- clipping to an arm's own limits: a vector to [low, high] (which names were hit), a joint
  velocity so that one control period cannot carry a joint past its range, an absolute
  target at most `max_step` from where the arm is;
- the gripper conventions: a policy's gripper value <-> the gripper's closed fraction
  (0 open .. 1 closed);
- `SentCommand`: what a driver really sent to its SDK (call, values in the SDK's units, the
  dimensions the driver clipped beyond the bridge), reported in `observe().info["sent"]`;
- `operator_instructions(scene)`: the text a real arm's not-ready reset shows.

Seams (how a lab plugs hardware in; a test plugs fakes in):
- `FrameSource`: an object with `read() -> {camera name: HxWx3 uint8 RGB}` and `close()`. A
  driver config's `cameras:` list holds robots/drivers/cameras.py's camera configs (`kind:
  opencv | realsense`); `open_frame_source` builds its CameraRig, unless a `camera_source:
  "package.module:Factory"` (called with the tuple of CameraSpec) or a source passed to the
  driver replaces it;
- `GripperPort`: `move(closed: float)` (0 open .. 1 closed), `closed() -> float`, `close()`,
  for arms whose SDK has no gripper call (UR: a Robotiq or any gripper the lab wraps).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from robots.spaces import ActionSpec, CameraSpec, GripperConvention, SpaceKind
from robots.types import Action, SceneSpec


class DriverError(RuntimeError):
    """An SDK call failed or the arm refused motion; one line: what, where, what to do."""


# ------------------------------------------------------------------ seams
class FrameSource(Protocol):
    def read(self) -> Mapping[str, np.ndarray]: ...

    def close(self) -> None: ...


class GripperPort(Protocol):
    def move(self, closed: float) -> None: ...

    def closed(self) -> float: ...

    def close(self) -> None: ...


def load_factory(path: str, what: str) -> Any:
    """The callable named by `package.module:Factory` (a camera source, a gripper)."""
    mod, sep, attr = path.partition(":")
    if not sep or not mod or not attr:
        raise DriverError(f"{what} {path!r}: use package.module:Factory")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise DriverError(f"{what} {path!r} cannot be imported: {e}; install it or fix the path") from e


class CameraEntry(Protocol):
    """A camera as a driver config declares it (robots/drivers/cameras.py's CameraConfig)."""

    name: str

    def spec(self) -> CameraSpec: ...


def camera_specs(cameras: Sequence[CameraEntry]) -> tuple[CameraSpec, ...]:
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise ValueError(f"camera names must be unique: {names}")
    return tuple(c.spec() for c in cameras)


def open_frame_source(given: FrameSource | None, camera_source: str | None, cameras: Sequence[Any],
                      specs: tuple[CameraSpec, ...]) -> FrameSource | None:
    """The frames of a driver's declared cameras: a source passed in (tests), else a
    `camera_source` factory called with the specs, else robots/drivers/cameras.py's CameraRig
    over the config's `cameras` (OpenCV / RealSense), opened here; None without cameras."""
    if given is not None:
        return given
    if camera_source is not None:
        return load_factory(camera_source, "camera_source")(specs)
    if not cameras:
        return None
    from robots.drivers.cameras import CameraRig

    rig = CameraRig(cameras)
    rig.open()
    return rig


def read_frames(source: FrameSource | None, cameras: Sequence[CameraSpec]) -> dict[str, np.ndarray]:
    """The latest frame of every declared camera (none declared: no frames)."""
    if not cameras:
        return {}
    if source is None:
        raise DriverError("cameras are declared but no frame source is open: call connect() first")
    frames = dict(source.read())
    if missing := [c.name for c in cameras if c.name not in frames]:
        raise DriverError(f"the camera source returned no frame for {missing}; check the cameras")
    return {c.name: frames[c.name] for c in cameras}


# ------------------------------------------------------------------ what was sent
@dataclass(frozen=True)
class SentCommand:
    """One SDK call as it really went out (values in the SDK's own units)."""

    call: str
    values: tuple[float, ...]
    units: str
    driver_clipped: tuple[str, ...] = ()  # dimensions the driver clipped beyond the bridge
    gripper: float | None = None  # gripper closed fraction sent (None: unchanged)

    def to_info(self) -> dict[str, Any]:
        return {"call": self.call, "values": [float(v) for v in self.values], "units": self.units,
                "driver_clipped": list(self.driver_clipped), "gripper": self.gripper}


# ------------------------------------------------------------------ rotations
def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def matrix_to_rpy(m: np.ndarray) -> tuple[float, float, float]:
    pitch = math.atan2(-m[2, 0], math.hypot(m[0, 0], m[1, 0]))
    return math.atan2(m[2, 1], m[2, 2]), pitch, math.atan2(m[1, 0], m[0, 0])


def rotvec_to_matrix(rv: Sequence[float]) -> np.ndarray:
    v = np.asarray(rv, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * (kx @ kx)


def matrix_to_rotvec(m: np.ndarray) -> tuple[float, float, float]:
    """The rotation vector of a rotation matrix, accurate at every angle: the angle from
    atan2(sin, cos) (acos loses half the digits near 0 and pi), the axis from the
    antisymmetric part, or near pi, where that part vanishes, from the symmetric part with
    its sign taken from the antisymmetric part."""
    m = np.asarray(m, dtype=np.float64)
    a = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])  # 2 sin(angle) k
    sin = float(np.linalg.norm(a)) / 2.0
    cos = (float(np.trace(m)) - 1.0) / 2.0
    angle = math.atan2(sin, cos)
    if angle < 1e-12:
        return 0.0, 0.0, 0.0
    if cos > -0.5:
        axis = a / (2.0 * sin)
    else:  # (m + m^T)/2 - cos I = (1 - cos) k k^T
        b = (m + m.T) / 2.0 - cos * np.eye(3)
        i = int(np.argmax(np.diag(b)))
        axis = b[:, i] / math.sqrt(max(b[i, i], 1e-300))
        axis = axis / float(np.linalg.norm(axis))
        if float(axis @ a) < 0:
            axis = -axis
    return tuple(float(x) for x in axis * angle)  # type: ignore[return-value]


def rpy_to_rotvec(roll: float, pitch: float, yaw: float) -> tuple[float, float, float]:
    return matrix_to_rotvec(rpy_to_matrix(roll, pitch, yaw))


def rotvec_to_rpy(rv: Sequence[float]) -> tuple[float, float, float]:
    return matrix_to_rpy(rotvec_to_matrix(rv))


def wrap(a: float) -> float:
    """An angle in (-pi, pi]."""
    w = (a + math.pi) % (2 * math.pi) - math.pi
    return math.pi if w == -math.pi else w


# ------------------------------------------------------------------ the arm's own limits
def clip_vector(values: Sequence[float], low: Sequence[float], high: Sequence[float],
                names: Sequence[str]) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """Values clipped to [low, high]; the names of the dimensions that were clipped."""
    out, hit = [], []
    for v, lo, hi, n in zip(values, low, high, names, strict=True):
        c = min(max(float(v), lo), hi)
        if c != v:
            hit.append(n)
        out.append(c)
    return tuple(out), tuple(hit)


def guard_joint_velocity(q: Sequence[float], qd: Sequence[float], low: Sequence[float],
                         high: Sequence[float], period_s: float,
                         names: Sequence[str]) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """Joint velocities limited so that one control period keeps every joint inside its
    range (a joint at or past a limit may only move back inwards)."""
    out, hit = [], []
    for qi, v, lo, hi, n in zip(q, qd, low, high, names, strict=True):
        vmax = max(0.0, (hi - qi) / period_s)
        vmin = min(0.0, (lo - qi) / period_s)
        c = min(max(float(v), vmin), vmax)
        if c != v:
            hit.append(n)
        out.append(c)
    return tuple(out), tuple(hit)


def step_toward(current: Sequence[float], target: Sequence[float], max_step: Sequence[float],
                names: Sequence[str]) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """An absolute target at most `max_step` (per dimension) from the current value."""
    out, hit = [], []
    for c, t, m, n in zip(current, target, max_step, names, strict=True):
        s = min(max(float(t), c - m), c + m)
        if s != t:
            hit.append(n)
        out.append(s)
    return tuple(out), tuple(hit)


def check_ranges(arm: str, sheet_low: Sequence[float], sheet_high: Sequence[float],
                 joint_low: Sequence[float] | None, joint_high: Sequence[float] | None,
                 home: Sequence[float] | None, workspace_low: Sequence[float],
                 workspace_high: Sequence[float]) -> None:
    """A config's joint range overrides and home pose lie within the data sheet's ranges, and
    every low is below its high (ValueError naming the field)."""
    n = len(sheet_low)
    low, high = joint_low or sheet_low, joint_high or sheet_high
    for name, v, lo, hi in (("joint_low", joint_low, sheet_low, sheet_high),
                            ("joint_high", joint_high, sheet_low, sheet_high), ("home_joints", home, low, high)):
        if v is not None and (len(v) != n or any(not a <= x <= b for x, a, b in zip(v, lo, hi, strict=True))):
            raise ValueError(f"{name} {list(v)}: needs {n} values (rad) within the {arm} ranges "
                             f"{[round(x, 4) for x in lo]} .. {[round(x, 4) for x in hi]}")
    if any(a >= b for a, b in zip(low, high, strict=True)):
        raise ValueError("joint_low must be below joint_high on every joint")
    if any(a >= b for a, b in zip(workspace_low, workspace_high, strict=True)):
        raise ValueError("workspace_low must be below workspace_high on every axis")


def ee_delta_action(steps: Sequence[float], gripper: GripperConvention, control_hz: float) -> ActionSpec:
    """RT-2's ee_delta space with per-step limits +-steps (m, m, m, rad, rad, rad), plus a
    gripper dimension unless the convention is none."""
    g = 0 if gripper is GripperConvention.NONE else 1
    return ActionSpec(SpaceKind.EE_DELTA, ("dx", "dy", "dz", "droll", "dpitch", "dyaw", *("gripper",) * g),
                      ("m",) * 3 + ("rad",) * 3 + ("1",) * g, (*(-s for s in steps), *(0.0,) * g),
                      (*steps, *(1.0,) * g), gripper, control_hz)


def action_values(action: Action, convention: GripperConvention, gripper_sent: float | None) -> tuple[float, ...]:
    """An RT-2 Action as an ee_delta command vector: no gripper dimension on a gripperless arm;
    a NaN gripper (Action.hold()) keeps the gripper where it was last sent."""
    values = action.continuous()
    if convention is GripperConvention.NONE:
        return values[:6]
    if math.isnan(values[6]):
        return (*values[:6], from_closed(gripper_sent or 0.0, convention))
    return values


# ------------------------------------------------------------------ gripper conventions
def default_convention(space: str, given: str | None) -> GripperConvention:
    """An explicit convention wins; otherwise ee_delta arms speak RT-2's (open_is_1) and
    joint-space arms DROID's/openpi's (closed_is_1)."""
    if given is not None:
        return GripperConvention(given)
    return GripperConvention.OPEN_IS_1 if space == "ee_delta" else GripperConvention.CLOSED_IS_1


def to_closed(value: float, convention: GripperConvention) -> float:
    """A policy's gripper value (declared convention) -> closed fraction (0 open .. 1 closed)."""
    v = min(max(float(value), 0.0), 1.0)
    return 1.0 - v if convention is GripperConvention.OPEN_IS_1 else v


def from_closed(closed: float, convention: GripperConvention) -> float:
    """A closed fraction -> the declared convention (what the state's `gripper` reports)."""
    c = min(max(float(closed), 0.0), 1.0)
    return 1.0 - c if convention is GripperConvention.OPEN_IS_1 else c


# ------------------------------------------------------------------ resets
def operator_instructions(scene: SceneSpec, arm: str) -> str:
    objects = ", ".join(scene.objects) or "(none)"
    distractors = ", ".join(scene.distractors) or "(none)"
    return (f"{arm}: set up {scene.skill} with target {scene.target!r}; objects: {objects}; "
            f"distractors: {distractors}; destination: {scene.destination or '-'}. "
            "Keep clear of the workspace, hand on the e-stop, then confirm.")
