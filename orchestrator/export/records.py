"""What an export reads from the store, as typed values, and each episode's outcome.

The outcome is the one every report uses: `protocols.stats.resolve_outcome` over the
episode's labels (human labels override the simulator's, majority wins, a tie is disputed,
none is unlabeled), so an exported `success` is the same as `evalfleet report` counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from protocols.stats import LabelVote, resolve_outcome


class ExportError(RuntimeError):
    """An export cannot be written; the message names what and what to do."""


@dataclass(frozen=True)
class VideoSource:
    """One camera's recorded MP4 of one episode (Episode.media entry)."""

    camera: str
    uri: str  # relative to the media dir
    frames: int
    fps: float


@dataclass(frozen=True)
class LabelRecord:
    source: str  # human | sim
    evaluator: str
    success: bool
    progress: float | None
    failure_mode: str | None


@dataclass(frozen=True)
class EpisodeRecord:
    """One counted, recorded episode with its trial, task, policy and labels."""

    episode_id: int
    trial_id: int
    trial_index: int
    attempt: int
    task_key: str
    instruction: str
    category: str
    split: str
    difficulty: str | None
    scene_seed: int
    control_hz: float
    policy_name: str
    policy_version: str
    blind_code: str
    robot: str | None
    station: str | None
    driver: str | None
    started_at: datetime | None
    ended_at: datetime | None
    step_count: int
    late_steps: int
    terminated_by: str | None
    videos: tuple[VideoSource, ...]
    labels: tuple[LabelRecord, ...]  # in the order they were written


@dataclass(frozen=True, eq=False)
class StepSeries:
    """One episode's steps in idx order: the applied actions, the observed states and when
    each observation was taken (bridge wall clock, ns)."""

    action_space: str
    actions: np.ndarray  # (n, action_dim) float32
    states: np.ndarray  # (n, state_dim) float32
    obs_wall_ns: np.ndarray  # (n,) int64

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])


@dataclass(frozen=True)
class StepTiming:
    """Per-episode latency summary (means over its steps, ms)."""

    inference_ms: float | None
    orchestration_ms: float | None
    obs_age_ms: float | None
    command_ms: float | None


@dataclass(frozen=True)
class EpisodeOutcome:
    outcome: str  # success | failure | disputed | unlabeled
    success: bool | None  # None unless resolved
    source: str | None  # human | sim: whose votes decided
    progress: float | None  # mean progress of the deciding votes that gave one
    human_votes: int
    evaluators: tuple[str, ...]  # human evaluators, sorted
    failure_modes: tuple[str, ...]  # distinct, sorted, from every label
    sim_success: bool | None


def episode_outcome(labels: tuple[LabelRecord, ...]) -> EpisodeOutcome:
    """The resolved outcome of one episode from its labels (protocols.stats.resolve_outcome)."""
    votes = [
        LabelVote("human" if lb.source == "human" else "sim", lb.evaluator, lb.success,
                  lb.progress)
        for lb in labels
    ]
    out = resolve_outcome(votes)
    if out.status == "resolved":
        outcome = "success" if out.success else "failure"
    else:
        outcome = out.status
    humans = sorted({lb.evaluator for lb in labels if lb.source == "human"})
    sims = [lb.success for lb in labels if lb.source == "sim"]
    return EpisodeOutcome(
        outcome=outcome,
        success=out.success,
        source=out.source,
        progress=out.progress,
        human_votes=sum(1 for lb in labels if lb.source == "human"),
        evaluators=tuple(humans),
        failure_modes=tuple(sorted({lb.failure_mode for lb in labels if lb.failure_mode})),
        sim_success=sims[-1] if sims else None,
    )
