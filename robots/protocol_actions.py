"""RT-2 Action <-> values: the one place an `Action` becomes a vector and back. Part of
robots.protocol (import it from there, or from here where robots.protocol would be an import
cycle: policies/base.py). Pure: robots.types only.

An RT-2 action is the ee_delta[7] space's 7 values (dx dy dz droll dpitch dyaw gripper) plus
a terminate flag; on the wires that still speak RT-2's 8-vector (bridge protocol v1, the
policy data plane's `action` field) it travels as [terminate (1.0 / 0.0), 7 values] and a
received terminate is true at >= 0.5 (docs/protocol.md section 5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from robots.types import CONTINUOUS_DIMS, Action

RT2_DIM = len(CONTINUOUS_DIMS)  # 7 continuous values
RT2_WIRE_DIM = RT2_DIM + 1  # terminate first


def action_values(action: Action) -> tuple[float, ...]:
    """The 7 ee_delta values of an RT-2 action (terminate not included)."""
    return action.continuous()


def action_of(values: Sequence[float], terminate: bool = False) -> Action:
    """An RT-2 action from 7 ee_delta values; ValueError naming the count otherwise."""
    return Action.from_continuous(tuple(float(v) for v in values), terminate=bool(terminate))


def action_to_rt2_wire(action: Action) -> list[float]:
    """[terminate, 7 values]: RT-2's 8-vector."""
    return [1.0 if action.terminate else 0.0, *action.continuous()]


def action_from_rt2_wire(values: Sequence[float]) -> Action:
    """An RT-2 8-vector back to an Action (terminate at >= 0.5). Callers validate the length
    and types first (v_action8); a wrong length raises ValueError."""
    if len(values) != RT2_WIRE_DIM:
        raise ValueError(f"an RT-2 action has {RT2_WIRE_DIM} values, got {len(values)}")
    t = float(values[0])
    return action_of(values[1:], terminate=not math.isnan(t) and t >= 0.5)
