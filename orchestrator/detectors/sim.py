"""The `sim` detector: the simulator's own success predicate, as the episode recorded it."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.detectors.base import DetectorInput, DetectorKind, Verdict
from orchestrator.detectors.options import SimOptions
from orchestrator.detectors.scoring import sim_verdict


class SimDetector:
    """Reports the episode's `sim` label; with `flip_rate` > 0 it reports the opposite on a
    fixed, seeded share of episodes (a detector right 1 - flip_rate of the time, for tests
    and demos). Refuses an episode without a sim label."""

    kind = DetectorKind.SIM
    needs_frames = False

    def __init__(self, options: SimOptions) -> None:
        self.options = options

    def cameras(self, recorded: Sequence[str]) -> tuple[str, ...]:
        return ()

    def judge_batch(self, inputs: Sequence[DetectorInput]) -> list[Verdict]:
        o = self.options
        return [sim_verdict(x.episode_id, x.sim_success, o.flip_rate, o.seed) for x in inputs]

    def close(self) -> None:
        pass
