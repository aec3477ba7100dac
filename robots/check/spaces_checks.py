"""Declared spaces are consistent: pure checks over a driver's Capabilities.

The spaces dataclasses (robots/spaces.py) validate themselves on construction; these checks
re-verify what matters to the bridge anyway (a driver may build its values in odd ways) and
add what construction cannot know: units that fit the space's kind, a gripper dimension
that looks like one, a state vector that carries what the bridge and policies need
(the ee position for the workspace clip, the joints an absolute target is compared with),
cameras the wire can carry, and capabilities that survive the protocol v2 `hello` map.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from robots.check.results import (
    CAPABILITIES,
    SPACES_ACTION,
    SPACES_CAMERAS,
    SPACES_GRIPPER,
    SPACES_STATE,
    CheckResult,
    fail,
    ok,
)
from robots.drivers.base import Capabilities
from robots.spaces import (
    ActionSpec,
    CameraRole,
    CameraSpec,
    GripperConvention,
    SpaceKind,
    StateSpec,
)

_CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ENCODINGS = ("raw", "jpeg")
MIN_SIDE, MAX_SIDE = 16, 8192
#: Per-step delta and velocity spaces: zero (no motion) must lie inside every motion dimension.
DELTA_KINDS = (SpaceKind.EE_DELTA, SpaceKind.JOINT_VELOCITY)
_POSE_UNITS = ("m", "m", "m", "rad", "rad", "rad")
_KIND_UNITS: dict[SpaceKind, tuple[str, ...]] = {
    SpaceKind.JOINT_POSITION: ("rad", "m"),
    SpaceKind.JOINT_VELOCITY: ("rad/s", "m/s"),
}
EE_XYZ = ("ee_x", "ee_y", "ee_z")


def _dupes(names: Sequence[str]) -> list[str]:
    return sorted(n for n, k in Counter(names).items() if k > 1)


def motion_dims(spec: ActionSpec) -> range:
    """The indices of the dimensions that move the arm (all but the gripper)."""
    return range(spec.dim - (0 if spec.gripper is GripperConvention.NONE else 1))


def check_capabilities(caps: object) -> CheckResult:
    """capabilities() returned a Capabilities that the bridge's `hello` map carries unchanged."""
    if not isinstance(caps, Capabilities):
        return fail(CAPABILITIES, f"capabilities() returned {type(caps).__name__}, not a Capabilities")
    from robots.protocol_payloads import capabilities_from_wire, capabilities_to_wire
    from robots.protocol_values import V2

    try:
        back = capabilities_from_wire(capabilities_to_wire(caps, V2), V2)
    except (ValueError, TypeError, AttributeError) as e:
        return fail(CAPABILITIES, f"the protocol v2 hello map cannot carry these capabilities: {e}")
    if back.spaces() != caps.spaces() or back.workspace != caps.workspace:
        return fail(CAPABILITIES, "the protocol v2 hello map changes these capabilities on the way "
                                  "(spaces or workspace differ after a round trip)")
    w = caps.workspace
    if not all(math.isfinite(v) for v in (*w.low, *w.high)) or any(
            lo >= hi for lo, hi in zip(w.low, w.high, strict=True)):
        return fail(CAPABILITIES, f"workspace box low {w.low} high {w.high}: needs finite low < high "
                                  "on every axis")
    spec = caps.action_spec
    return ok(CAPABILITIES, f"driver {caps.driver!r}: {spec.label} at {spec.control_hz:g} Hz, "
                            f"{len(caps.cameras)} camera(s), state[{len(caps.state.names)}], "
                            f"operator reset {'yes' if caps.needs_operator_reset else 'no'}")


def check_action(spec: ActionSpec) -> CheckResult:
    """Names, units, limits, dimension count and rate of the declared action space."""
    if not isinstance(spec.kind, SpaceKind):
        return fail(SPACES_ACTION, f"action kind {spec.kind!r} is not a SpaceKind")
    n = len(spec.names)
    if not 1 <= n <= 32:
        return fail(SPACES_ACTION, f"{spec.kind.value}: needs 1..32 dimensions, declares {n}")
    if any(not isinstance(x, str) or not x.strip() for x in spec.names):
        return fail(SPACES_ACTION, f"{spec.label}: every dimension needs a non-empty name: {list(spec.names)}")
    if dup := _dupes(spec.names):
        return fail(SPACES_ACTION, f"{spec.label}: dimension names not unique: {dup}")
    for what, seq in (("units", spec.units), ("low", spec.low), ("high", spec.high)):
        if len(seq) != n:
            return fail(SPACES_ACTION, f"{spec.label}: {what} has {len(seq)} entries for {n} names")
    if any(not isinstance(u, str) or not u.strip() for u in spec.units):
        return fail(SPACES_ACTION, f"{spec.label}: every dimension needs a unit: {list(spec.units)}")
    for i, (lo, hi) in enumerate(zip(spec.low, spec.high, strict=True)):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            return fail(SPACES_ACTION, f"{spec.label}: {spec.names[i]} limits [{lo}, {hi}]: "
                                       "need finite low < high")
    if not 0 < spec.control_hz <= 1000:
        return fail(SPACES_ACTION, f"{spec.label}: control_hz {spec.control_hz}: use (0, 1000]")
    moving = motion_dims(spec)
    units = tuple(spec.units[i] for i in moving)
    if spec.kind in (SpaceKind.EE_DELTA, SpaceKind.EE_POSE):
        if units[:6] != _POSE_UNITS[: len(units)] or len(units) < 3:
            return fail(SPACES_ACTION, f"{spec.label}: units {list(units)}: an end-effector space is "
                                       "x y z in m, then roll pitch yaw in rad")
    else:
        allowed = _KIND_UNITS[spec.kind]
        if bad := [f"{spec.names[i]} [{spec.units[i]}]" for i in moving if spec.units[i] not in allowed]:
            return fail(SPACES_ACTION, f"{spec.label}: units of {bad}: a {spec.kind.value} space "
                                       f"uses {list(allowed)}")
    zero_outside = [spec.names[i] for i in moving if not spec.low[i] <= 0.0 <= spec.high[i]]
    if spec.kind in DELTA_KINDS and zero_outside:
        return fail(SPACES_ACTION, f"{spec.label}: zero (no motion) is outside the limits of "
                                   f"{zero_outside}")
    return ok(SPACES_ACTION, f"{spec.label} {list(spec.names)} at {spec.control_hz:g} Hz")


def check_gripper(spec: ActionSpec) -> CheckResult:
    """The gripper convention names a last dimension that looks like a gripper, or none."""
    g = spec.gripper
    if not isinstance(g, GripperConvention):
        return fail(SPACES_GRIPPER, f"gripper convention {g!r} is not a GripperConvention")
    gripperish = [nm for nm in spec.names if "grip" in nm.lower()]
    if g is GripperConvention.NONE:
        if gripperish:
            return fail(SPACES_GRIPPER, f"convention none, but dimensions {gripperish} look like a gripper: "
                                        "declare open_is_1 or closed_is_1")
        return ok(SPACES_GRIPPER, "no gripper dimension")
    i = spec.dim - 1
    name, unit, lo, hi = spec.names[i], spec.units[i], spec.low[i], spec.high[i]
    if "grip" not in name.lower():
        return fail(SPACES_GRIPPER, f"convention {g.value}: the last dimension is the gripper, but it is "
                                    f"named {name!r}")
    if unit != "1" or not 0.0 <= lo < hi <= 1.0:
        return fail(SPACES_GRIPPER, f"{name}: unit {unit!r} limits [{lo}, {hi}]: a gripper is unit '1' "
                                    "within [0, 1]")
    meaning = "0 closed .. 1 open" if g is GripperConvention.OPEN_IS_1 else "0 open .. 1 closed"
    return ok(SPACES_GRIPPER, f"{name}: {meaning} ({g.value})")


def check_state(state: StateSpec, spec: ActionSpec) -> CheckResult:
    """State names unique and with units; they carry what the bridge and the action space need."""
    names, units = tuple(state.names), tuple(state.units)
    if not names:
        return fail(SPACES_STATE, "the state vector declares no fields")
    if any(not isinstance(x, str) or not x.strip() for x in names):
        return fail(SPACES_STATE, f"every state field needs a non-empty name: {list(names)}")
    if dup := _dupes(names):
        return fail(SPACES_STATE, f"state names not unique: {dup}")
    if len(units) != len(names):
        return fail(SPACES_STATE, f"state has {len(names)} names but {len(units)} units")
    no_ee = [n for n in EE_XYZ if n not in names]
    if spec.kind is SpaceKind.EE_DELTA and no_ee:
        return fail(SPACES_STATE, f"an ee_delta arm's state needs {list(EE_XYZ)} (the bridge keeps "
                                  f"the end effector in the workspace with them); missing {no_ee}")
    if spec.kind in (SpaceKind.JOINT_POSITION, SpaceKind.EE_POSE):
        idx = {n: i for i, n in enumerate(names)}
        if missing := [spec.names[i] for i in motion_dims(spec) if spec.names[i] not in idx]:
            return fail(SPACES_STATE, f"{spec.label} targets {missing} are not in the state "
                                      f"{list(names)}: feedback must report what is commanded")
        if bad := [f"{spec.names[i]} ({spec.units[i]} vs {units[idx[spec.names[i]]]})"
                   for i in motion_dims(spec) if units[idx[spec.names[i]]] != spec.units[i]]:
            return fail(SPACES_STATE, f"units of action and state differ for {bad}")
    return ok(SPACES_STATE, f"state[{len(names)}] {list(names)}")


def check_cameras(cameras: Sequence[CameraSpec]) -> CheckResult:
    """Cameras have unique wire-safe names, a role and a sensible resolution."""
    if not cameras:
        return fail(SPACES_CAMERAS, "no cameras declared: a policy needs at least one")
    names = [c.name for c in cameras]
    if dup := _dupes(names):
        return fail(SPACES_CAMERAS, f"camera names not unique: {dup}")
    for c in cameras:
        if not isinstance(c.name, str) or not _CAMERA_NAME.match(c.name):
            return fail(SPACES_CAMERAS, f"camera name {c.name!r}: use 1..64 of A-Z a-z 0-9 _ -")
        if not isinstance(c.role, CameraRole):
            return fail(SPACES_CAMERAS, f"camera {c.name!r}: role {c.role!r}: use external or wrist")
        if not all(isinstance(v, int) and MIN_SIDE <= v <= MAX_SIDE for v in (c.height, c.width)):
            return fail(SPACES_CAMERAS, f"camera {c.name!r}: {c.height}x{c.width} (HxW): each side "
                                        f"{MIN_SIDE}..{MAX_SIDE} pixels")
        if c.encoding not in _ENCODINGS:
            return fail(SPACES_CAMERAS, f"camera {c.name!r}: encoding {c.encoding!r}: use raw or jpeg")
    listed = ", ".join(f"{c.name} ({c.role.value}, {c.height}x{c.width})" for c in cameras)
    return ok(SPACES_CAMERAS, listed)


def check_spaces(caps: Capabilities) -> tuple[CheckResult, ...]:
    """The four spaces checks of one Capabilities, in report order."""
    spec = caps.action_spec
    return (check_action(spec), check_gripper(spec), check_state(caps.state, spec),
            check_cameras(caps.cameras))
