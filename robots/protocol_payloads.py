"""Typed payloads of the bridge wire: capabilities (v1 and v2 maps), the reset scene, act
request/reply fields and observations. Part of robots.protocol (import it from there);
docs/protocol.md sections 5 and 6.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from robots.drivers.base import CameraSpec, Capabilities
from robots.protocol_values import (
    MAX_ACTION_DIM,
    MAX_STATE_DIM,
    PROTOCOL_VERSION,
    V1,
    V2,
    ErrorCode,
    ProtocolError,
    Validator,
    v_action8,
    v_bool,
    v_flags7,
    v_int,
    v_list,
    v_map,
    v_maps,
    v_num,
    v_opt_bool,
    v_opt_str,
    v_str,
    v_strs,
    v_uint,
)
from robots.spaces import (
    EE_STATE,
    ActionSpec,
    CameraRole,
    GripperConvention,
    SpaceKind,
    StateSpec,
    ee_delta_spec,
)
from robots.types import ActionSpace, Observation, SceneSpec, Workspace

# --- typed payloads -----------------------------------------------------------------------


def v1_compatible(c: Capabilities) -> bool:
    """Whether version 1 can express this arm: RT-2's ee_delta[7] (gripper open_is_1) and the
    ee state `ee_x .. gripper` (docs/protocol.md section 3)."""
    return c.action_spec == ee_delta_spec(c.action_space) and c.state.names == EE_STATE.names


def capabilities_to_wire(c: Capabilities, version: int = PROTOCOL_VERSION) -> dict:
    """The `hello.capabilities` map in `version` (v1: the old map exactly). A v1 map of an arm
    v1 cannot express raises ProtocolError(UNSUPPORTED_VERSION)."""
    w = c.workspace
    common = {"workspace": {"low": list(w.low), "high": list(w.high)},
              "needs_operator_reset": c.needs_operator_reset, "privileged_state": c.privileged_state,
              "tags": list(c.tags)}
    if version == V1:
        if not v1_compatible(c):
            raise ProtocolError(f"arm {c.driver!r} accepts {c.action_spec.label}: protocol v1 only expresses "
                                "ee_delta[7] with the ee state; use protocol v2", ErrorCode.UNSUPPORTED_VERSION)
        a = c.action_space
        return {"driver": c.driver,
                "cameras": [{"name": s.name, "height": s.height, "width": s.width, "encoding": s.encoding}
                            for s in c.cameras],
                "action_space": {"low": list(a.low), "high": list(a.high), "control_hz": a.control_hz}, **common}
    sp = c.action_spec
    return {"driver": c.driver,
            "action": {"kind": sp.kind.value, "names": list(sp.names), "units": list(sp.units),
                       "low": list(sp.low), "high": list(sp.high), "gripper": sp.gripper.value,
                       "control_hz": sp.control_hz},
            "cameras": [{"name": s.name, "role": s.role.value, "height": s.height, "width": s.width,
                         "encoding": s.encoding} for s in c.cameras],
            "state": {"names": list(c.state.names), "units": list(c.state.units)}, **common}


def _enum(cls: Any, v: Any, name: str) -> Any:
    s = v_str(v, name)
    try:
        return cls(s)
    except ValueError:
        raise ProtocolError(f"field {name!r} must be one of {[m.value for m in cls]}, got {s[:64]!r}") from None


def _camera(c: dict, version: int) -> CameraSpec:
    h, w = v_uint(c["height"], "height"), v_uint(c["width"], "width")
    if not (h and w):
        raise ProtocolError("camera height and width must be > 0")
    enc = v_str(c["encoding"], "encoding")
    if enc not in ("raw", "jpeg"):
        raise ProtocolError(f"camera encoding must be raw or jpeg, got {enc[:64]!r}")
    role = _enum(CameraRole, c["role"], "role") if version >= V2 else CameraRole.EXTERNAL
    return CameraSpec(v_str(c["name"], "name"), h, w, enc, role)


def _action_spec(a: dict) -> ActionSpec:
    names = tuple(v_list(v_str, max_n=MAX_ACTION_DIM)(a["names"], "names"))
    nums = v_list(v_num, max_n=MAX_ACTION_DIM)
    try:
        return ActionSpec(_enum(SpaceKind, a["kind"], "kind"), names,
                          tuple(v_list(v_str, max_n=MAX_ACTION_DIM)(a["units"], "units")),
                          tuple(nums(a["low"], "low")), tuple(nums(a["high"], "high")),
                          _enum(GripperConvention, a["gripper"], "gripper"), v_num(a["control_hz"], "control_hz"))
    except ValueError as e:
        if isinstance(e, ProtocolError):
            raise
        raise ProtocolError(str(e)) from None


def capabilities_from_wire(d: Any, version: int = PROTOCOL_VERSION) -> Capabilities:
    """The inverse of capabilities_to_wire. An RT-2-shaped arm reads the same in both versions
    (`action` None, limits in `action_space`)."""
    try:
        d = v_map(d, "capabilities")
        cams = tuple(_camera(c, version) for c in v_maps(d["cameras"], "cameras"))
        if len({c.name for c in cams}) != len(cams):
            raise ProtocolError("camera names must be unique")
        w = v_map(d["workspace"], "workspace")
        f3 = v_list(v_num, 3)
        rest: dict[str, Any] = {
            "workspace": Workspace(tuple(f3(w["low"], "low")), tuple(f3(w["high"], "high"))),
            "needs_operator_reset": v_bool(d["needs_operator_reset"], "needs_operator_reset"),
            "privileged_state": v_bool(d["privileged_state"], "privileged_state"),
            "tags": tuple(v_strs(d["tags"], "tags"))}
        driver = v_str(d["driver"], "driver")
        if version == V1:
            a, f7 = v_map(d["action_space"], "action_space"), v_list(v_num, 7)
            space = ActionSpace(tuple(f7(a["low"], "low")), tuple(f7(a["high"], "high")),
                                v_num(a["control_hz"], "control_hz"))
            return Capabilities(driver, cams, space, **rest)
        spec = _action_spec(v_map(d["action"], "action"))
        st = v_map(d["state"], "state")
        sn, su = (tuple(v_list(v_str, max_n=MAX_STATE_DIM)(st[k], "state." + k)) for k in ("names", "units"))
        try:
            state = StateSpec(sn, su)
        except ValueError as e:
            raise ProtocolError(str(e)) from None
        if spec.kind is SpaceKind.EE_DELTA and spec.dim == 7:
            space = ActionSpace(spec.low, spec.high, spec.control_hz)
            if spec == ee_delta_spec(space):
                return Capabilities(driver, cams, space, state=state, **rest)
        space = ActionSpace(control_hz=spec.control_hz)
        return Capabilities(driver, cams, space, action=spec, state=state, **rest)
    except ProtocolError as e:
        raise ProtocolError(f"bad capabilities: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"bad capabilities: {type(e).__name__}: {e}") from e


# --- scene --------------------------------------------------------------------------------

#: The scene keys the orchestrator sends (docs/protocol.md section 5.4): key -> validator.
SCENE_KEYS: dict[str, Validator] = {
    "skill": v_str, "target": v_str, "objects": v_strs, "destination": v_opt_str, "distractors": v_strs,
    "background": v_str, "environment": v_str, "instruction": v_str, "seed": v_int,
    "station_needs": v_strs, "operator_confirmed": v_bool,
}
SCENE_REQUIRED = ("skill", "target")


def scene_from_wire(d: Any) -> SceneSpec:
    """`reset.scene` -> SceneSpec. Known keys are type-checked (BAD_MESSAGE), `skill` and
    `target` are required, unknown keys are ignored (not refused)."""
    d = v_map(d, "scene")
    for k in SCENE_REQUIRED:
        if k not in d:
            raise ProtocolError(f"scene misses required key {k!r}")
    got = {k: check(d[k], "scene." + k) for k, check in SCENE_KEYS.items() if k in d}
    for k in ("objects", "distractors", "station_needs"):
        got[k] = tuple(got.get(k, ()))
    return SceneSpec(**got)


def scene_to_wire(scene: SceneSpec | dict) -> dict:
    """A SceneSpec's map; a dict passes as it is (extra keys are the orchestrator's business)."""
    return scene.to_dict() if isinstance(scene, SceneSpec) else dict(scene)


# --- act ----------------------------------------------------------------------------------


def act_request_fields(version: int, values: Sequence[float], terminate: bool, seq: int, sent_wall_ns: int,
                       episode_id: str) -> dict:
    """The fields of an `act` request. v1: `action` = [terminate, 7 values]."""
    vals = [float(x) for x in values]
    if version == V1:
        if len(vals) != 7:
            raise ValueError(f"protocol v1 acts carry 7 values (ee_delta), got {len(vals)}")
        return {"action": [1.0 if terminate else 0.0, *vals], "seq": seq, "sent_wall_ns": sent_wall_ns,
                "episode_id": episode_id}
    return {"action": vals, "terminate": bool(terminate), "seq": seq, "sent_wall_ns": sent_wall_ns,
            "episode_id": episode_id}



def act_reply_fields(version: int, applied: Sequence[float], terminate: bool, clipped: Sequence[bool]) -> dict:
    """`applied` / `clipped` (and v2 `terminate`) of an act reply."""
    vals = [float(x) for x in applied]
    if version == V1:
        return {"applied": [1.0 if terminate else 0.0, *vals], "clipped": list(clipped)}
    return {"applied": vals, "terminate": bool(terminate), "clipped": list(clipped)}


def act_reply_from_wire(fields: dict, version: int, dim: int) -> tuple[tuple[float, ...], bool, tuple[bool, ...]]:
    """-> (applied values, terminate, clipped flags), strictly: dim values and dim flags."""
    if version == V1:
        a = v_action8(fields.get("applied"), "applied")
        return tuple(map(float, a[1:])), a[0] >= 0.5, tuple(v_flags7(fields.get("clipped"), "clipped"))
    vals = v_list(v_num, dim)(fields.get("applied"), "applied")
    flags = v_list(v_bool, dim)(fields.get("clipped"), "clipped")
    return tuple(map(float, vals)), v_bool(fields.get("terminate"), "terminate"), tuple(flags)


def sanitize(obj: Any, depth: int = 0) -> Any:
    """Keep only msgpack-safe plain data (for driver `info` dicts): numpy scalars/arrays
    become numbers/lists, anything else becomes its repr, depth is bounded."""
    if obj is None or type(obj) in (bool, int, float, str, bytes):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if depth > 8:
        return repr(obj)[:200]
    if isinstance(obj, dict):
        return {str(k): sanitize(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v, depth + 1) for v in obj]
    if isinstance(obj, np.ndarray) and obj.size <= 4096:
        return obj.tolist()
    return repr(obj)[:200]


def observation_wire(seq: int, mono_ns: int, wall_ns: int, state: Sequence[float], sim_success: bool | None,
                     episode_id: str, info: dict, version: int = PROTOCOL_VERSION) -> dict:
    """The `obs` map of observe/act replies (docs/protocol.md section 6): the state vector is
    `state` in v2, `proprio` in v1."""
    return {"seq": seq, "mono_ns": mono_ns, "wall_ns": wall_ns,
            "state" if version >= V2 else "proprio": [float(x) for x in state],
            "sim_success": sim_success, "episode_id": episode_id, "info": sanitize(info) if info else {}}


def observation_to_wire(obs: Observation, version: int = PROTOCOL_VERSION) -> dict:
    return observation_wire(obs.seq, obs.robot_monotonic_ns, obs.robot_wall_ns, obs.proprio, obs.sim_success,
                            obs.episode_id, obs.info, version)


def observation_from_wire(d: Any, frames: dict[str, np.ndarray], version: int = PROTOCOL_VERSION,
                          state_dim: int | None = None) -> Observation:
    """`obs` -> Observation (its `proprio` is the state vector). state_dim: the declared
    number of state fields, checked when given."""
    d = v_map(d, "obs")
    key = "state" if version >= V2 else "proprio"
    try:
        state = v_list(v_num, state_dim, MAX_STATE_DIM)(d[key], key)
        return Observation(v_uint(d["seq"], "seq"), v_int(d["mono_ns"], "mono_ns"), v_int(d["wall_ns"], "wall_ns"),
                           frames, tuple(map(float, state)), v_str(d["episode_id"], "episode_id"),
                           v_opt_bool(d["sim_success"], "sim_success"), v_map(d["info"], "info"))
    except KeyError as e:
        raise ProtocolError(f"observation misses field {e}") from None

