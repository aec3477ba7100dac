"""Multiple-comparison correction: Holm's step-down adjustment (as statsmodels' multipletests
with method='holm'; the unit tests check it on many random families)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["holm"]


def holm(p_values: Sequence[float | None]) -> tuple[float | None, ...]:
    """Holm-adjusted p-values, in the input order; None entries are not tests (stay None and
    do not count in the family). Controls the family-wise error rate under any dependence."""
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    for p, _ in tested:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must be within [0, 1], got {p}")
    m = len(tested)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return tuple(adjusted)
