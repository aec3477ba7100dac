"""Feature statistics in LeRobot's layout: min, max, mean, std (population) and count.

Vectors: one value per dimension; images: one value per RGB channel in [0, 1], shaped
(3, 1, 1) as LeRobot stores them. Dataset statistics are combined from per-episode ones
(`combine`, exact for min/max/mean/std), so each episode's frames are looked at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class FeatureStats:
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: int

    def as_json(self) -> dict[str, Any]:
        return {
            "min": self.min.tolist(),
            "max": self.max.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "count": [int(self.count)],
        }


def vector_stats(values: np.ndarray) -> FeatureStats:
    """Stats over axis 0 of an (n, d) or (n,) array; a 1-D array gives shape-(1,) stats."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if v.shape[0] == 0:
        raise ValueError("statistics of no frames")
    return FeatureStats(
        min=v.min(axis=0), max=v.max(axis=0), mean=v.mean(axis=0), std=v.std(axis=0),
        count=int(v.shape[0]),
    )


def image_stats(frames: np.ndarray) -> FeatureStats:
    """Per-channel stats of (n, h, w, 3) uint8 RGB frames, scaled to [0, 1], shape (3, 1, 1).

    `count` is the number of frames (as LeRobot counts images)."""
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] == 0:
        raise ValueError(f"image stats need (n, h, w, 3) frames, got {f.shape}")
    px = np.ascontiguousarray(f.reshape(-1, 3).T)  # (3, pixels): channel rows reduce fast
    shape = (3, 1, 1)
    mean = px.mean(axis=1, dtype=np.float64)
    sq = np.einsum("ij,ij->i", px.astype(np.float64), px.astype(np.float64)) / px.shape[1]
    return FeatureStats(
        min=(px.min(axis=1) / 255.0).reshape(shape), max=(px.max(axis=1) / 255.0).reshape(shape),
        mean=(mean / 255.0).reshape(shape),
        std=(np.sqrt(np.maximum(sq - mean ** 2, 0.0)) / 255.0).reshape(shape),
        count=int(f.shape[0]),
    )


def combine(parts: Sequence[FeatureStats]) -> FeatureStats:
    """The stats of the union of the parts' samples (weights: each part's count)."""
    if not parts:
        raise ValueError("combine needs at least one part")
    counts = np.array([p.count for p in parts], dtype=np.float64)
    total = counts.sum()
    shape = (-1,) + (1,) * parts[0].mean.ndim
    w = (counts / total).reshape(shape)
    means = np.stack([p.mean for p in parts])
    mean = (w * means).sum(axis=0)
    second = (w * (np.stack([p.std for p in parts]) ** 2 + means ** 2)).sum(axis=0)
    return FeatureStats(
        min=np.min(np.stack([p.min for p in parts]), axis=0),
        max=np.max(np.stack([p.max for p in parts]), axis=0),
        mean=mean,
        std=np.sqrt(np.maximum(second - mean ** 2, 0.0)),
        count=int(total),
    )


def stats_json(stats: Mapping[str, FeatureStats]) -> dict[str, Any]:
    """meta/stats.json: feature -> {min, max, mean, std, count}."""
    return {key: s.as_json() for key, s in stats.items()}


def flat_episode_stats(stats: Mapping[str, FeatureStats]) -> dict[str, Any]:
    """One episode's stats as the episodes table's `stats/<feature>/<stat>` columns."""
    out: dict[str, Any] = {}
    for key, s in stats.items():
        for name, value in s.as_json().items():
            out[f"stats/{key}/{name}"] = value
    return out
