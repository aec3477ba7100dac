"""A success detector's typed seam (pure): what it is given, what it answers, its kinds.

A detector labels recorded episodes (label source `auto`). It sees the episode's instruction,
its task key, the final frames of its cameras and, for the `sim` kind, the simulator's own
outcome; never the policy (detectors are blind, like the Label queue). `judge_batch` answers
one Verdict per input, in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np


class DetectorKind(StrEnum):
    """detectors.kind."""

    SIM = "sim"  # the simulator's own success predicate, as recorded (the episode's sim label)
    VLM = "vlm"  # a vision-language model's yes/no answer on the final frame(s)
    REMOTE = "remote"  # a detector served over HTTP (docs/detectors.md, "Remote detectors")


class DetectorError(RuntimeError):
    """A detector that cannot judge (bad options, missing model, unreachable server, an
    episode it cannot label); the message is one line saying what to do."""


@dataclass(frozen=True, eq=False)  # eq=False: numpy frames do not compare to a bool
class DetectorInput:
    episode_id: int
    instruction: str
    task_key: str
    # camera -> its last frames (oldest first), each HxWx3 uint8; empty for a detector that
    # reads no frames
    frames: Mapping[str, tuple[np.ndarray, ...]] = field(default_factory=dict)
    sim_success: bool | None = None  # the episode's `sim` label, when the store has one


@dataclass(frozen=True)
class Verdict:
    success: bool
    score: float  # in [0, 1]: the detector's belief that the episode succeeded
    detail: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"verdict score {self.score} is outside 0..1")


class Detector(Protocol):
    """What `label_campaign` drives. `needs_frames`: whether inputs must carry frames;
    `cameras(recorded)`: which of an episode's recorded cameras it reads (only those are
    decoded)."""

    kind: DetectorKind
    needs_frames: bool

    def cameras(self, recorded: Sequence[str]) -> tuple[str, ...]: ...

    def judge_batch(self, inputs: Sequence[DetectorInput]) -> list[Verdict]: ...

    def close(self) -> None: ...


def pick_frames(inp: DetectorInput, camera: str | None, n: int,
                where: str) -> dict[str, tuple[np.ndarray, ...]]:
    """The last `n` frames of `camera` (None: every camera) of one input; DetectorError names
    the episode and the cameras it has when the camera is missing."""
    if camera is None:
        cams = {c: f[-n:] for c, f in inp.frames.items() if f}
    else:
        got = inp.frames.get(camera, ())
        cams = {camera: got[-n:]} if got else {}
    if not cams:
        have = ", ".join(sorted(c for c, f in inp.frames.items() if f)) or "none"
        want = f"camera {camera!r}" if camera else "any camera"
        raise DetectorError(f"{where}: episode {inp.episode_id} has no frames of {want} "
                            f"(cameras recorded: {have}); set -o camera=NAME to one of them")
    for c, frames in cams.items():
        for f in frames:
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise DetectorError(f"{where}: episode {inp.episode_id} camera {c!r}: frames "
                                    f"must be HxWx3 uint8, got {f.dtype} {f.shape}")
    return cams
