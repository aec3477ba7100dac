"""`bridge check`'s pure core: each check over hand-made values, no driver."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from robots.check import results as R
from robots.check.behaviour import (
    FrameInfo,
    ObservationSample,
    check_clip,
    check_nan,
    check_observe_cameras,
    check_observe_state,
    check_reset,
    out_of_limit_commands,
)
from robots.check.gate import GateDecision, gate_command
from robots.check.motion import (
    StopTrace,
    check_estop,
    check_hold,
    check_timing,
    motion_command,
    percentile,
)
from robots.check.spaces_checks import (
    check_action,
    check_cameras,
    check_capabilities,
    check_gripper,
    check_state,
)
from robots.drivers.base import Capabilities, ResetResult
from robots.spaces import (
    EE_STATE,
    RT2_ACTION,
    ActionSpec,
    CameraRole,
    CameraSpec,
    GripperConvention,
    SpaceKind,
    StateSpec,
)
from robots.types import Workspace

JOINTS = ActionSpec(SpaceKind.JOINT_POSITION, ("j1", "j2", "gripper"), ("rad", "rad", "1"),
                    (-3.0, -3.0, 0.0), (3.0, 3.0, 1.0), GripperConvention.OPEN_IS_1, 10.0)
JOINT_STATE = StateSpec(("j1", "j2", "gripper"), ("rad", "rad", "1"))
CAMS = (CameraSpec("main", 32, 48), CameraSpec("wrist", 16, 16, role=CameraRole.WRIST))
MS = 1_000_000


def unchecked(cls, **fields):
    """A frozen spaces value that skips its own validation (as a careless driver might build)."""
    obj = object.__new__(cls)
    for k, v in fields.items():
        object.__setattr__(obj, k, v)
    return obj


def sample(t_ms: float, proprio, frames=(("main", (32, 48, 3), "uint8"), ("wrist", (16, 16, 3), "uint8"))):
    return ObservationSample(int(t_ms * MS), tuple(FrameInfo(*f) for f in frames), tuple(proprio))


# --- results ------------------------------------------------------------------------------


def test_verdict_lines_and_json() -> None:
    rs = (R.ok("a", "fine"), R.skip("b"), R.fail("c", "broken\n  badly"))
    assert R.exit_code(rs) == 1 and R.exit_code(rs[:2]) == 0
    assert R.failure_lines(rs) == ("FAIL c: broken badly",)
    assert R.summary_line(rs) == "driver does NOT conform: 1 passed, 1 skipped, 1 failed"
    doc = R.results_to_json(rs, driver="sim", dry_run=True)
    assert doc["passed"] is False and [c["status"] for c in doc["checks"]] == ["pass", "skip", "fail"]
    assert rs[1].detail == "skipped (dry run)" and len(R.one_line("x" * 500)) == 240


# --- declared spaces ----------------------------------------------------------------------


def test_sim_like_spaces_pass() -> None:
    caps = Capabilities(driver="toy", cameras=CAMS)
    assert check_capabilities(caps).passed
    assert check_action(RT2_ACTION).passed and check_gripper(RT2_ACTION).passed
    assert check_state(EE_STATE, RT2_ACTION).passed and check_cameras(CAMS).passed
    assert check_action(JOINTS).passed and check_state(JOINT_STATE, JOINTS).passed


def test_capabilities_must_be_a_capabilities_with_a_valid_workspace() -> None:
    assert check_capabilities({"driver": "x"}).detail == "capabilities() returned dict, not a Capabilities"
    bad = Capabilities(driver="toy", cameras=CAMS, workspace=Workspace((0, 0, 0), (1, -1, 1)))
    r = check_capabilities(bad)
    assert not r.passed and r.detail.startswith("workspace box low")


@pytest.mark.parametrize(("spec", "reason"), [
    (unchecked(ActionSpec, kind=SpaceKind.JOINT_POSITION, names=("j1", "j1"), units=("rad", "rad"),
               low=(-1.0, -1.0), high=(1.0, 1.0), gripper=GripperConvention.NONE, control_hz=5.0),
     "dimension names not unique: ['j1']"),
    (replace(JOINTS, units=("deg", "rad", "1")), "units of ['j1 [deg]']"),
    (ActionSpec(SpaceKind.EE_DELTA, RT2_ACTION.names, ("m", "m", "m", "deg", "rad", "rad", "1"),
                RT2_ACTION.low, RT2_ACTION.high), "an end-effector space is x y z in m"),
    (ActionSpec(SpaceKind.JOINT_VELOCITY, ("j1", "gripper"), ("rad/s", "1"), (0.1, 0.0), (1.0, 1.0)),
     "zero (no motion) is outside the limits of ['j1']"),
    (unchecked(ActionSpec, kind=SpaceKind.JOINT_POSITION, names=("j1",), units=("rad",), low=(1.0,),
               high=(-1.0,), gripper=GripperConvention.NONE, control_hz=5.0), "need finite low < high"),
])
def test_inconsistent_action_spaces_fail(spec: ActionSpec, reason: str) -> None:
    r = check_action(spec)
    assert r.name == R.SPACES_ACTION and not r.passed and reason in r.detail


def test_gripper_convention_must_match_the_last_dimension() -> None:
    r = check_gripper(replace(JOINTS, names=("j1", "j2", "j3"), units=("rad", "rad", "rad")))
    assert not r.passed and "the last dimension is the gripper, but it is named 'j3'" in r.detail
    r = check_gripper(replace(JOINTS, gripper=GripperConvention.NONE))
    assert not r.passed and "look like a gripper" in r.detail
    r = check_gripper(replace(JOINTS, high=(3.0, 3.0, 255.0)))
    assert not r.passed and "within [0, 1]" in r.detail
    assert check_gripper(replace(JOINTS, gripper=GripperConvention.CLOSED_IS_1)).detail.startswith(
        "gripper: 0 open .. 1 closed")


def test_state_names_unique_and_matching_the_space() -> None:
    dup = unchecked(StateSpec, names=("j1", "j1", "gripper"), units=("rad", "rad", "1"))
    r = check_state(dup, JOINTS)
    assert (r.name, r.passed, r.detail) == (R.SPACES_STATE, False, "state names not unique: ['j1']")
    r = check_state(StateSpec(("j1", "gripper"), ("rad", "1")), JOINTS)
    assert not r.passed and "targets ['j2'] are not in the state" in r.detail
    r = check_state(StateSpec(("j1", "j2"), ("rad", "m")), JOINTS)
    assert not r.passed and "units of action and state differ for ['j2 (rad vs m)']" in r.detail
    r = check_state(StateSpec(("x", "y", "z"), ("m", "m", "m")), RT2_ACTION)
    assert not r.passed and "missing ['ee_x', 'ee_y', 'ee_z']" in r.detail


def test_cameras_need_unique_names_roles_and_sizes() -> None:
    assert check_cameras(()).detail.startswith("no cameras declared")
    assert "not unique: ['main']" in check_cameras((CAMS[0], CAMS[0])).detail
    assert "each side 16..8192" in check_cameras((CameraSpec("main", 8, 640),)).detail
    assert "use external or wrist" in check_cameras((unchecked(
        CameraSpec, name="main", height=32, width=32, encoding="raw", role="top"),)).detail
    assert "name 'front cam'" in check_cameras((CameraSpec("front cam", 32, 32),)).detail


# --- observe and reset --------------------------------------------------------------------


def test_observe_must_deliver_every_declared_camera_in_shape() -> None:
    good = sample(0, (0.0,) * 7)
    assert check_observe_cameras(CAMS, [good, good]).passed
    missing = sample(1, (0.0,) * 7, frames=(("main", (32, 48, 3), "uint8"),))
    r = check_observe_cameras(CAMS, [good, missing])
    assert r.detail == "camera 'wrist' missing from observe() #2 (frames: ['main'])"
    wrong = sample(1, (0.0,) * 7, frames=(("main", (48, 32, 3), "uint8"), ("wrist", (16, 16, 3), "uint8")))
    assert "gave uint8 (48, 32, 3), declared uint8 (32, 48, 3)" in check_observe_cameras(CAMS, [wrong]).detail
    floats = sample(1, (0.0,) * 7, frames=(("main", (32, 48, 3), "float32"), ("wrist", (16, 16, 3), "uint8")))
    assert "gave float32" in check_observe_cameras(CAMS, [floats]).detail
    extra = sample(1, (0.0,) * 7, frames=(*((f.camera, f.shape, f.dtype) for f in good.frames),
                                          ("depth", (32, 48, 3), "uint8")))
    assert "undeclared camera(s) ['depth']" in check_observe_cameras(CAMS, [extra]).detail


def test_observe_state_length_and_finiteness() -> None:
    assert check_observe_state(EE_STATE, [sample(0, (0.0,) * 7)]).passed
    r = check_observe_state(EE_STATE, [sample(0, (0.0,) * 6)])
    assert not r.passed and "state has 6 values; capabilities declare 7" in r.detail
    r = check_observe_state(EE_STATE, [sample(0, (0.0,) * 6 + (math.nan,))])
    assert not r.passed and "not finite (or not a number) in ['gripper']" in r.detail
    assert not check_observe_state(EE_STATE, []).passed


def test_reset_cases() -> None:
    assert check_reset(False, ResetResult(True), None).detail == "case: resets itself (ready on the first reset)"
    r = check_reset(True, ResetResult(False, "put the can on the mark"), ResetResult(True))
    assert r.passed and r.detail == "case: asks the operator (put the can on the mark)"
    r = check_reset(True, ResetResult(False, ""), None)
    assert not r.passed and r.detail.startswith("reset() returned not ready with no instructions")
    r = check_reset(True, ResetResult(False, "set up"), ResetResult(False, "set up"))
    assert not r.passed and "stays not ready after the operator confirmed" in r.detail
    r = check_reset(True, ResetResult(True), None)
    assert not r.passed and "before an operator confirmed" in r.detail
    assert check_reset(False, "RuntimeError: no arm", None).detail == "reset() raised RuntimeError: no arm"


# --- the gate, NaN and clipping -----------------------------------------------------------


def test_gate_refuses_non_finite_and_latched_and_clips_the_rest() -> None:
    ws = Workspace()
    assert gate_command((math.nan,) * 7, RT2_ACTION, ws, None).refused == "refused: NaN/inf"
    assert gate_command((0.0,) * 7, RT2_ACTION, ws, None, estop_latched=True).refused == "refused: e-stop latched"
    assert "action has 8 values" in gate_command((0.0,) * 8, RT2_ACTION, ws, None).refused
    d = gate_command((1.0,) * 6 + (2.0,), RT2_ACTION, ws, (0.34, 0.0, 0.2))
    assert d.values == pytest.approx((0.01, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0)) and all(d.clipped)


def test_nan_check() -> None:
    refused = GateDecision(None, "refused: NaN/inf")
    assert check_nan([("nan", refused)], 0).passed
    r = check_nan([("nan", refused), ("inf", GateDecision((0.0,), "", (False,)))], 1)
    assert not r.passed and r.detail == "non-finite command(s) ['inf'] were not refused"
    assert "received 2 command(s)" in check_nan([("nan", refused)], 2).detail


def test_clip_check_over_what_the_driver_received() -> None:
    sent = out_of_limit_commands(JOINTS)
    assert sent[0] == (63.0, 63.0, 11.0) and sent[1] == (-63.0, -63.0, -10.0)
    ds = [gate_command(v, JOINTS, Workspace(), None) for v in sent]
    received = [d.values for d in ds]
    r = check_clip(JOINTS, sent, ds, received, forwarded=False)
    assert r.passed and r.detail.endswith("(recorded, not executed)")
    r = check_clip(JOINTS, sent, ds, [(3.0, 3.5, 1.0), received[1]], forwarded=True)
    assert not r.passed and "outside the limits in ['j2']" in r.detail
    assert "received 1" in check_clip(JOINTS, sent, ds, received[:1], forwarded=True).detail
    assert check_clip(JOINTS, sent, ds, [], forwarded=True, error="OSError: x").detail == \
        "apply_command raised OSError: x"
    closed = replace(JOINTS, gripper=GripperConvention.CLOSED_IS_1)
    assert out_of_limit_commands(closed)[0][-1] == -10.0  # open (0) first


# --- motion: commands, stopping, timing ---------------------------------------------------


def test_motion_commands_are_small_and_keep_the_gripper() -> None:
    assert motion_command(RT2_ACTION, EE_STATE, (0, 0, 0.2, 0, 0, 0, 0.3), +1) == (
        0.0125, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3)
    assert motion_command(RT2_ACTION, EE_STATE, (0,) * 7, -1)[0] == -0.0125
    assert motion_command(JOINTS, JOINT_STATE, (1.0, 2.0, 1.0), +1) == pytest.approx((1.03, 2.0, 1.0))
    assert motion_command(JOINTS, JOINT_STATE, (2.99, 2.0, 1.0), +1) == pytest.approx((2.96, 2.0, 1.0))  # at the limit: back
    why = motion_command(JOINTS, StateSpec(("gripper",), ("1",)), (1.0,), +1)
    assert why == "the state does not report 'j1': no safe absolute target can be built"


STATE2 = StateSpec(("ee_x", "v_x"), ("m", "m/s"))


def trace(after: list[tuple[float, tuple[float, float]]], moving=((0.01, 0.1),)) -> StopTrace:
    return StopTrace((0.0, 0.0), tuple(sample(i, p) for i, p in enumerate(moving)), 100 * MS,
                     tuple(sample(t, p) for t, p in after))


def test_hold_passes_when_feedback_settles_within_one_period() -> None:
    tr = trace([(110, (0.020, 0.05)), (150, (0.021, 0.0)), (200, (0.021, 0.0)), (300, (0.021, 0.0))])
    r = check_hold(STATE2, tr, 0.2)
    assert r.passed and r.detail.startswith("hold: still within 50 ms (control period 200 ms)")


def test_hold_fails_when_the_arm_keeps_moving_or_stops_late_or_never_moved() -> None:
    moving = trace([(110 + 50 * i, (0.02 + 0.01 * i, 0.1)) for i in range(5)])
    r = check_hold(STATE2, moving, 0.2)
    assert (r.name, r.passed) == (R.HOLD_STOPS, False)
    assert r.detail == "still moving 210 ms after hold: ee_x changed by 0.01 m between the last two observations"
    late = trace([(150, (0.02, 0.1)), (350, (0.03, 0.0)), (400, (0.03, 0.0)), (500, (0.03, 0.0))])
    assert check_hold(STATE2, late, 0.2).detail == \
        "hold stopped the arm only after 250 ms; one control period is 200 ms"
    creeping = trace([(110, (0.02, 0.0)), (150, (0.02, 0.0)), (200, (0.02, 0.3)), (300, (0.02, 0.3))])
    assert check_hold(STATE2, creeping, 0.2).detail.startswith("still moving")  # velocity not ~0
    still = trace([(110, (0.0, 0.0))] * 4, moving=((0.0, 0.0),))
    assert check_hold(STATE2, still, 0.2).detail.startswith("the arm did not move after 1 motion commands")
    few = trace([(110, (0.02, 0.0))])
    assert check_hold(STATE2, few, 0.2).detail == "too few observations after hold (1) to see the arm stop"


def test_estop_also_needs_acts_refused_while_latched() -> None:
    tr = trace([(110, (0.02, 0.0)), (150, (0.02, 0.0)), (300, (0.02, 0.0))])
    refused = GateDecision(None, "refused: e-stop latched")
    assert check_estop(STATE2, tr, 0.2, refused, 0).passed
    r = check_estop(STATE2, tr, 0.2, GateDecision((0.0,), "", (False,)), 1)
    assert (r.name, r.passed, r.detail) == (R.ESTOP_STOPS, False,
                                            "an act reached the driver while the e-stop was latched")


def test_timing_percentiles_and_the_control_period() -> None:
    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile([5, 1, 3, 2, 4], 99) == 5
    r = check_timing([2 * MS] * 10, [1 * MS] * 10, 0.2, dry_run=False)
    assert r.passed and r.detail.startswith("observe p50 2.0 ms p99 2.0 ms (n=10), act p50 1.0 ms")
    r = check_timing([150 * MS] * 10, [80 * MS] * 10, 0.2, dry_run=False)
    assert not r.passed and r.detail.startswith("observe+act p50 230.0 ms exceeds the control period")
    r = check_timing([2 * MS] * 98 + [250 * MS] * 2, [1 * MS] * 10, 0.2, dry_run=False)
    assert r.passed and "WARNING observe+act p99 251.0 ms exceeds the period" in r.detail
    r = check_timing([2 * MS], [], 0.2, dry_run=True)
    assert r.passed and "act skipped (dry run)" in r.detail
    assert not check_timing([], [], 0.2, dry_run=True).passed
