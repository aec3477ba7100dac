"""One recorded control step, as the episode loop hands it to the store (pure, no I/O).

`StepRecord`'s fields are the `steps` table's columns minus `episode_id`, in no particular
order, with no defaults: the loop sets every one (tests/unit/test_step_record.py checks the
fields against orchestrator/store/models.Step). docs/schema.md ("steps") says what each holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

EE_DELTA_LABEL = "ee_delta[7]"


@dataclass(frozen=True)
class StepRecord:
    idx: int
    terminate: bool
    # the applied action: every space's full vector, and its space's label ("kind[dim]")
    action: tuple[float, ...]
    action_space: str
    # RT-2's columns: the applied action when action_space is ee_delta[7], else None (NULL)
    dx: float | None
    dy: float | None
    dz: float | None
    droll: float | None
    dpitch: float | None
    dyaw: float | None
    gripper: float | None
    tokens: str | None  # RT-2 text form "1 128 91 ..."
    proprio: tuple[float, ...]  # the observation's state vector (arm's declared order)
    obs_seq: int
    obs_monotonic_ns: int
    obs_wall_ns: int
    command_wall_ns: int
    obs_age_ms: float
    inference_ms: float
    orchestration_ms: float
    command_ms: float
    late: bool
    clipped: bool
    plan: str | None
    # where the action came from: chunk id (0, 1, ... per episode), its row, and the ms from
    # the observation the chunk was computed from to this step's command
    chunk_id: int
    chunk_index: int
    chunk_age_ms: float

    def column_values(self) -> dict[str, Any]:
        """Column -> value for the store (JSON columns as lists)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["action"] = list(self.action)
        out["proprio"] = list(self.proprio)
        return out


STEP_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(StepRecord))


def ee_columns(label: str, applied: Sequence[float]) -> tuple[float | None, ...]:
    """dx .. gripper for an ee_delta[7] action, seven Nones for any other space."""
    if label == EE_DELTA_LABEL and len(applied) == 7:
        return tuple(float(v) for v in applied)
    return (None,) * 7
