"""Kinematics of the simulated arm: a UR5e from its published DH parameters (pure: numpy only).

DH parameters (standard / distal convention, T_i = Rz(theta_i) Tz(d_i) Tx(a_i) Rx(alpha_i)),
written from Universal Robots' published table "DH parameters for calculations of kinematics
and dynamics" (universal-robots.com, article "Parameters for calculations of kinematics and
dynamics", UR5e row):

    joint   d (m)     a (m)     alpha (rad)
    1       0.1625    0         pi/2
    2       0         -0.425    0
    3       0         -0.3922   0
    4       0.1333    0         pi/2
    5       0.0997    0         -pi/2
    6       0.0996    0         0

Joint ranges from the UR5e datasheet / ur_description joint_limits (elbow +-pi, the others
+-2 pi); maximum joint speed pi rad/s (the sim's driver uses a lower, configurable limit).

Frames. The tabletop world (robots/sim/world.py) is metres, table top z = 0, the sim's
Workspace box x, y in [-0.35, 0.35], z in [0, 0.40]. The arm's base sits at `BASE_XYZ` in that
frame, turned by `BASE_YAW` about z: on a 20 cm pedestal at the middle of the table's -y edge
(the right of the main camera's view), working towards +y; a straight tool of `TOOL` m (the
gripper's fingertip centre) on the flange. From there the gripper reaches, pointing down at
any yaw, every point of x, y in [-0.30, 0.30], z in [0, 0.40]: everything a task uses
(objects lie within 0.21 m of the centre, the drawer's handle within 0.23 m;
tests/unit/test_kinematics.py checks a grid). The box's far corners (+-0.35, 0.35) above
z 0.3 are ~0.92 m from the base, beyond a UR5e's reach with the gripper down, and so is a
thin slice just in front of the pedestal (|x| < 0.05, y = -0.35, z ~ 0.1): there the world's
ee stops where the arm can take it.

Inverse kinematics: damped least squares (Levenberg-Marquardt style) on the 6-D pose error,
from a seed configuration, a fixed number of iterations at most: pure and deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# --- UR5e, published DH table (see the module docstring) ---------------------------------
DH_D = (0.1625, 0.0, 0.0, 0.1333, 0.0997, 0.0996)
DH_A = (0.0, -0.425, -0.3922, 0.0, 0.0, 0.0)
DH_ALPHA = (math.pi / 2, 0.0, 0.0, math.pi / 2, -math.pi / 2, 0.0)
TWO_PI = 2 * math.pi
JOINT_LOW = (-TWO_PI, -TWO_PI, -math.pi, -TWO_PI, -TWO_PI, -TWO_PI)
JOINT_HIGH = (TWO_PI, TWO_PI, math.pi, TWO_PI, TWO_PI, TWO_PI)
JOINT_NAMES = ("j1", "j2", "j3", "j4", "j5", "j6")
MAX_JOINT_SPEED = math.pi  # rad/s, UR5e datasheet

# --- where the arm stands in the tabletop world -------------------------------------------
BASE_XYZ = (0.0, -0.50, 0.20)  # on a 20 cm pedestal at the table's -y edge, centred
BASE_YAW = math.pi / 2  # the arm works towards +y
TOOL = 0.16  # flange -> fingertip centre along the flange's z (a parallel gripper), m
R_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # tool z -> world -z
#: a seed on the "shoulder left, elbow up, wrist down" branch; `home_joints()` refines it
SEED = (0.0, -1.9, -1.4, -1.4, 1.5708, 0.0)


def _dh(theta: float, d: float, a: float, alpha: float) -> np.ndarray:
    ct, st, ca, sa = math.cos(theta), math.sin(theta), math.cos(alpha), math.sin(alpha)
    return np.array([[ct, -st * ca, st * sa, a * ct],
                     [st, ct * ca, -ct * sa, a * st],
                     [0.0, sa, ca, d],
                     [0.0, 0.0, 0.0, 1.0]])


def _base() -> np.ndarray:
    c, s = math.cos(BASE_YAW), math.sin(BASE_YAW)
    t = np.eye(4)
    t[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    t[:3, 3] = BASE_XYZ
    return t


_BASE = _base()
_TOOL = np.eye(4)
_TOOL[2, 3] = TOOL


def frames(q: Sequence[float] | np.ndarray) -> list[np.ndarray]:
    """World transforms of the base, each joint frame 1..6, and the tool point (8 x 4x4)."""
    if len(q) != 6:
        raise ValueError(f"UR5e kinematics: need 6 joint angles, got {len(q)}")
    out = [_BASE]
    t = _BASE
    for i in range(6):
        t = t @ _dh(float(q[i]), DH_D[i], DH_A[i], DH_ALPHA[i])
        out.append(t)
    out.append(t @ _TOOL)
    return out


def fk(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """The tool's 4x4 pose in the tabletop world frame."""
    return frames(q)[-1]


def rpy_of(r: np.ndarray) -> tuple[float, float, float]:
    """(roll, pitch, yaw) of a tool rotation, in the world's convention (see the docstring)."""
    m = r @ R_DOWN.T  # R = Rz(yaw) Ry(pitch) Rx(roll) R_DOWN
    pitch = math.atan2(-m[2, 0], math.hypot(m[0, 0], m[1, 0]))
    roll = math.atan2(m[2, 1], m[2, 2])
    yaw = math.atan2(m[1, 0], m[0, 0])
    return roll, pitch, yaw


def rot_of(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx @ R_DOWN


def ee_pose(q: Sequence[float] | np.ndarray) -> tuple[float, float, float, float, float, float]:
    """The world's ee pose (x, y, z, roll, pitch, yaw) of a joint configuration."""
    t = fk(q)
    return (float(t[0, 3]), float(t[1, 3]), float(t[2, 3]), *rpy_of(t[:3, :3]))


def jacobian(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Geometric Jacobian (6 x 6) of the tool point in the world frame: rows vx vy vz wx wy wz."""
    fs = frames(q)
    p = fs[-1][:3, 3]
    j = np.zeros((6, 6))
    for i in range(6):
        z, o = fs[i][:3, 2], fs[i][:3, 3]  # joint i+1 turns about z of frame i
        j[:3, i] = np.cross(z, p - o)
        j[3:, i] = z
    return j


def _rot_err(r_target: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Axis-angle vector (world frame) rotating r onto r_target."""
    e = r_target @ r.T
    cos = max(-1.0, min(1.0, (np.trace(e) - 1.0) / 2.0))
    angle = math.acos(cos)
    v = np.array([e[2, 1] - e[1, 2], e[0, 2] - e[2, 0], e[1, 0] - e[0, 1]])
    s = math.sin(angle)
    if s < 1e-9:
        if cos > 0:
            return 0.5 * v
        # 180 degrees: the axis from the symmetric part
        w, vecs = np.linalg.eigh((e + e.T) / 2)
        return angle * vecs[:, int(np.argmax(w))]
    return angle / (2 * s) * v


@dataclass(frozen=True)
class IKResult:
    q: tuple[float, ...]
    pos_err: float  # m
    rot_err: float  # rad
    iterations: int

    @property
    def ok(self) -> bool:
        return self.pos_err < 1e-4 and self.rot_err < 1e-3


def ik(pose: Sequence[float], seed: Sequence[float], *, iters: int = 100, damping: float = 0.02,
       max_step: float = 0.3, tol: float = 1e-7) -> IKResult:
    """Joints that put the tool at `pose` (x, y, z, roll, pitch, yaw), from `seed`.

    Damped least squares: dq = J^T (J J^T + lambda^2 I)^-1 e, each step's largest joint change
    bounded by `max_step` rad, at most `iters` iterations, joints kept in their ranges. Pure
    and deterministic; the closest solution to the seed's branch. Check `.ok`."""
    if len(pose) != 6:
        raise ValueError(f"ik: pose needs x y z roll pitch yaw, got {len(pose)} numbers")
    p_t = np.asarray(pose[:3], dtype=np.float64)
    r_t = rot_of(*(float(v) for v in pose[3:]))
    q = np.asarray(seed, dtype=np.float64).copy()
    lo, hi = np.asarray(JOINT_LOW), np.asarray(JOINT_HIGH)
    lam2 = damping * damping
    n = 0
    for n in range(1, iters + 1):
        t = fk(q)
        e = np.concatenate([p_t - t[:3, 3], _rot_err(r_t, t[:3, :3])])
        if float(e @ e) < tol * tol:
            n -= 1
            break
        j = jacobian(q)
        dq = j.T @ np.linalg.solve(j @ j.T + lam2 * np.eye(6), e)
        big = float(np.max(np.abs(dq)))
        if big > max_step:
            dq *= max_step / big
        q = np.clip(q + dq, lo, hi)
    t = fk(q)
    pe = float(np.linalg.norm(p_t - t[:3, 3]))
    re = float(np.linalg.norm(_rot_err(r_t, t[:3, :3])))
    return IKResult(tuple(float(v) for v in q), pe, re, n)


@lru_cache(maxsize=8)
def home_joints(pose: tuple[float, ...] = (0.0, 0.0, 0.25, 0.0, 0.0, 0.0)) -> tuple[float, ...]:
    """The joints of the sim's home pose (world HOME), on the SEED's branch."""
    r = ik(pose, SEED, iters=300)
    if not r.ok:
        raise RuntimeError(f"UR5e kinematics: no IK solution for the home pose {pose} "
                           f"(error {r.pos_err:.4f} m, {r.rot_err:.4f} rad): check BASE_XYZ")
    return r.q
