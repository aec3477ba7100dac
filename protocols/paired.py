"""Paired tests on the campaign design: exact McNemar on matched blocks, Cochran's Q omnibus.

A *block* (protocols.planning) is one task, trial index and scene seed run by every policy of
a campaign once. Two policies are compared on the blocks where both have a resolved outcome
(matched pairs); only the discordant pairs carry information about the difference, and under
the null hypothesis each discordant pair is equally likely to favour either policy, so the
exact two-sided binomial test on them (exact McNemar) is valid for any number of pairs.
Cochran's Q generalises McNemar's test to k policies on blocks where all k are resolved.

Numbers follow statsmodels (contingency_tables.mcnemar(exact=True), cochrans_q); the unit
tests check them on many random designs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

__all__ = [
    "CochranQ",
    "PairedCounts",
    "cochrans_q",
    "mcnemar_exact",
    "paired_counts",
]


@dataclass(frozen=True)
class PairedCounts:
    """Matched pairs of policies a and b: how the two outcomes of each block compare."""

    both: int  # both succeeded
    a_only: int  # a succeeded, b failed
    b_only: int  # b succeeded, a failed
    neither: int  # both failed

    def __post_init__(self) -> None:
        if min(self.both, self.a_only, self.b_only, self.neither) < 0:
            raise ValueError(f"paired counts must be >= 0, got {self}")

    @property
    def pairs(self) -> int:
        return self.both + self.a_only + self.b_only + self.neither

    @property
    def difference(self) -> float | None:
        """Paired difference of success rates, a - b, on the matched pairs (None if none)."""
        return (self.a_only - self.b_only) / self.pairs if self.pairs else None


def paired_counts(pairs: Iterable[tuple[bool, bool]]) -> PairedCounts:
    """Tabulate (a_success, b_success) pairs."""
    both = a_only = b_only = neither = 0
    for a, b in pairs:
        if a and b:
            both += 1
        elif a:
            a_only += 1
        elif b:
            b_only += 1
        else:
            neither += 1
    return PairedCounts(both, a_only, b_only, neither)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (1.0 when there are none):
    2 * P(X <= min(a_only, b_only)) for X ~ Binomial(a_only + b_only, 1/2), capped at 1."""
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {a_only}, {b_only}")
    n = a_only + b_only
    p_value = float(scipy_stats.binom.cdf(min(a_only, b_only), n, 0.5)) * 2
    return min(1.0, p_value)


@dataclass(frozen=True)
class CochranQ:
    statistic: float | None  # None when undefined (no blocks, or every block unanimous)
    df: int
    p_value: float | None
    blocks: int  # complete blocks used


def cochrans_q(patterns: Sequence[tuple[Sequence[bool], int]]) -> CochranQ:
    """Cochran's Q over complete blocks given as (outcome per policy, how many blocks) rows.

    Q = (k-1) * (k * sum_j C_j^2 - N^2) / (k * N - sum_i R_i^2), with C_j the successes of
    policy j, R_i those of block i and N the total; chi-square with k-1 df.
    """
    k = len(patterns[0][0]) if patterns else 0
    columns = [0] * k
    blocks = row_sum = row_sq = 0
    for outcomes, count in patterns:
        if len(outcomes) != k:
            raise ValueError(f"every block needs {k} outcomes, got {len(outcomes)}")
        if count < 0:
            raise ValueError(f"block counts must be >= 0, got {count}")
        r = sum(1 for o in outcomes if o)
        for j, o in enumerate(outcomes):
            columns[j] += count * int(bool(o))
        blocks += count
        row_sum += count * r
        row_sq += count * r * r
    if k < 2:
        return CochranQ(None, max(0, k - 1), None, blocks)
    denominator = k * row_sum - row_sq
    if blocks == 0 or denominator == 0:
        return CochranQ(None, k - 1, None, blocks)
    numerator = (k - 1) * (k * sum(c * c for c in columns) - row_sum * row_sum)
    q = numerator / denominator
    return CochranQ(q, k - 1, float(scipy_stats.chi2.sf(q, k - 1)), blocks)
