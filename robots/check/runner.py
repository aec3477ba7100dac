"""The shell of `bridge check`: drive one driver the way the bridge will, record, judge.

Order: connect, capabilities and spaces, reset (and the operator-confirmed re-send when the
driver asks for an operator), a run of observations (timings), non-finite commands, out-of-
limit commands, hold, e-stop, timing; at the end the arm is held and the driver closed.

Commands go through `gate_command` (the bridge's own safety functions) and then through a
RecordingArm that spies on the driver's apply_command: it records what the driver receives
and forwards it, unless motion is suppressed (`--dry-run`). Out-of-limit commands in an
absolute space (joint_position, ee_pose) are recorded but never executed: their clipped
values are the joint limits themselves, far from where the arm is.

Motion checks are skipped (not run) when `dry_run` is set, and when an earlier check shows
the arm is not in a known state (spaces inconsistent, reset or observe failing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from robots.check import results as R
from robots.check.behaviour import (
    ObservationSample,
    check_clip,
    check_nan,
    check_observe_cameras,
    check_observe_state,
    check_reset,
    out_of_limit_commands,
    summarize,
)
from robots.check.gate import GateDecision, ee_indices, ee_of, gate_command
from robots.check.motion import StopTrace, check_estop, check_hold, check_timing, motion_command
from robots.check.spaces_checks import DELTA_KINDS, check_capabilities, check_spaces
from robots.drivers.base import Capabilities, ResetResult, RobotDriver
from robots.spaces import ArmCommand
from robots.types import SceneSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A scene every arm can be asked for (the sim sets it up; a real arm shows its instructions).
CHECK_SCENE = SceneSpec("pick", "coke_can", ("coke_can",), instruction="pick coke can", seed=0)


@dataclass(frozen=True)
class CheckOptions:
    dry_run: bool = False  # record commands, never forward them to the driver
    scene: SceneSpec = CHECK_SCENE
    motion_steps: int = 2  # motion commands before each hold / e-stop
    settle_periods: float = 2.5  # how long (in control periods) to watch the arm after a stop
    timing_samples: int = 20  # observe() calls in the timing run
    max_window_s: float = 5.0  # cap on the watch window for very slow control rates


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class CheckAborted(Exception):
    """A driver call failed: the phase stops and its check fails with this one line."""


@dataclass
class RecordingArm:
    """Spies on the driver's apply_command: what it received, how long it took."""

    driver: RobotDriver
    forward: bool
    received: list[tuple[float, ...]] = field(default_factory=list)
    act_ns: list[int] = field(default_factory=list)

    def apply_command(self, command: ArmCommand, *, execute: bool = True) -> None:
        self.received.append(tuple(command.values))
        if not (self.forward and execute):
            return
        t0 = time.perf_counter_ns()
        try:
            self.driver.apply_command(command)
        except Exception as e:
            raise CheckAborted(f"apply_command() raised {_err(e)}") from e
        self.act_ns.append(time.perf_counter_ns() - t0)


class _Session:
    """One check run's mutable state around a connected driver."""

    def __init__(self, driver: RobotDriver, caps: Capabilities, opts: CheckOptions) -> None:
        self.driver, self.caps, self.opts = driver, caps, opts
        self.spec = caps.action_spec
        self.period_s = 1.0 / self.spec.control_hz
        self.arm = RecordingArm(driver, forward=not opts.dry_run)
        self.samples: list[ObservationSample] = []
        self.observe_ns: list[int] = []
        self.latched = False
        self._ee_idx = ee_indices(caps)

    @property
    def last_proprio(self) -> tuple[float, ...] | None:
        return self.samples[-1].proprio if self.samples else None

    def observe(self) -> ObservationSample:
        t0 = time.perf_counter_ns()
        try:
            obs = self.driver.observe()
        except Exception as e:
            raise CheckAborted(f"observe() raised {_err(e)}") from e
        t1 = time.perf_counter_ns()
        self.observe_ns.append(t1 - t0)
        try:
            sample = summarize(obs, time.monotonic_ns())
        except Exception as e:
            raise CheckAborted(f"observe() returned {type(obs).__name__} that is not a "
                               f"DriverObservation: {_err(e)}") from e
        self.samples.append(sample)
        return sample

    def act(self, values: tuple[float, ...], *, execute: bool = True) -> GateDecision:
        d = gate_command(values, self.spec, self.caps.workspace, ee_of(self.last_proprio, self._ee_idx),
                         estop_latched=self.latched)
        if d.values is not None:
            self.arm.apply_command(ArmCommand(d.values), execute=execute)
        return d

    def first_sign(self) -> int:
        """The hold check moves +1 (the e-stop check -1, back) along the first motion
        dimension; an ee_delta arm past the workspace centre in x moves -1 first, inwards."""
        ee = ee_of(self.samples[0].proprio if self.samples else None, self._ee_idx)
        if ee is None:
            return +1
        w = self.caps.workspace
        return +1 if ee[0] <= (w.low[0] + w.high[0]) / 2 else -1

    def hold(self) -> int:
        """driver.hold(), as the bridge's hold and watchdog call it; the monotonic ns of the
        call."""
        return self._stop_call("hold", self.driver.hold)

    def estop(self) -> int:
        """driver.estop(), as the bridge's e-stop calls it (default: hold()); the monotonic ns
        of the call."""
        return self._stop_call("estop", self.driver.estop)

    @staticmethod
    def _stop_call(name: str, call: Callable[[], None]) -> int:
        t = time.monotonic_ns()
        try:
            call()
        except Exception as e:
            raise CheckAborted(f"{name}() raised {_err(e)}") from e
        return t

    def motion_then(self, stop: Callable[[], int], sign: int) -> StopTrace:
        """A few paced motion commands, then `stop`; watch the feedback for the window."""
        baseline = self.observe().proprio
        moving: list[ObservationSample] = []
        t0 = time.monotonic()
        for i in range(self.opts.motion_steps):
            _sleep_until(t0 + i * self.period_s)
            last = self.last_proprio or baseline
            cmd = motion_command(self.spec, self.caps.state, last, sign)
            if isinstance(cmd, str):
                raise CheckAborted(cmd)
            d = self.act(cmd)
            if not d.sent:
                raise CheckAborted(f"a motion command was {d.refused}")
            moving.append(self.observe())
        _sleep_until(t0 + self.opts.motion_steps * self.period_s - self.period_s / 2)
        hold_ns = stop()
        window_ns = int(min(self.opts.settle_periods * self.period_s, self.opts.max_window_s) * 1e9)
        after: list[ObservationSample] = []
        while len(after) < 400:
            after.append(self.observe())
            if after[-1].t_ns - hold_ns >= window_ns and len(after) >= 4:
                break
            time.sleep(self.period_s / 8)
        return StopTrace(baseline, tuple(moving), hold_ns, tuple(after))


def _sleep_until(t_monotonic: float) -> None:
    left = t_monotonic - time.monotonic()
    if left > 0:
        time.sleep(left)


def _call(fn: Callable[[], T]) -> T | str:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - any driver failure is this check's one-line reason
        return _err(e)


def run_checks(driver: RobotDriver, options: CheckOptions | None = None) -> tuple[R.CheckResult, ...]:
    """Connect the driver, run every check, hold and close it; the results in report order."""
    opts = options or CheckOptions()
    try:
        driver.connect()
    except Exception as e:  # noqa: BLE001 - reported as the first check's failure
        return (R.fail(R.CAPABILITIES, f"connect() raised {_err(e)}"),
                *(R.skip(n, "skipped (connect failed)") for n in R.CHECK_NAMES[1:]))
    try:
        return _run_connected(driver, opts)
    finally:
        try:
            driver.hold()
        except Exception:
            log.warning("hold() at the end of the check failed", exc_info=True)
        try:
            driver.close()
        except Exception:
            log.warning("close() at the end of the check failed", exc_info=True)


def _run_connected(driver: RobotDriver, opts: CheckOptions) -> tuple[R.CheckResult, ...]:
    caps = _call(driver.capabilities)
    if isinstance(caps, str):
        cap = R.fail(R.CAPABILITIES, f"capabilities() raised {caps}")
    else:
        cap = check_capabilities(caps)
    if not isinstance(caps, Capabilities) or not cap.passed:
        return (cap, *(R.skip(n, "skipped (capabilities failed)") for n in R.CHECK_NAMES[1:]))
    out: dict[str, R.CheckResult] = {R.CAPABILITIES: cap}
    out.update((r.name, r) for r in check_spaces(caps))
    spaces_ok = all(r.passed for r in out.values())
    s = _Session(driver, caps, opts)

    first = _call(lambda: driver.reset(opts.scene))
    confirmed: ResetResult | str | None = None
    if isinstance(first, ResetResult) and not first.ready and first.instructions.strip():
        scene = SceneSpec.from_dict({**opts.scene.to_dict(), "operator_confirmed": True})
        confirmed = _call(lambda: driver.reset(scene))
    out[R.RESET] = check_reset(caps.needs_operator_reset, first, confirmed)

    observe_error = ""
    try:
        for _ in range(max(1, opts.timing_samples)):
            s.observe()
    except CheckAborted as e:
        observe_error = str(e)
    if observe_error:
        out[R.OBSERVE_CAMERAS] = R.fail(R.OBSERVE_CAMERAS, observe_error)
        out[R.OBSERVE_STATE] = R.fail(R.OBSERVE_STATE, observe_error)
    else:
        out[R.OBSERVE_CAMERAS] = check_observe_cameras(caps.cameras, s.samples)
        out[R.OBSERVE_STATE] = check_observe_state(caps.state, s.samples)

    out[R.ACT_NAN] = _nan_check(s)
    ready = spaces_ok and out[R.RESET].passed and out[R.OBSERVE_STATE].passed
    why_not = ("skipped (declared spaces are inconsistent)" if not spaces_ok
               else "skipped (reset failed: the arm is not in a known state)" if not out[R.RESET].passed
               else "skipped (observe failed)")
    out[R.ACT_CLIP] = _clip_check(s) if ready else R.skip(R.ACT_CLIP, why_not)
    if not ready:
        out[R.HOLD_STOPS] = R.skip(R.HOLD_STOPS, why_not)
        out[R.ESTOP_STOPS] = R.skip(R.ESTOP_STOPS, why_not)
    elif opts.dry_run:
        out[R.HOLD_STOPS] = _dry_hold(s, R.HOLD_STOPS)
        out[R.ESTOP_STOPS] = _dry_hold(s, R.ESTOP_STOPS)
    else:
        out[R.HOLD_STOPS] = _hold_check(s)
        out[R.ESTOP_STOPS] = _estop_check(s) if out[R.HOLD_STOPS].passed else R.skip(
            R.ESTOP_STOPS, "skipped (hold did not stop the arm)")
    out[R.TIMING] = check_timing(s.observe_ns, s.arm.act_ns, s.period_s, dry_run=opts.dry_run)
    return tuple(out[n] for n in R.CHECK_NAMES)


def _nan_check(s: _Session) -> R.CheckResult:
    dim = s.spec.dim
    before = len(s.arm.received)
    tries = [("nan", (float("nan"),) * dim), ("+inf", (float("inf"),) + (0.0,) * (dim - 1)),
             ("-inf last", (0.0,) * (dim - 1) + (float("-inf"),)), (f"{dim + 1} values", (0.0,) * (dim + 1))]
    attempts = []
    for label, values in tries:
        try:
            attempts.append((label, s.act(values, execute=False)))
        except CheckAborted as e:
            return R.fail(R.ACT_NAN, str(e))
    return check_nan(attempts, len(s.arm.received) - before)


def _clip_check(s: _Session) -> R.CheckResult:
    execute = s.spec.kind in DELTA_KINDS  # absolute targets at the limits: recorded, not executed
    sent = out_of_limit_commands(s.spec)
    before = len(s.arm.received)
    decisions: list[GateDecision] = []
    try:
        for values in sent:
            if s.samples and execute:
                s.observe()  # the latest ee position, as the bridge reads it before a clip
            decisions.append(s.act(values, execute=execute))
        if execute and s.arm.forward:
            s.hold()  # a velocity arm keeps its last command: stop it
    except CheckAborted as e:
        return check_clip(s.spec, sent, decisions, s.arm.received[before:], forwarded=False, error=str(e))
    return check_clip(s.spec, sent, decisions, s.arm.received[before:],
                      forwarded=execute and s.arm.forward)


def _dry_hold(s: _Session, name: str) -> R.CheckResult:
    try:
        t0 = time.perf_counter_ns()
        s.hold()
        ms = (time.perf_counter_ns() - t0) / 1e6
    except CheckAborted as e:
        return R.fail(name, str(e))
    return R.skip(name, f"{R.DRY_RUN}: no motion sent; hold() returned in {ms:.1f} ms")


def _hold_check(s: _Session) -> R.CheckResult:
    try:
        trace = s.motion_then(s.hold, s.first_sign())
    except CheckAborted as e:
        return R.fail(R.HOLD_STOPS, str(e))
    return check_hold(s.caps.state, trace, s.period_s)


def _estop_check(s: _Session) -> R.CheckResult:
    def estop() -> int:
        s.latched = True  # the bridge latches first, then stops the arm (driver.estop())
        return s.estop()

    try:
        trace = s.motion_then(estop, -s.first_sign())  # back towards where the arm started
        before = len(s.arm.received)
        last = s.last_proprio or trace.baseline
        cmd = motion_command(s.spec, s.caps.state, last, -s.first_sign())
        latched = s.act(cmd if not isinstance(cmd, str) else tuple(s.spec.low), execute=False)
        received = len(s.arm.received) - before
    except CheckAborted as e:
        return R.fail(R.ESTOP_STOPS, str(e))
    finally:
        s.latched = False  # re-armed
    return check_estop(s.caps.state, trace, s.period_s, latched, received)
