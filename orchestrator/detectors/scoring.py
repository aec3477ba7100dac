"""The pure parts of the detectors: the sim kind's deterministic flips, the vlm kind's yes/no
score from next-token logits, the remote kind's request body and reply."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from orchestrator.detectors.base import DetectorError, Verdict


def flip_draw(seed: int, episode_id: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, episode id): sha256, first 8 bytes."""
    digest = hashlib.sha256(f"evalfleet-detector-flip:{seed}:{episode_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def flips(seed: int, episode_id: int, rate: float) -> bool:
    """Whether the sim detector reports the opposite of the sim's outcome for this episode.
    The same (seed, episode) always gives the same answer; over many episodes a share
    `rate` is flipped, whatever policy ran (the detector never sees the policy)."""
    return rate > 0.0 and flip_draw(seed, episode_id) < rate


def sim_verdict(episode_id: int, sim_success: bool | None, rate: float, seed: int) -> Verdict:
    if sim_success is None:
        raise DetectorError(f"sim detector: episode {episode_id} has no sim label (the "
                            "simulator recorded no outcome); use a vlm or remote detector for "
                            "episodes of real arms")
    flipped = flips(seed, episode_id, rate)
    success = sim_success != flipped
    return Verdict(success, 1.0 if success else 0.0, "sim, flipped" if flipped else "sim")


def yes_no_score(logits: np.ndarray, yes_ids: Sequence[int], no_ids: Sequence[int]) -> np.ndarray:
    """P(yes) among {yes, no}: the softmax of the next-token logits restricted to the yes and
    no tokens, the probabilities of each side's tokens summed. `logits` is (batch, vocab);
    returns (batch,) in [0, 1]. Computed stably (logsumexp)."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (batch, vocab), got shape {logits.shape}")
    if not yes_ids or not no_ids or set(yes_ids) & set(no_ids):
        raise ValueError("yes and no need at least one token each, and none in common")
    x = np.asarray(logits, dtype=np.float64)
    yes = x[:, list(yes_ids)]
    no = x[:, list(no_ids)]
    top = np.maximum(yes.max(axis=1), no.max(axis=1))[:, None]
    py = np.exp(yes - top).sum(axis=1)
    pn = np.exp(no - top).sum(axis=1)
    return np.asarray(py / (py + pn))


def remote_body(instruction: str, task: str,
                frames: Mapping[str, tuple[np.ndarray, ...]]) -> dict[str, Any]:
    """The remote detector's request: per camera one (frames, H, W, 3) uint8 array."""
    return {"instruction": instruction, "task": task,
            "frames": {cam: np.stack(list(f)) for cam, f in frames.items()}}


def parse_reply(text: str, where: str) -> Verdict:
    """The remote detector's reply {"success": bool, "score": float in [0, 1]} -> Verdict."""
    try:
        data = json.loads(text)
    except ValueError:
        raise DetectorError(f"{where}: the reply is not JSON ({text[:60]!r}); reply "
                            '{"success": true|false, "score": 0..1}') from None
    if not isinstance(data, dict):
        raise DetectorError(f"{where}: the reply is a {type(data).__name__}, not a JSON object "
                            'like {"success": true, "score": 0.9}')
    success, score = data.get("success"), data.get("score")
    if not isinstance(success, bool):
        raise DetectorError(f"{where}: reply field 'success' must be true or false, got "
                            f"{success!r}")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
        raise DetectorError(f"{where}: reply field 'score' must be a number in 0..1, got "
                            f"{score!r}")
    detail = data.get("detail")
    return Verdict(success, float(score), str(detail)[:200] if detail is not None else "remote")
