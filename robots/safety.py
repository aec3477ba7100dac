"""Robot-side safety as pure functions over frozen state (no zmq, no clocks, no I/O).

The BridgeServer owns one of each state value and replaces it on every event; the caller
passes the time in (monotonic or wall nanoseconds, as each function says), so every rule
here is unit-tested without sockets or sleeps.

- clip_command: any declared action space (robots.spaces.ActionSpec): per-step limits, then,
  for ee_delta, the workspace box given the current end-effector position. NaN/inf are
  refused (NonFiniteAction), never clipped into range; finite values of any size are clipped.
  clip_action is the same for an RT-2 Action (version-1 layout).
- watchdog: armed by an episode's first accepted act (not by reset), fires once after
  watchdog_ms without a valid command.
- e-stop latch: only an explicit re-arm releases it.
- command checks: seq must strictly increase; commands older than max_command_age_ms
  (or dated that far in the future) are dropped instead of executed late.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from robots.protocol_actions import action_values
from robots.spaces import ActionSpec, SpaceKind
from robots.types import CONTINUOUS_DIMS, Action, ActionSpace, Workspace

N_CONT = len(CONTINUOUS_DIMS)  # dx dy dz droll dpitch dyaw gripper


class NonFiniteAction(ValueError):
    """An action value is NaN or infinite: the command is refused, never executed."""


@dataclass(frozen=True)
class ClipResult:
    action: Action  # what will actually be applied
    clipped: tuple[bool, ...]  # one flag per continuous dimension (CONTINUOUS_DIMS order)

    @property
    def any_clipped(self) -> bool:
        return any(self.clipped)


def is_finite_values(values: Sequence[float]) -> bool:
    """False if any value is NaN or +-inf (or not a number). Large finite values are finite:
    they are clipped, not refused."""
    try:
        return all(map(math.isfinite, values))
    except TypeError:
        return False


def _workspace_bounds(lo: Sequence[float], hi: Sequence[float], workspace: Workspace,
                      ee_xyz: Sequence[float]) -> tuple[list[float], list[float]]:
    """Per-step limits of the first three (translation) dimensions narrowed so that the
    end effector stays inside the box; outside it, it may stay or move back in."""
    if not is_finite_values(tuple(ee_xyz)):
        raise NonFiniteAction(f"end-effector position is not finite: {tuple(ee_xyz)}")
    lo_ws, hi_ws = list(lo), list(hi)
    for i in range(3):
        ws_lo = min(workspace.low[i] - ee_xyz[i], 0.0)  # outside below: may stay or move in
        ws_hi = max(workspace.high[i] - ee_xyz[i], 0.0)  # outside above: may stay or move in
        new_lo, new_hi = max(lo_ws[i], ws_lo), min(hi_ws[i], ws_hi)
        if new_lo <= new_hi:
            lo_ws[i], hi_ws[i] = new_lo, new_hi
    return lo_ws, hi_ws


@dataclass(frozen=True)
class CommandClip:
    values: tuple[float, ...]  # what will actually be applied
    clipped: tuple[bool, ...]  # one flag per dimension of the declared space

    @property
    def any_clipped(self) -> bool:
        return any(self.clipped)


def clip_command(values: Sequence[float], spec: ActionSpec, workspace: Workspace,
                 ee_xyz: Sequence[float] | None = None) -> CommandClip:
    """Clip one step in the declared space: each dimension to spec.low/high; for ee_delta,
    also the translation so the end effector stays in the workspace (given ee_xyz). Raises
    NonFiniteAction on NaN/inf and ValueError on a vector of the wrong length."""
    if len(values) != spec.dim:
        raise ValueError(f"{spec.label}: action has {len(values)} values")
    if not is_finite_values(values):
        raise NonFiniteAction(f"action has NaN/inf values: {tuple(values)}")
    lo: Sequence[float] = spec.low
    hi: Sequence[float] = spec.high
    if spec.kind is SpaceKind.EE_DELTA and ee_xyz is not None and spec.dim >= 3:
        lo, hi = _workspace_bounds(lo, hi, workspace, ee_xyz)
    vals = tuple(map(float, values))
    out = tuple(map(min, map(max, vals, lo), hi))
    if out == vals:
        return CommandClip(vals, (False,) * spec.dim)
    return CommandClip(out, tuple(o != v for o, v in zip(out, vals, strict=True)))


def clip_action(
    action: Action,
    space: ActionSpace,
    workspace: Workspace,
    ee_xyz: tuple[float, float, float] | None = None,
) -> ClipResult:
    """Clip one action to the per-step limits and, given the end effector's position, keep
    the commanded target inside the workspace box.

    If the end effector is already outside the box on an axis, motion further out is
    stopped but motion back in is allowed (never a forced jump). Raises NonFiniteAction.
    """
    values = action_values(action)
    if not is_finite_values(values):
        raise NonFiniteAction(f"action has NaN/inf values: {values}")
    lo: Sequence[float] = space.low
    hi: Sequence[float] = space.high
    if ee_xyz is not None:
        lo, hi = _workspace_bounds(lo, hi, workspace, ee_xyz)
    out = tuple(map(min, map(max, values, lo), hi))
    if out == values:  # the common case: nothing to clip, keep the very same action
        return ClipResult(action, _NO_CLIP)
    flags = tuple(o != v for o, v in zip(out, values))
    return ClipResult(Action(action.terminate, *out), flags)


_NO_CLIP = (False,) * N_CONT


# --- watchdog -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchdogState:
    """Times are monotonic ns. `holding` means the arm is held (by the watchdog or a hold
    command) until the next valid command."""

    armed: bool = False
    last_valid_ns: int = 0
    holding: bool = False
    fires: int = 0
    last_fire_ns: int = 0
    last_fire_delay_ns: int = 0  # fire time - last valid command time, for reporting


def watchdog_arm(state: WatchdogState, now_ns: int) -> WatchdogState:
    """The episode's first accepted act: the clock starts now."""
    return replace(state, armed=True, last_valid_ns=now_ns, holding=False)


def watchdog_disarm(state: WatchdogState) -> WatchdogState:
    return replace(state, armed=False)


def watchdog_feed(state: WatchdogState, now_ns: int) -> WatchdogState:
    """A valid command was executed: restart the countdown, the arm moves again."""
    return WatchdogState(state.armed, now_ns, False, state.fires, state.last_fire_ns, state.last_fire_delay_ns)


def watchdog_mark_held(state: WatchdogState, now_ns: int) -> WatchdogState:
    """An explicit hold (or e-stop) holds the arm: counts as a valid command, no fire."""
    return replace(state, last_valid_ns=now_ns, holding=True)


def watchdog_deadline(state: WatchdogState, watchdog_ns: int) -> int | None:
    """Monotonic ns at which the watchdog would fire, or None when it cannot fire."""
    if not state.armed or state.holding:
        return None
    return state.last_valid_ns + watchdog_ns


def watchdog_tick(state: WatchdogState, now_ns: int, watchdog_ns: int) -> tuple[WatchdogState, bool]:
    """Returns (new state, fire). `fire` is True exactly once per silence: the caller must
    hold the arm."""
    deadline = watchdog_deadline(state, watchdog_ns)
    if deadline is None or now_ns < deadline:
        return state, False
    fired = replace(
        state,
        holding=True,
        fires=state.fires + 1,
        last_fire_ns=now_ns,
        last_fire_delay_ns=now_ns - state.last_valid_ns,
    )
    return fired, True


# --- e-stop latch -------------------------------------------------------------------------


@dataclass(frozen=True)
class EstopState:
    latched: bool = False
    reason: str = ""
    since_ns: int = 0
    count: int = 0
    rearms: int = 0


def estop_trigger(state: EstopState, reason: str, now_ns: int) -> EstopState:
    """Latch (again). A second e-stop while latched keeps the first time, updates the reason."""
    since = state.since_ns if state.latched else now_ns
    return replace(state, latched=True, reason=reason, since_ns=since, count=state.count + 1)


def estop_rearm(state: EstopState) -> EstopState:
    """The only way out of a latched e-stop."""
    if not state.latched:
        return state
    return replace(state, latched=False, reason="", since_ns=0, rearms=state.rearms + 1)


# --- sequence and age ---------------------------------------------------------------------


class CommandVerdict(StrEnum):
    OK = "ok"
    SEQ_NOT_INCREASING = "seq_not_increasing"
    TOO_OLD = "too_old"
    FROM_FUTURE = "from_future"


@dataclass(frozen=True)
class SeqState:
    last_seq: int = -1  # per episode; reset at episode start


def check_command(
    state: SeqState, seq: int, sent_wall_ns: int, now_wall_ns: int, max_age_ns: int
) -> CommandVerdict:
    """Judge a command before executing it. max_age_ns <= 0 disables the age check.

    sent_wall_ns is in the server's wall clock (the client corrects for its offset)."""
    if seq <= state.last_seq:
        return CommandVerdict.SEQ_NOT_INCREASING
    if max_age_ns > 0:
        age = now_wall_ns - sent_wall_ns
        if age > max_age_ns:
            return CommandVerdict.TOO_OLD
        if age < -max_age_ns:
            return CommandVerdict.FROM_FUTURE
    return CommandVerdict.OK


def accept_seq(state: SeqState, seq: int) -> SeqState:
    return SeqState(seq)
