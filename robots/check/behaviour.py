"""Pure checks over what the driver did: observations, resets, and the commands it received.

The shell (runner.py) records plain values (ObservationSample, ResetResult, GateDecision,
received commands) and these functions judge them, so every rule is unit-tested with
hand-made values and no driver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robots.check.gate import GateDecision
from robots.check.results import (
    ACT_CLIP,
    ACT_NAN,
    OBSERVE_CAMERAS,
    OBSERVE_STATE,
    RESET,
    CheckResult,
    fail,
    ok,
)
from robots.drivers.base import DriverObservation, ResetResult
from robots.spaces import ActionSpec, CameraSpec, GripperConvention, StateSpec


@dataclass(frozen=True)
class FrameInfo:
    camera: str
    shape: tuple[int, ...]  # () when the frame is not an ndarray
    dtype: str  # numpy dtype name, or the Python type's name when not an ndarray


@dataclass(frozen=True)
class ObservationSample:
    """One observe(): when it returned (monotonic ns), its frames' shapes, its state vector
    (non-numbers read as NaN)."""

    t_ns: int
    frames: tuple[FrameInfo, ...]
    proprio: tuple[float, ...]


def _num(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def summarize(obs: DriverObservation, t_ns: int) -> ObservationSample:
    frames = tuple(
        FrameInfo(str(name), tuple(int(x) for x in f.shape), f.dtype.name) if isinstance(f, np.ndarray)
        else FrameInfo(str(name), (), type(f).__name__)
        for name, f in dict(obs.frames).items())
    return ObservationSample(t_ns, frames, tuple(_num(v) for v in obs.proprio))


def check_observe_cameras(cameras: Sequence[CameraSpec], samples: Sequence[ObservationSample]) -> CheckResult:
    """Every observation has every declared camera as an HxWx3 uint8 frame of the declared
    size, and no undeclared camera."""
    if not samples:
        return fail(OBSERVE_CAMERAS, "no observation to check (observe() never returned)")
    declared = {c.name: c for c in cameras}
    for k, s in enumerate(samples):
        got = {f.camera: f for f in s.frames}
        for name, c in declared.items():
            f = got.get(name)
            if f is None:
                return fail(OBSERVE_CAMERAS, f"camera {name!r} missing from observe() #{k + 1} "
                                             f"(frames: {sorted(got) or 'none'})")
            want = (c.height, c.width, 3)
            if f.shape != want or f.dtype != "uint8":
                return fail(OBSERVE_CAMERAS, f"camera {name!r}: observe() #{k + 1} gave {f.dtype} "
                                             f"{f.shape or 'non-array'}, declared uint8 {want} (HxWx3 RGB)")
        if extra := sorted(set(got) - set(declared)):
            return fail(OBSERVE_CAMERAS, f"observe() #{k + 1} returned undeclared camera(s) {extra}")
    shapes = ", ".join(f"{c.name} {c.height}x{c.width}x3" for c in cameras)
    return ok(OBSERVE_CAMERAS, f"{len(samples)} observations: {shapes} uint8")


def check_observe_state(state: StateSpec, samples: Sequence[ObservationSample]) -> CheckResult:
    """Every observation's state vector has one finite number per declared state field."""
    if not samples:
        return fail(OBSERVE_STATE, "no observation to check (observe() never returned)")
    n = len(state.names)
    for k, s in enumerate(samples):
        if len(s.proprio) != n:
            return fail(OBSERVE_STATE, f"observe() #{k + 1} state has {len(s.proprio)} values; "
                                       f"capabilities declare {n}: {list(state.names)}")
        if bad := [state.names[i] for i, v in enumerate(s.proprio) if not math.isfinite(v)]:
            return fail(OBSERVE_STATE, f"observe() #{k + 1} state is not finite (or not a number) in {bad}")
    return ok(OBSERVE_STATE, f"{len(samples)} observations: {n} finite values, as declared")


def check_reset(needs_operator_reset: bool, first: ResetResult | str,
                confirmed: ResetResult | str | None) -> CheckResult:
    """reset() either readies the arm itself, or reports not-ready with instructions an
    operator can follow, and is ready once the orchestrator re-sends it confirmed. A string
    is the error the call raised."""
    if isinstance(first, str):
        return fail(RESET, f"reset() raised {first}")
    if not isinstance(first, ResetResult):
        return fail(RESET, f"reset() returned {type(first).__name__}, not a ResetResult")
    if first.ready:
        if needs_operator_reset:
            return fail(RESET, "capabilities declare needs_operator_reset, but reset() reported ready "
                               "before an operator confirmed the set-up")
        return ok(RESET, "case: resets itself (ready on the first reset)")
    if not first.instructions.strip():
        return fail(RESET, "reset() returned not ready with no instructions: an operator cannot know "
                           "what to set up")
    if isinstance(confirmed, str):
        return fail(RESET, f"reset() with operator_confirmed raised {confirmed}")
    if confirmed is None or not confirmed.ready:
        return fail(RESET, "reset() stays not ready after the operator confirmed the set-up "
                           "(operator_confirmed=True): the episode could never start")
    return ok(RESET, f"case: asks the operator ({first.instructions.strip()})")


def check_nan(attempts: Sequence[tuple[str, GateDecision]], received: int) -> CheckResult:
    """Every non-finite (or wrongly sized) command is refused before it reaches the driver."""
    if not attempts:
        return fail(ACT_NAN, "no non-finite command was tried")
    if through := [label for label, d in attempts if d.sent]:
        return fail(ACT_NAN, f"non-finite command(s) {through} were not refused")
    if received:
        return fail(ACT_NAN, f"the driver received {received} command(s) while only non-finite ones "
                             "were sent")
    labels = ", ".join(label for label, _ in attempts)
    return ok(ACT_NAN, f"{len(attempts)} non-finite/malformed commands refused ({labels}); none "
                       "reached the driver")


def out_of_limit_commands(spec: ActionSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Two commands far outside the limits: every motion dimension above `high`, then below
    `low` (so a per-step arm ends up near where it started); the gripper above its high
    (open_is_1: open) then below its low."""
    g = spec.gripper_index
    up = tuple(hi + 10.0 * (hi - lo) for lo, hi in zip(spec.low, spec.high, strict=True))
    down = tuple(lo - 10.0 * (hi - lo) for lo, hi in zip(spec.low, spec.high, strict=True))
    if g is not None and spec.gripper is GripperConvention.CLOSED_IS_1:  # open first
        up, down = (*up[:g], down[g]), (*down[:g], up[g])
    return up, down


def within(values: Sequence[float], spec: ActionSpec) -> list[str]:
    """The names of the dimensions outside [low, high] (or not finite)."""
    return [spec.names[i] for i, v in enumerate(values)
            if not (math.isfinite(v) and spec.low[i] <= v <= spec.high[i])]


def check_clip(spec: ActionSpec, sent: Sequence[Sequence[float]], decisions: Sequence[GateDecision],
               received: Sequence[Sequence[float]], *, forwarded: bool, error: str = "") -> CheckResult:
    """Out-of-limit commands reach the driver clipped into the declared limits, every dimension.
    `received`: what the (spied) driver's apply_command got; `forwarded` False: recorded only
    (dry run, or an absolute space whose limits are far-away targets)."""
    if error:
        return fail(ACT_CLIP, f"apply_command raised {error}")
    if refused := [d.refused for d in decisions if not d.sent]:
        return fail(ACT_CLIP, f"a finite out-of-limit command was refused instead of clipped: {refused[0]}")
    if len(received) != len(sent):
        return fail(ACT_CLIP, f"{len(sent)} out-of-limit commands sent, the driver received {len(received)}")
    for r in received:
        if len(r) != spec.dim:
            return fail(ACT_CLIP, f"the driver received {len(r)} values for {spec.label}")
        if bad := within(r, spec):
            return fail(ACT_CLIP, f"the driver received values outside the limits in {bad}: {list(r)}")
    unclipped = [spec.names[i] for i in range(spec.dim)
                 if not any(d.clipped and d.clipped[i] for d in decisions)]
    if unclipped:
        return fail(ACT_CLIP, f"dimensions {unclipped} were not clipped")
    how = "executed" if forwarded else "recorded, not executed"
    return ok(ACT_CLIP, f"{len(sent)} out-of-limit commands: all {spec.dim} dims clipped into the limits "
                        f"before the driver ({how})")
