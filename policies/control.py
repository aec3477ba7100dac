"""Small controller helpers shared by the scripted baselines (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from robots.types import Action, ActionSpace

TRAVEL_Z = 0.28  # safe height above every object and fixture of the tabletop


def step_towards(
    ee: Sequence[float],
    target: Sequence[float],
    space: ActionSpace,
    gripper: float,
    gain: float = 1.0,
) -> Action:
    """One step of (dx, dy, dz) towards `target`, scaled (keeping its direction) to fit the
    per-step limits."""
    d = [(float(t) - float(e)) * gain for t, e in zip(target[:3], ee[:3])]
    ratio = max(max(d[i] / space.high[i], d[i] / space.low[i]) for i in range(3))
    if ratio > 1.0:
        d = [v / ratio for v in d]
    return Action(dx=d[0], dy=d[1], dz=d[2], gripper=gripper)


def approach_from_above(
    ee: Sequence[float],
    target: Sequence[float],
    space: ActionSpace,
    gripper: float,
    travel_z: float = TRAVEL_Z,
    tol: float = 0.01,
) -> Action:
    """Rise to travel height, move over the target, then descend: never sweeps sideways low."""
    dxy = math.hypot(target[0] - ee[0], target[1] - ee[1])
    if dxy > tol:
        if ee[2] < travel_z - tol:
            return step_towards(ee, (ee[0], ee[1], travel_z), space, gripper)
        return step_towards(ee, (target[0], target[1], travel_z), space, gripper)
    return step_towards(ee, target, space, gripper)


def reached(ee: Sequence[float], target: Sequence[float], tol: float = 0.005) -> bool:
    return all(abs(float(t) - float(e)) <= tol for t, e in zip(target[:3], ee[:3]))


def add_noise(action: Action, rng: np.random.Generator, std: float, space: ActionSpace) -> Action:
    """Gaussian noise on the translation deltas (m), clipped to the action space."""
    if std <= 0:
        return action
    n = rng.normal(0.0, std, size=3)
    v = [action.dx + n[0], action.dy + n[1], action.dz + n[2]]
    v = [min(space.high[i], max(space.low[i], v[i])) for i in range(3)]
    return Action(
        action.terminate, v[0], v[1], v[2], action.droll, action.dpitch, action.dyaw, action.gripper
    )
