"""Scheduling decisions (pure): which pending trial goes to which idle arm.

Rules, in order:
1. Priority, then campaign age, then the plan's order: the candidates arrive sorted so, and
   an arm never takes a trial of a lower-priority campaign while it can run a higher one.
2. Capability: a trial runs only on an arm whose station offers every capability the task
   needs (e.g. "drawer").
3. Setup affinity: within a short look-ahead window of the plan (so the paired, interleaved
   order is kept), an arm prefers a trial whose scene setup equals the one it has now,
   which saves a reset by the operator on real arms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TrialCandidate:
    """A pending trial, with what the scheduler needs to place it on an arm."""

    trial_id: int
    campaign_id: int
    campaign_priority: int
    campaign_created_ns: int
    plan_order: int
    task_key: str
    station_needs: tuple[str, ...]
    scene_key: str  # equal keys = same physical setup (objects, background, environment)
    policy_name: str
    policy_id: int


@dataclass(frozen=True)
class ArmState:
    name: str
    station: str
    capabilities: frozenset[str]
    online: bool = True
    busy: bool = False
    scene_key: str | None = None  # setup currently on the table


@dataclass(frozen=True)
class Assignment:
    trial_id: int
    arm: str
    reuses_setup: bool


def can_run(arm: ArmState, trial: TrialCandidate) -> bool:
    return set(trial.station_needs) <= arm.capabilities


def assign(
    candidates: Sequence[TrialCandidate],
    arms: Sequence[ArmState],
    *,
    lookahead: int | None = None,
) -> list[Assignment]:
    """Assign pending trials (sorted by priority, age, plan order) to idle online arms."""
    idle = [a for a in arms if a.online and not a.busy]
    if not idle or not candidates:
        return []
    window = lookahead if lookahead is not None else max(2, 2 * len(idle))
    taken: set[int] = set()
    out: list[Assignment] = []
    for arm in sorted(idle, key=lambda a: (a.scene_key is None, a.name)):
        runnable = [c for c in candidates if c.trial_id not in taken and can_run(arm, c)]
        if not runnable:
            continue
        top = runnable[0]
        # Only look ahead within the same priority class, and within the window.
        same_class = [
            c
            for c in runnable[:window]
            if (c.campaign_priority, c.campaign_id) == (top.campaign_priority, top.campaign_id)
        ]
        pick = next((c for c in same_class if arm.scene_key and c.scene_key == arm.scene_key), top)
        taken.add(pick.trial_id)
        out.append(Assignment(pick.trial_id, arm.name, pick.scene_key == arm.scene_key))
    return out


def backoff_s(failures: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Probe delay for an offline arm after `failures` consecutive failed probes."""
    return min(cap, base * (2 ** max(0, failures - 1)))
