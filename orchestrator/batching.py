"""Pure batching decision of the policy data plane (no zmq, no clocks): which arms to wait for."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["expected_soon"]


def expected_soon(rhythm: Mapping[str, tuple[float | None, float | None]], present: set[str],
                  now: float, until: float) -> bool:
    """Will an arm not in the batch yet send its step before `until`? (pure) Predicted from
    each arm's last arrival and its period (`rhythm`: arm -> (last, period)): arms stepping
    together are waited for (up to the batch window); arms on other phases of the period,
    or overdue by more than half a period, are not."""
    for arm, (last, period) in rhythm.items():
        if arm in present or period is None or last is None:
            continue
        due = last + period
        if now - 0.5 * period <= due <= until:
            return True
    return False
