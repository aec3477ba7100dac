"""Success-rate intervals that respect clustering by task.

Episodes of one task share its difficulty, so a pooled row (several tasks) has less
information than its n suggests. The estimate is the pooled ratio p = sum k_i / sum n_i over
tasks i; its cluster-robust variance (the ratio estimator's linearisation, the same as an
intercept-only regression with task-clustered standard errors, small-sample factor G/(G-1))
is

    V = G / (G - 1) * sum_i (k_i - p * n_i)^2 / n^2.

The design effect deff = max(1, V / (p (1 - p) / n)) turns n into an effective sample size
n / deff, and the interval is Wilson's at that size (Korn & Graubard's approach for
proportions from clustered samples). deff is floored at 1, so clustering never narrows an
interval; a row of one task (or p of 0 or 1, where V says nothing) gets plain Wilson. Pure
arithmetic: the output is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats as scipy_stats

from protocols.stats import SuccessRate, success_rate

__all__ = ["cluster_robust_variance", "clustered_rate", "wilson_bounds"]


def wilson_bounds(p: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion p observed on an (effective, real) size n > 0."""
    z = float(scipy_stats.norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    z2n = z * z / n
    center = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    return max(0.0, center - half), min(1.0, center + half)


def cluster_robust_variance(clusters: Sequence[tuple[int, int]]) -> float | None:
    """V above for (successes, trials) per cluster; None with fewer than 2 non-empty clusters."""
    used = [(k, n) for k, n in clusters if n > 0]
    g = len(used)
    total = sum(n for _, n in used)
    if g < 2 or total == 0:
        return None
    p = sum(k for k, _ in used) / total
    return g / (g - 1) * sum((k - p * n) ** 2 for k, n in used) / (total * total)


def clustered_rate(clusters: Sequence[tuple[int, int]], confidence: float = 0.95,
                   *, disputed: int = 0, unlabeled: int = 0) -> SuccessRate:
    """Pooled success rate of several tasks with a task-clustered Wilson interval."""
    for k, n in clusters:
        if n < 0 or k < 0 or k > n:
            raise ValueError(f"need 0 <= successes <= trials per task, got k={k}, n={n}")
    k = sum(c[0] for c in clusters)
    n = sum(c[1] for c in clusters)
    g = sum(1 for c in clusters if c[1] > 0)
    plain = success_rate(k, n, confidence)
    variance = cluster_robust_variance(clusters)
    if variance is None or k == 0 or k == n:
        return SuccessRate(k, n, plain.rate, plain.low, plain.high, confidence, disputed,
                           unlabeled, "wilson" if g < 2 else "clustered", g, 1.0)
    p = k / n
    deff = max(1.0, variance / (p * (1.0 - p) / n))
    low, high = wilson_bounds(p, n / deff, confidence)
    return SuccessRate(k, n, p, low, high, confidence, disputed, unlabeled, "clustered", g, deff)
