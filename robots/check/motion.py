"""Pure parts of the motion checks: a gentle motion command, "did it stop", and timings.

- motion_command: a small step in the declared space (a quarter of the per-step limit on the
  first motion dimension of a delta/velocity space; 0.03 rad or 1 cm from the current value
  on the first dimension of an absolute space), gripper kept where the state says it is.
- check_stop: from the driver's own feedback (observations after hold/e-stop, with the times
  they returned), the arm counts as stopped from the first observation after which the state
  no longer changes (within a per-unit tolerance) and velocity fields read ~0; it must be
  stopped within one control period of the hold call and stay so to the end of the window.
- check_timing: observe/act latency p50/p99; fails when observe + act (p50) exceeds the
  control period, and says so when p99 does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from robots.check.behaviour import ObservationSample
from robots.check.gate import GateDecision
from robots.check.results import ESTOP_STOPS, HOLD_STOPS, TIMING, CheckResult, fail, ok
from robots.check.spaces_checks import DELTA_KINDS, motion_dims
from robots.spaces import ActionSpec, GripperConvention, StateSpec

FRACTION_OF_LIMIT = 0.25  # delta/velocity spaces: a quarter of the per-step limit
ABSOLUTE_STEP = {"rad": 0.03, "m": 0.01}  # absolute spaces: per command, from the current value
_TOL = {"m": 5e-4, "rad": 2e-3, "m/s": 5e-3, "rad/s": 2e-2, "1": 1e-2}
_DEFAULT_TOL = 1e-3


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


def motion_command(spec: ActionSpec, state: StateSpec, proprio: Sequence[float],
                   sign: int) -> tuple[float, ...] | str:
    """A small motion step (direction `sign` +1/-1) or, when none can be built safely, why."""
    idx = {n: i for i, n in enumerate(state.names)}
    moving = set(motion_dims(spec))
    first = min(moving) if moving else None
    if first is None:
        return "the action space has no motion dimension"
    out: list[float] = []
    for i in range(spec.dim):
        lo, hi = spec.low[i], spec.high[i]
        if i not in moving:  # the gripper: keep it as the state reports it, else open it
            g = idx.get("gripper")
            if g is not None and g < len(proprio) and math.isfinite(proprio[g]):
                out.append(_clamp(float(proprio[g]), lo, hi))
            else:
                out.append(hi if spec.gripper is GripperConvention.OPEN_IS_1 else lo)
            continue
        if spec.kind in DELTA_KINDS:
            v = 0.0 if i != first else FRACTION_OF_LIMIT * (hi if sign > 0 else lo)
            out.append(_clamp(v, lo, hi))
            continue
        j = idx.get(spec.names[i])
        if j is None or j >= len(proprio) or not math.isfinite(proprio[j]):
            return f"the state does not report {spec.names[i]!r}: no safe absolute target can be built"
        cur = float(proprio[j])
        if i == first:
            step = ABSOLUTE_STEP.get(spec.units[i], 0.02 * (hi - lo))
            target = cur + sign * step
            cur = target if lo <= target <= hi else cur - sign * step
        out.append(_clamp(cur, lo, hi))
    return tuple(out)


def tolerances(state: StateSpec) -> tuple[float, ...]:
    """How much each state field may change between two observations of a still arm."""
    return tuple(_TOL.get(u, _DEFAULT_TOL) for u in state.units)


def _velocity(state: StateSpec) -> tuple[bool, ...]:
    return tuple(u.endswith("/s") for u in state.units)


def _largest_change(a: Sequence[float], b: Sequence[float], tol: Sequence[float]) -> tuple[int, float]:
    """(field index, |change| / tolerance) of the field that changed most, relatively."""
    best, worst = 0, -1.0
    for i, (x, y, t) in enumerate(zip(a, b, tol, strict=False)):
        r = abs(y - x) / t if math.isfinite(x) and math.isfinite(y) else math.inf
        if r > worst:
            best, worst = i, r
    return best, worst


def _still(a: Sequence[float], b: Sequence[float], tol: Sequence[float], vel: Sequence[bool]) -> bool:
    if len(a) != len(b):
        return False
    return _largest_change(a, b, tol)[1] <= 1.0 and all(
        abs(x) <= t and abs(y) <= t for x, y, t, v in zip(a, b, tol, vel, strict=False) if v)


@dataclass(frozen=True)
class StopTrace:
    baseline: tuple[float, ...]  # the state before the motion commands
    moving: tuple[ObservationSample, ...]  # observations between the motion commands
    hold_ns: int  # monotonic ns when hold() (or the e-stop) was called
    after: tuple[ObservationSample, ...]  # observations after it, in time order


def stop_verdict(state: StateSpec, trace: StopTrace, period_s: float, what: str) -> tuple[bool, str]:
    """(stopped within one control period, one line saying what was seen)."""
    tol, vel = tolerances(state), _velocity(state)
    seen = (*trace.moving, *trace.after)
    if not any(not _still(trace.baseline, s.proprio, tol, vel) for s in seen):
        return False, (f"the arm did not move after {len(trace.moving)} motion commands (state unchanged "
                       f"within tolerance): cannot see {what} stop it")
    after = trace.after
    if len(after) < 3:
        return False, f"too few observations after {what} ({len(after)}) to see the arm stop"
    k = len(after) - 1
    while k > 0 and all(_still(after[k - 1].proprio, s.proprio, tol, vel) for s in after[k:]):
        k -= 1
    window_ms = (after[-1].t_ns - trace.hold_ns) / 1e6
    if k > len(after) - 3:
        i, _ = _largest_change(after[-2].proprio, after[-1].proprio, tol)
        name = state.names[i] if i < len(state.names) else f"#{i}"
        delta = abs(after[-1].proprio[i] - after[-2].proprio[i]) if i < len(after[-1].proprio) else math.nan
        unit = state.units[i] if i < len(state.units) else ""
        return False, (f"still moving {window_ms:.0f} ms after {what}: {name} changed by {delta:.4g} "
                       f"{unit} between the last two observations")
    stop_ms = (after[k].t_ns - trace.hold_ns) / 1e6
    period_ms = period_s * 1e3
    if stop_ms > period_ms:
        return False, (f"{what} stopped the arm only after {stop_ms:.0f} ms; one control period is "
                       f"{period_ms:.0f} ms")
    return True, (f"{what}: still within {stop_ms:.0f} ms (control period {period_ms:.0f} ms), "
                  f"{len(after)} observations over {window_ms:.0f} ms")


def check_hold(state: StateSpec, trace: StopTrace, period_s: float) -> CheckResult:
    passed, line = stop_verdict(state, trace, period_s, "hold")
    return ok(HOLD_STOPS, line) if passed else fail(HOLD_STOPS, line)


def check_estop(state: StateSpec, trace: StopTrace, period_s: float, while_latched: GateDecision,
                received_while_latched: int) -> CheckResult:
    """The e-stop stops the arm like hold, and no act reaches the driver while it is latched."""
    passed, line = stop_verdict(state, trace, period_s, "e-stop")
    if not passed:
        return fail(ESTOP_STOPS, line)
    if while_latched.sent or received_while_latched:
        return fail(ESTOP_STOPS, "an act reached the driver while the e-stop was latched")
    return ok(ESTOP_STOPS, f"{line}; acts refused while latched")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    s = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(s)))
    return s[min(rank, len(s)) - 1]


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms"


def check_timing(observe_ns: Sequence[int], act_ns: Sequence[int], period_s: float, *,
                 dry_run: bool) -> CheckResult:
    """observe()/apply_command() latency against the control period."""
    if not observe_ns:
        return fail(TIMING, "no observe() timing recorded")
    period_ns = period_s * 1e9
    o50, o99 = percentile(observe_ns, 50), percentile(observe_ns, 99)
    obs = f"observe p50 {_ms(o50)} p99 {_ms(o99)} (n={len(observe_ns)})"
    if not act_ns:
        why = "skipped (dry run)" if dry_run else "not measured"
        if o50 > period_ns:
            return fail(TIMING, f"{obs} exceeds the control period {_ms(period_ns)}; act {why}")
        return ok(TIMING, f"{obs}; act {why}; control period {_ms(period_ns)}")
    a50, a99 = percentile(act_ns, 50), percentile(act_ns, 99)
    line = f"{obs}, act p50 {_ms(a50)} p99 {_ms(a99)} (n={len(act_ns)}), control period {_ms(period_ns)}"
    if o50 + a50 > period_ns:
        return fail(TIMING, f"observe+act p50 {_ms(o50 + a50)} exceeds the control period: {line}")
    if o99 + a99 > period_ns:
        return ok(TIMING, f"{line}; WARNING observe+act p99 {_ms(o99 + a99)} exceeds the period")
    return ok(TIMING, line)
