"""Pure statistics for evaluation results: success rates, tests, agreement, label resolution.

Numbers follow the reference implementations (statsmodels' Wilson interval, scipy's
exact tests); the unit tests check them against those on many inputs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

import numpy as np
from scipy import stats as scipy_stats

__all__ = [
    "TEST_NAMES",
    "Comparison",
    "LabelVote",
    "MeanInterval",
    "Outcome",
    "SuccessRate",
    "bootstrap_mean_ci",
    "cohen_kappa",
    "compare_rates",
    "fleiss_kappa",
    "format_cell",
    "percent_half_up",
    "ratio_percent_half_up",
    "resolve_outcome",
    "success_rate",
    "wilson_interval",
]

TestName = Literal["fisher", "barnard"]
TEST_NAMES: dict[str, str] = {
    "fisher": "Fisher's exact test (two-sided)",
    "barnard": "Barnard's exact test (two-sided)",
}


def _check_counts(k: int, n: int, where: str = "") -> None:
    label = f" ({where})" if where else ""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= successes <= trials{label}, got k={k}, n={n}")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


# --- success rates -------------------------------------------------------------------------


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n == 0."""
    _check_counts(k, n)
    _check_confidence(confidence)
    if n == 0:
        return (0.0, 1.0)
    z = float(scipy_stats.norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    p = k / n
    z2n = z * z / n
    center = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    low = 0.0 if k == 0 else max(0.0, center - half)
    high = 1.0 if k == n else min(1.0, center + half)
    return (low, high)


@dataclass(frozen=True)
class SuccessRate:
    k: int
    n: int  # resolved outcomes (success or failure): the denominator
    rate: float | None  # None when n == 0
    low: float
    high: float
    confidence: float = 0.95
    disputed: int = 0  # counted episodes left out of n: a tie between votes
    unlabeled: int = 0  # counted episodes left out of n: no label yet
    method: str = "wilson"  # "wilson" | "clustered" (Wilson on a design-effect n, by task)
    clusters: int = 0  # tasks that contributed resolved outcomes (clustered intervals)
    design_effect: float = 1.0  # >= 1; n / design_effect is the effective sample size


def success_rate(k: int, n: int, confidence: float = 0.95) -> SuccessRate:
    low, high = wilson_interval(k, n, confidence)
    return SuccessRate(k, n, (k / n) if n else None, low, high, confidence)


def format_cell(rate: SuccessRate) -> str:
    """'58% [41-72] n=40 (2 disputed, 1 unlabeled)'; '– n=0 (...)' when nothing resolved.

    The rate is rounded exactly from the integers k/n (half up: 23/40 = 57.5% -> 58%);
    interval bounds in decimal arithmetic from their printed value, half up.
    """
    left_out = f"({rate.disputed} disputed, {rate.unlabeled} unlabeled)"
    if rate.n == 0 or rate.rate is None:
        return f"– n=0 {left_out}"
    return (f"{ratio_percent_half_up(rate.k, rate.n)}% "
            f"[{percent_half_up(rate.low)}-{percent_half_up(rate.high)}] n={rate.n} {left_out}")


def ratio_percent_half_up(k: int, n: int) -> int:
    """100 * k / n rounded half up, in integers (no float): 23/40 -> 58, 1/8 -> 13."""
    if n <= 0 or k < 0:
        raise ValueError(f"need k >= 0 and n > 0, got k={k}, n={n}")
    return (200 * k + n) // (2 * n)


def percent_half_up(x: float) -> int:
    """100 * x rounded half up in decimal arithmetic (the float's shortest repr, as printed:
    0.575 -> 58), never float x * 100.0, whose binary error can defeat the half-up rule."""
    if not math.isfinite(x):
        raise ValueError(f"cannot round {x!r} to a percentage")
    return int((Decimal(repr(x)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- comparing two policies ----------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    test: str  # "fisher" | "barnard"
    test_name: str  # human-readable, e.g. "Fisher's exact test (two-sided)"
    p_value: float | None  # None when either side has no trials
    difference: float | None  # rate_a - rate_b
    a: SuccessRate
    b: SuccessRate

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value is not None and self.p_value < alpha

    def describe(self) -> str:
        if self.p_value is None:
            return f"{self.test}: n/a"
        return f"{self.test} p={format_p_value(self.p_value)}"


def format_p_value(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def compare_rates(k1: int, n1: int, k2: int, n2: int, test: TestName = "fisher") -> Comparison:
    """Two-sided exact test of equal success rates (k1/n1 vs k2/n2).

    The 2x2 table has the two policies as columns (successes, failures as rows), which is
    the layout Barnard's test (binomial columns) expects; Fisher's is symmetric anyway.
    """
    _check_counts(k1, n1, "first")
    _check_counts(k2, n2, "second")
    if test not in TEST_NAMES:
        raise ValueError(f"unknown test {test!r} (expected one of: {', '.join(TEST_NAMES)})")
    a, b = success_rate(k1, n1), success_rate(k2, n2)
    if n1 == 0 or n2 == 0:
        return Comparison(test, TEST_NAMES[test], None, None, a, b)
    table = [[k1, k2], [n1 - k1, n2 - k2]]
    if test == "fisher":
        p_value = float(scipy_stats.fisher_exact(table, alternative="two-sided").pvalue)
    else:
        p_value = float(scipy_stats.barnard_exact(table, alternative="two-sided").pvalue)
    p_value = min(1.0, max(0.0, p_value))
    return Comparison(test, TEST_NAMES[test], p_value, k1 / n1 - k2 / n2, a, b)


# --- progress ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanInterval:
    mean: float | None  # None when there are no values
    low: float | None
    high: float | None
    n: int
    confidence: float = 0.95


def bootstrap_mean_ci(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> MeanInterval:
    """Mean with a percentile bootstrap interval (deterministic for a given seed)."""
    _check_confidence(confidence)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    data = np.asarray(list(values), dtype=float)
    if data.ndim != 1 or not np.all(np.isfinite(data)):
        raise ValueError("values must be a flat sequence of finite numbers")
    n = int(data.size)
    if n == 0:
        return MeanInterval(None, None, None, 0, confidence)
    mean = float(data.mean())
    if n == 1 or np.all(data == data[0]):
        return MeanInterval(mean, mean, mean, n, confidence)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)  # bound memory: chunk x n indices at a time
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = data[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return MeanInterval(mean, float(low), float(high), n, confidence)


# --- agreement between evaluators ----------------------------------------------------------


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two raters' labels on the same items (nan if undefined:
    both raters gave one and the same label to everything)."""
    if len(a) != len(b):
        raise ValueError(f"both raters must label the same items: {len(a)} vs {len(b)} labels")
    if not a:
        raise ValueError("cohen_kappa needs at least one item")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[c] * count_b.get(c, 0) for c in count_a) / (n * n)
    if math.isclose(expected, 1.0):
        return float("nan")
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(ratings_table: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa. Rows are items, columns categories, cells how many raters chose that
    category for that item; every row must sum to the same number of raters (>= 2)."""
    table = np.asarray(ratings_table, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] == 0:
        raise ValueError("ratings_table must be a non-empty items x categories table")
    if np.any(table < 0) or np.any(table != np.round(table)):
        raise ValueError("ratings_table cells must be non-negative integer counts")
    raters = table.sum(axis=1)
    if not np.all(raters == raters[0]) or raters[0] < 2:
        raise ValueError(
            "every item (row) needs the same number of raters, at least 2; "
            f"row sums are {sorted(set(raters.astype(int).tolist()))}"
        )
    m, items = raters[0], table.shape[0]
    p_category = table.sum(axis=0) / (items * m)
    p_item = ((table * table).sum(axis=1) - m) / (m * (m - 1))
    p_bar, p_expected = p_item.mean(), float((p_category**2).sum())
    if math.isclose(p_expected, 1.0):
        return float("nan")
    return float((p_bar - p_expected) / (1.0 - p_expected))


# --- turning labels into one outcome -------------------------------------------------------


@dataclass(frozen=True)
class LabelVote:
    source: Literal["human", "sim"]
    evaluator: str | None
    success: bool
    progress: float | None = None


@dataclass(frozen=True)
class Outcome:
    status: Literal["resolved", "disputed", "unlabeled"]
    success: bool | None  # None unless resolved
    source: Literal["human", "sim"] | None  # whose votes decided
    n_votes: int  # votes counted from that source
    successes: int = 0
    failures: int = 0
    progress: float | None = None  # mean progress of the counted votes that gave one


def resolve_outcome(votes: Sequence[LabelVote]) -> Outcome:
    """One outcome from an episode's labels.

    Human labels override sim labels. Among the deciding source, one vote per evaluator
    (the last one in `votes`, which is taken to be chronological; votes without an
    evaluator each count), then the majority decides. A tie is "disputed": success is None
    and the episode must not be counted until someone breaks the tie. No votes: "unlabeled".
    """
    for vote in votes:
        if vote.source not in ("human", "sim"):
            raise ValueError(f"label source must be 'human' or 'sim', got {vote.source!r}")
    source: Literal["human", "sim"] | None = (
        "human" if any(v.source == "human" for v in votes)
        else "sim" if votes else None
    )
    if source is None:
        return Outcome("unlabeled", None, None, 0)
    counted = _one_vote_per_evaluator([v for v in votes if v.source == source])
    successes = sum(1 for v in counted if v.success)
    failures = len(counted) - successes
    progress_values = [v.progress for v in counted if v.progress is not None]
    progress = sum(progress_values) / len(progress_values) if progress_values else None
    if successes == failures:
        return Outcome("disputed", None, source, len(counted), successes, failures, progress)
    return Outcome(
        "resolved", successes > failures, source, len(counted), successes, failures, progress
    )


def _one_vote_per_evaluator(votes: list[LabelVote]) -> list[LabelVote]:
    latest: dict[str, int] = {v.evaluator: i for i, v in enumerate(votes) if v.evaluator}
    return [v for i, v in enumerate(votes) if not v.evaluator or latest[v.evaluator] == i]
