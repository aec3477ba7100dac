"""protocols.audit: the human audit is a stratified Bernoulli sample with a known inclusion
probability: per stratum the realised share is close to the rate, draws are stable, and the
draw does not depend on labels or strata (deterministic: fixed seeds and ids)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from protocols.audit import audit_fraction, audit_u, check_audit_rate, drawn, drawn_ids

REPO_ROOT = Path(__file__).resolve().parents[2]


def _binomial_ok(k: int, n: int, rate: float) -> bool:
    """k drawn of n is inside the central 99.99% of Binomial(n, rate) (a fixed-seed check,
    not a flaky one: the ids and seeds are constants)."""
    low, high = stats.binom.interval(0.9999, n, rate)
    return low <= k <= high


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 7, 123456789, -3])
def test_realised_fraction_per_stratum_is_close_to_the_rate(seed: int, rate: float) -> None:
    # 6 strata (policy x category) whose trial ids interleave like a campaign plan's do
    strata: dict[tuple[int, int], list[int]] = {}
    for tid in range(1, 12001):
        strata.setdefault((tid % 2, (tid // 2) % 3), []).append(tid)
    for ids in strata.values():
        k = len(drawn_ids(seed, ids, rate))
        assert _binomial_ok(k, len(ids), rate), (seed, rate, k, len(ids))
        assert abs(k / len(ids) - rate) < 4.5 * math.sqrt(rate * (1 - rate) / len(ids))


def test_u_is_uniform() -> None:
    us = [audit_u(42, t) for t in range(20000)]
    assert stats.kstest(us, "uniform").pvalue > 1e-4
    assert all(0.0 <= u < 1.0 for u in us)


def test_draws_are_stable_and_keyed_by_the_seed() -> None:
    ids = range(1, 2001)
    first = drawn_ids(7, ids, 0.2)
    assert first == drawn_ids(7, list(reversed(ids)), 0.2) == drawn_ids(7, ids, 0.2)
    assert all(drawn(7, t, 0.2) == (t in first) == (audit_u(7, t) < 0.2) for t in ids)
    other = drawn_ids(8, ids, 0.2)
    assert first != other and len(first & other) < len(first)  # another campaign, another draw
    assert first <= drawn_ids(7, ids, 0.5)  # nested in the rate: same u's
    assert drawn_ids(7, ids, 1.0) == frozenset(ids)
    assert all(drawn(7, t, None) for t in ids)  # no audit rate: every trial goes to humans


def test_draw_is_independent_of_outcomes() -> None:
    """Whatever the outcomes (here strongly structured by id), the share drawn among successes
    and among failures is the rate: the draw never sees a label."""
    rng = random.Random(5)
    outcome = {t: (t % 3 == 0) or rng.random() < 0.1 for t in range(1, 20001)}
    for value in (True, False):
        ids = [t for t, ok in outcome.items() if ok is value]
        k = len(drawn_ids(11, ids, 0.2))
        assert _binomial_ok(k, len(ids), 0.2), (value, k, len(ids))
    assert math.isnan(audit_fraction(11, [], 0.2))
    assert abs(audit_fraction(11, outcome, 0.2) - 0.2) < 0.02


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), float("inf"), "x", None])
def test_rate_must_be_in_zero_one(bad: object) -> None:
    with pytest.raises(ValueError, match=r"--audit-rate .*\(0, 1\]") as e:
        check_audit_rate(bad)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


def test_rate_accepted() -> None:
    assert check_audit_rate(0.2) == 0.2 and check_audit_rate(1) == 1.0


def test_audit_and_ppi_report_are_pure() -> None:
    script = ("import importlib, json, sys\n"
              "for m in ('protocols.audit', 'protocols.report_ppi', 'protocols.report_ppi_render'):\n"
              "    importlib.import_module(m)\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
              "{'ray', 'zmq', 'sqlalchemy', 'torch', 'streamlit'})))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
