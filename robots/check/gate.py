"""The bridge's rules for one act, as a pure decision (what the driver would receive).

BridgeServer._do_act refuses a command while the e-stop is latched, refuses NaN/inf, then
clips it with robots.safety.clip_command to the declared space (and, for ee_delta, to the
workspace box from the latest ee position). `gate_command` applies the same functions in the
same order, so the check sees exactly the command the bridge would hand the driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from robots.drivers.base import Capabilities
from robots.safety import NonFiniteAction, clip_command, is_finite_values
from robots.spaces import ActionSpec, SpaceKind
from robots.types import Workspace

_EE_XYZ = ("ee_x", "ee_y", "ee_z")


@dataclass(frozen=True)
class GateDecision:
    values: tuple[float, ...] | None  # the command the driver receives; None: refused
    refused: str = ""  # why it was refused (one line)
    clipped: tuple[bool, ...] = ()  # per dimension, when sent

    @property
    def sent(self) -> bool:
        return self.values is not None


def ee_indices(caps: Capabilities) -> tuple[int, int, int] | None:
    """Where the bridge reads the ee position for the workspace clip (ee_delta arms only)."""
    names = caps.state.names
    if caps.action_spec.kind is not SpaceKind.EE_DELTA or not set(_EE_XYZ) <= set(names):
        return None
    x, y, z = (names.index(n) for n in _EE_XYZ)
    return x, y, z


def ee_of(proprio: Sequence[float] | None, idx: tuple[int, int, int] | None) -> tuple[float, ...] | None:
    if proprio is None or idx is None or max(idx) >= len(proprio):
        return None
    return tuple(float(proprio[i]) for i in idx)


def gate_command(values: Sequence[float], spec: ActionSpec, workspace: Workspace,
                 ee_xyz: Sequence[float] | None, *, estop_latched: bool = False) -> GateDecision:
    """The bridge's decision for one act: refused (e-stop, NaN/inf, wrong length) or the
    clipped command."""
    if estop_latched:
        return GateDecision(None, "refused: e-stop latched")
    vals = tuple(values)
    if not is_finite_values(vals):
        return GateDecision(None, "refused: NaN/inf")
    try:
        clip = clip_command(vals, spec, workspace, ee_xyz)
    except NonFiniteAction as e:
        return GateDecision(None, f"refused: {e}")
    except ValueError as e:
        return GateDecision(None, f"refused: {e}")
    return GateDecision(clip.values, "", clip.clipped)
