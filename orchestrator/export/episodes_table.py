"""`--format episodes`: one row per counted episode (pure; the writer makes CSV or Parquet).

Labels (resolved outcome, votes, evaluators, failure modes), the trial (task, category,
scene seed, policy's blind code and, unless blind, name) and timings (start, end, steps,
late steps, mean latencies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.export.records import EpisodeOutcome, EpisodeRecord, StepTiming

COLUMNS = (
    "episode_id", "campaign", "trial_id", "trial_index", "attempt", "task_key", "instruction",
    "category", "split", "difficulty", "scene_seed", "policy_blind_code", "policy",
    "policy_version", "robot", "station", "started_at", "ended_at", "duration_s", "step_count",
    "late_steps", "terminated_by", "outcome", "success", "outcome_source", "progress",
    "human_votes", "evaluator_count", "evaluators", "failure_modes", "sim_success",
    "mean_inference_ms", "mean_orchestration_ms", "mean_obs_age_ms", "mean_command_ms",
)
BLIND_HIDDEN = ("policy", "policy_version")
LIST_COLUMNS = ("evaluators", "failure_modes")


@dataclass(frozen=True)
class EpisodesTable:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def episodes_table(campaign: str, records: Sequence[EpisodeRecord],
                   outcomes: Mapping[int, EpisodeOutcome], timings: Mapping[int, StepTiming],
                   *, blind: bool) -> EpisodesTable:
    columns = tuple(c for c in COLUMNS if not (blind and c in BLIND_HIDDEN))
    rows = []
    for r in records:
        o = outcomes[r.episode_id]
        t = timings.get(r.episode_id, StepTiming(None, None, None, None))
        duration = ((r.ended_at - r.started_at).total_seconds()
                    if r.started_at is not None and r.ended_at is not None else None)
        values: dict[str, Any] = {
            "episode_id": r.episode_id, "campaign": campaign, "trial_id": r.trial_id,
            "trial_index": r.trial_index, "attempt": r.attempt, "task_key": r.task_key,
            "instruction": r.instruction, "category": r.category, "split": r.split,
            "difficulty": r.difficulty, "scene_seed": r.scene_seed,
            "policy_blind_code": r.blind_code, "policy": r.policy_name,
            "policy_version": r.policy_version, "robot": r.robot, "station": r.station,
            "started_at": r.started_at, "ended_at": r.ended_at, "duration_s": duration,
            "step_count": r.step_count, "late_steps": r.late_steps,
            "terminated_by": r.terminated_by, "outcome": o.outcome, "success": o.success,
            "outcome_source": o.source, "progress": o.progress, "human_votes": o.human_votes,
            "evaluator_count": len(o.evaluators), "evaluators": o.evaluators,
            "failure_modes": o.failure_modes, "sim_success": o.sim_success,
            "mean_inference_ms": t.inference_ms, "mean_orchestration_ms": t.orchestration_ms,
            "mean_obs_age_ms": t.obs_age_ms, "mean_command_ms": t.command_ms,
        }
        rows.append(tuple(values[c] for c in columns))
    return EpisodesTable(columns, tuple(rows))


def csv_value(value: Any) -> str:
    """A cell as CSV text: lists joined with ';', None empty, datetimes ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, tuple | list):
        return ";".join(map(str, value))
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
