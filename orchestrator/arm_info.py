"""What a RobotActor answers across Ray (frozen dataclasses, never dicts), and how an arm's
declared spaces are kept in the store's `robots.capabilities` JSON (pure: no Ray, no SQL).

`ArmInfo` is an arm's answer to `hello` (capabilities with its declared spaces, the protocol
version negotiated, whether its e-stop is latched); `PrepareResult` its answer to a scene
reset. `spaces_json` / `spaces_of` write and read the declared spaces in the robots row, so
that `campaign create` can match policies against arms it is not connected to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from robots.spaces import (
    ActionSpec,
    ArmSpaces,
    CameraRole,
    CameraSpec,
    GripperConvention,
    PolicyIO,
    SpaceKind,
    SpaceMismatch,
    StateSpec,
    match_pair,
)


@dataclass(frozen=True)
class ArmInfo:
    """An arm's `hello`, as the runner uses it."""

    estopped: bool
    session_id: str
    driver: str
    spaces: ArmSpaces
    tags: tuple[str, ...] = ()
    needs_operator_reset: bool = False
    privileged_state: bool = False
    version: int | None = None  # the bridge protocol version negotiated (None: not said)
    pub_endpoint: str | None = None
    node_id: str | None = None

    @property
    def control_hz(self) -> float:
        return self.spaces.action.control_hz

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.spaces.cameras)

    def to_json(self) -> dict[str, Any]:
        """The robots.capabilities column (the Fleet page reads cameras, pub_endpoint)."""
        return {
            "estopped": self.estopped,
            "session_id": self.session_id,
            "driver": self.driver,
            "cameras": list(self.cameras),
            "tags": list(self.tags),
            "needs_operator_reset": self.needs_operator_reset,
            "privileged_state": self.privileged_state,
            "control_hz": self.control_hz,
            "pub_endpoint": self.pub_endpoint,
            "node_id": self.node_id,
            "version": self.version,
            "spaces": spaces_json(self.spaces),
        }


@dataclass(frozen=True)
class PrepareResult:
    """An arm's scene reset: ready, or waiting for an operator who follows `instructions`."""

    ready: bool
    instructions: str = ""


def spaces_json(sp: ArmSpaces) -> dict[str, Any]:
    a = sp.action
    return {
        "action": {"kind": a.kind.value, "names": list(a.names), "units": list(a.units),
                   "low": list(a.low), "high": list(a.high), "gripper": a.gripper.value,
                   "control_hz": a.control_hz},
        "cameras": [{"name": c.name, "height": c.height, "width": c.width,
                     "encoding": c.encoding, "role": c.role.value} for c in sp.cameras],
        "state": {"names": list(sp.state.names), "units": list(sp.state.units)},
    }


def spaces_of(capabilities: dict[str, Any] | None) -> ArmSpaces | None:
    """The declared spaces kept in a robots row (None: never recorded, or unreadable)."""
    raw = (capabilities or {}).get("spaces")
    if not isinstance(raw, dict):
        return None
    try:
        a = raw["action"]
        action = ActionSpec(SpaceKind(a["kind"]), tuple(a["names"]), tuple(a["units"]),
                            tuple(float(x) for x in a["low"]), tuple(float(x) for x in a["high"]),
                            GripperConvention(a["gripper"]), float(a["control_hz"]))
        cams = tuple(CameraSpec(c["name"], int(c["height"]), int(c["width"]),
                                c.get("encoding", "raw"), CameraRole(c.get("role", "external")))
                     for c in raw["cameras"])
        st = raw["state"]
        return ArmSpaces(action, cams, StateSpec(tuple(st["names"]), tuple(st["units"])))
    except (KeyError, TypeError, ValueError):
        return None


def unmatched_policies(policies: dict[str, PolicyIO],
                       arms: dict[str, ArmSpaces]) -> dict[str, list[str]]:
    """policy name -> the one-line mismatch of each arm, for every policy that matches none of
    `arms` (robots.spaces.match_pair; empty when every policy fits some arm, or no arm is
    known). What `campaign create` refuses and `campaign run` stops on."""
    out: dict[str, list[str]] = {}
    if not arms:
        return out
    for policy, io in policies.items():
        lines = []
        for arm, spaces in arms.items():
            try:
                match_pair(policy, io, arm, spaces)
            except SpaceMismatch as e:
                lines.append(str(e))
            else:
                break
        else:
            out[policy] = lines
    return out
