"""The design-aware statistics agree with statsmodels/scipy on many random designs: exact
McNemar on matched blocks, Holm, Cochran's Q and the task-clustered interval; and exact
half-up rounding of the percentages shown."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
import statsmodels.api as sm
from statsmodels.stats.contingency_tables import cochrans_q as sm_cochrans_q
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from protocols.clustered import cluster_robust_variance, clustered_rate, wilson_bounds
from protocols.multiplicity import holm
from protocols.paired import PairedCounts, cochrans_q, mcnemar_exact, paired_counts
from protocols.report_model import BlockCount, CampaignDesign, CampaignPolicy, build_report
from protocols.stats import (
    format_cell,
    percent_half_up,
    ratio_percent_half_up,
    success_rate,
    wilson_interval,
)


@pytest.fixture(autouse=True)
def _no_full_gc_per_multipletests_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """statsmodels' multipletests runs gc.collect() on every call: ~0.6 s each inside a large
    test process. The reference values are unaffected by skipping it."""
    import gc

    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)


def random_design(rng: np.random.Generator, blocks: int, k: int, tasks: int) -> tuple[
        np.ndarray, np.ndarray]:
    """Paired binary outcomes (blocks x k) with task-level heterogeneity; and each block's task."""
    task_of = rng.integers(0, tasks, blocks)
    task_effect = rng.normal(0.0, 1.5, tasks)
    policy_effect = rng.normal(0.0, 0.7, k)
    logits = task_effect[task_of][:, None] + policy_effect[None, :]
    return (rng.random((blocks, k)) < 1 / (1 + np.exp(-logits))).astype(int), task_of


# --- exact McNemar ---------------------------------------------------------------------------


def test_mcnemar_exact_matches_statsmodels_on_every_small_table() -> None:
    for a_only in range(41):
        for b_only in range(41):
            table = [[7, a_only], [b_only, 3]]
            want = sm_mcnemar(table, exact=True).pvalue
            assert mcnemar_exact(a_only, b_only) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_mcnemar_on_random_paired_designs_matches_statsmodels() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        x, _ = random_design(rng, int(rng.integers(1, 200)), 2, int(rng.integers(1, 12)))
        counts = paired_counts((bool(a), bool(b)) for a, b in x)
        table = [[counts.both, counts.a_only], [counts.b_only, counts.neither]]
        want = sm_mcnemar(table, exact=True).pvalue
        assert mcnemar_exact(counts.a_only, counts.b_only) == pytest.approx(want, abs=1e-13)
        assert counts.pairs == len(x)
        assert counts.difference == pytest.approx(x[:, 0].mean() - x[:, 1].mean())


def test_paired_counts_refuse_negative_counts() -> None:
    with pytest.raises(ValueError):
        PairedCounts(1, -1, 0, 0)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)
    assert PairedCounts(0, 0, 0, 0).difference is None


# --- Holm ------------------------------------------------------------------------------------


def test_holm_matches_statsmodels_on_random_families() -> None:
    rng = random.Random(2)
    for _ in range(300):  # families with ties, 0 and 1
        m = rng.randint(1, 40)
        p = [rng.choice([rng.random(), rng.random() ** 4, 1.0, 0.0, 0.05]) for _ in range(m)]
        if rng.random() < 0.3:  # ties
            p = [rng.choice(p[:3]) for _ in range(m)]
        want = multipletests(p, method="holm")[1]
        assert holm(p) == pytest.approx(list(want), abs=1e-15)


def test_holm_skips_missing_tests() -> None:
    p = [0.01, None, 0.04, None, 0.03]
    want = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    got = holm(p)
    assert got[1] is None and got[3] is None
    assert [got[0], got[2], got[4]] == pytest.approx(list(want))
    assert holm([]) == () and holm([None]) == (None,)
    with pytest.raises(ValueError):
        holm([1.5])


# --- Cochran's Q -----------------------------------------------------------------------------


def _patterns(x: np.ndarray) -> list[tuple[tuple[bool, ...], int]]:
    out: dict[tuple[bool, ...], int] = {}
    for row in x:
        key = tuple(bool(v) for v in row)
        out[key] = out.get(key, 0) + 1
    return sorted(out.items())


def test_cochrans_q_matches_statsmodels_on_random_designs() -> None:
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(400):
        k = int(rng.integers(2, 6))
        x, _ = random_design(rng, int(rng.integers(1, 120)), k, int(rng.integers(1, 10)))
        ours = cochrans_q(_patterns(x))
        with np.errstate(divide="ignore", invalid="ignore"):
            ref = sm_cochrans_q(x)
        assert ours.df == k - 1 and ours.blocks == len(x)
        if not np.isfinite(ref.statistic):  # every block unanimous: Q undefined
            assert ours.statistic is None and ours.p_value is None
            continue
        checked += 1
        assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12, abs=1e-12)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-14)
    assert checked > 300


def test_cochrans_q_with_two_policies_is_mcnemars_chi_square() -> None:
    x = np.array([[1, 0]] * 9 + [[0, 1]] * 3 + [[1, 1]] * 5 + [[0, 0]] * 4)
    q = cochrans_q(_patterns(x))
    ref = sm_mcnemar([[5, 9], [3, 4]], exact=False, correction=False)
    assert q.statistic == pytest.approx(ref.statistic) and q.p_value == pytest.approx(ref.pvalue)
    assert cochrans_q([]).statistic is None


# --- the task-clustered interval -------------------------------------------------------------


def _statsmodels_cluster_variance(clusters: list[tuple[int, int]]) -> float:
    """Intercept-only OLS on 0/1 outcomes with task-clustered standard errors."""
    y, groups = [], []
    for g, (k, n) in enumerate(clusters):
        y += [1.0] * k + [0.0] * (n - k)
        groups += [g] * n
    fit = sm.OLS(np.array(y), np.ones((len(y), 1))).fit(
        cov_type="cluster", cov_kwds={"groups": np.array(groups)})
    return float(fit.bse[0]) ** 2


def test_cluster_variance_matches_statsmodels_cluster_robust_ols() -> None:
    rng = np.random.default_rng(4)
    for _ in range(150):
        tasks = int(rng.integers(2, 15))
        p_task = rng.beta(1.0, 1.0, tasks)
        sizes = rng.integers(1, 30, tasks)
        clusters = [(int(rng.binomial(n, p)), int(n)) for p, n in zip(p_task, sizes, strict=True)]
        k, n = sum(c[0] for c in clusters), sum(c[1] for c in clusters)
        if k in (0, n):
            continue
        assert cluster_robust_variance(clusters) == pytest.approx(
            _statsmodels_cluster_variance(clusters), rel=1e-9)


def test_clustered_interval_is_wilson_on_the_design_effect_n() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        tasks = int(rng.integers(1, 12))
        p_task = rng.beta(0.7, 0.7, tasks)
        clusters = [(int(rng.binomial(n, p)), int(n))
                    for p, n in zip(p_task, rng.integers(0, 25, tasks), strict=True)]
        cell = clustered_rate(clusters)
        k, n = sum(c[0] for c in clusters), sum(c[1] for c in clusters)
        assert (cell.k, cell.n) == (k, n)
        plain = success_rate(k, n)
        used = sum(1 for c in clusters if c[1] > 0)
        if used < 2 or k in (0, n):
            assert (cell.low, cell.high, cell.design_effect) == (plain.low, plain.high, 1.0)
            continue
        p = k / n
        variance = _statsmodels_cluster_variance([c for c in clusters if c[1] > 0])
        deff = max(1.0, variance / (p * (1 - p) / n))
        assert cell.design_effect == pytest.approx(deff, rel=1e-9)
        n_eff = n / deff
        ref_low, ref_high = proportion_confint(p * n_eff, n_eff, alpha=0.05, method="wilson")
        assert cell.low == pytest.approx(max(0.0, ref_low), abs=1e-9)
        assert cell.high == pytest.approx(min(1.0, ref_high), abs=1e-9)
        # never narrower than the episodes-independent Wilson interval
        assert cell.low <= plain.low + 1e-12 and cell.high >= plain.high - 1e-12


def test_clustered_interval_widens_with_task_heterogeneity() -> None:
    homogeneous = clustered_rate([(5, 10)] * 6)
    heterogeneous = clustered_rate([(10, 10), (0, 10)] * 3)
    assert homogeneous.design_effect == 1.0
    assert (homogeneous.low, homogeneous.high) == wilson_interval(30, 60)
    assert heterogeneous.design_effect > 5
    assert heterogeneous.high - heterogeneous.low > 2 * (homogeneous.high - homogeneous.low)
    assert wilson_bounds(0.5, 60) == pytest.approx(wilson_interval(30, 60))


# --- the report uses the blocks --------------------------------------------------------------


def _report_from(x: np.ndarray, task_of: np.ndarray, test: str = "mcnemar"):  # type: ignore[no-untyped-def]
    k = x.shape[1]
    policies = tuple(CampaignPolicy(10 + j, f"p{j}", "1", f"P-{j:04d}", j, len(x))
                     for j in range(k))
    design = CampaignDesign(1, "c", len(x), policies)
    blocks = [BlockCount(1, f"t{task_of[i]}", "seen", None,
                         tuple((10 + j, "success" if x[i, j] else "failure") for j in range(k)), 1)
              for i in range(len(x))]
    return build_report(blocks, [design], test=test)


def test_report_pairs_holm_and_omnibus_match_statsmodels_on_random_designs() -> None:
    rng = np.random.default_rng(6)
    for _ in range(25):
        k = int(rng.integers(2, 5))
        x, task_of = random_design(rng, int(rng.integers(4, 80)), k, int(rng.integers(2, 8)))
        report = _report_from(x, task_of)
        p_all = []
        for row in report.rows:
            for c in row.comparisons:
                if row.key not in ("seen", "overall"):
                    assert c.p_value is None
                    continue
                a, b = x[:, c.a], x[:, c.b]
                table = [[int(((a == 1) & (b == 1)).sum()), int(((a == 1) & (b == 0)).sum())],
                         [int(((a == 0) & (b == 1)).sum()), int(((a == 0) & (b == 0)).sum())]]
                assert c.p_value == pytest.approx(sm_mcnemar(table, exact=True).pvalue)
                assert c.difference == pytest.approx(a.mean() - b.mean())
                p_all.append(c.p_value)
        adjusted = [c.p_holm for r in report.rows for c in r.comparisons if c.p_value is not None]
        assert adjusted == pytest.approx(list(multipletests(p_all, method="holm")[1]))
        omnibus = report.row("overall").omnibus
        if k == 2:
            assert omnibus is None
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                ref = sm_cochrans_q(x)
            if np.isfinite(ref.statistic):
                assert omnibus.q.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-14)
        overall = report.row("overall").cells[0]
        clusters = [(int(x[task_of == t, 0].sum()), int((task_of == t).sum()))
                    for t in sorted(set(task_of.tolist()))]
        want = clustered_rate(clusters)
        assert (overall.k, overall.n) == (want.k, want.n)
        assert (overall.low, overall.high) == pytest.approx((want.low, want.high), abs=1e-12)


# --- exact half-up rounding ------------------------------------------------------------------


def test_percentages_round_half_up_exactly() -> None:
    assert ratio_percent_half_up(23, 40) == 58  # 57.5% (float rounding gave 57)
    assert math.floor(23 / 40 * 100.0 + 0.5) == 57  # the old bug, for the record
    assert format_cell(success_rate(23, 40)).startswith("58% [")
    for n in range(1, 401):
        for k in range(n + 1):
            want = math.floor(Fraction(100 * k, n) + Fraction(1, 2))
            assert ratio_percent_half_up(k, n) == want, (k, n)
    assert percent_half_up(0.575) == 58 and percent_half_up(0.005) == 1
    assert percent_half_up(0.0049999) == 0 and percent_half_up(1.0) == 100
    with pytest.raises(ValueError):
        ratio_percent_half_up(1, 0)
    with pytest.raises(ValueError):
        percent_half_up(float("nan"))


def test_cells_show_disputed_and_unlabeled_beside_n() -> None:
    cell = clustered_rate([(23, 40)], disputed=2, unlabeled=1)
    assert format_cell(cell) == "58% [42-71] n=40 (2 disputed, 1 unlabeled)"
    assert format_cell(clustered_rate([], unlabeled=3)) == "– n=0 (0 disputed, 3 unlabeled)"
