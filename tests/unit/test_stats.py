"""Statistics agree with the reference implementations and textbook values."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats import inter_rater
from statsmodels.stats.proportion import proportion_confint

from protocols.stats import (
    LabelVote,
    SuccessRate,
    bootstrap_mean_ci,
    cohen_kappa,
    compare_rates,
    fleiss_kappa,
    format_cell,
    resolve_outcome,
    success_rate,
    wilson_interval,
)

# --- Wilson interval -------------------------------------------------------------------------


def _wilson_cases() -> list[tuple[int, int]]:
    cases = [(k, n) for n in range(1, 41) for k in range(n + 1)]
    cases += [(k, n) for n in (97, 250, 1000, 12_345) for k in (0, 1, 2, n // 3, n // 2, n - 1, n)]
    return cases


@pytest.mark.parametrize("confidence", [0.80, 0.90, 0.95, 0.99])
def test_wilson_matches_statsmodels(confidence: float) -> None:
    for k, n in _wilson_cases():
        low, high = wilson_interval(k, n, confidence)
        ref_low, ref_high = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
        assert low == pytest.approx(max(0.0, ref_low), abs=1e-12), (k, n)
        assert high == pytest.approx(min(1.0, ref_high), abs=1e-12), (k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_edge_cases() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0 < high < 0.35
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.65 < low < 1
    assert wilson_interval(5, 10) == pytest.approx((1 - wilson_interval(5, 10)[1],
                                                     1 - wilson_interval(5, 10)[0]))


@pytest.mark.parametrize(("k", "n", "confidence"), [(-1, 5, 0.95), (6, 5, 0.95), (1, -1, 0.95),
                                                     (1, 5, 0.0), (1, 5, 1.0)])
def test_wilson_rejects_impossible_input(k: int, n: int, confidence: float) -> None:
    with pytest.raises(ValueError):
        wilson_interval(k, n, confidence)


def test_success_rate_record() -> None:
    rate = success_rate(6, 8)
    assert (rate.k, rate.n, rate.rate) == (6, 8, 0.75)
    assert (rate.low, rate.high) == wilson_interval(6, 8)
    empty = success_rate(0, 0)
    assert empty.rate is None and (empty.low, empty.high) == (0.0, 1.0)


# --- exact tests -----------------------------------------------------------------------------


def test_fisher_matches_scipy() -> None:
    for n1, n2 in [(1, 1), (3, 5), (8, 8), (10, 7), (20, 20)]:
        for k1, k2 in itertools.product(range(n1 + 1), range(n2 + 1)):
            result = compare_rates(k1, n1, k2, n2, test="fisher")
            reference = scipy_stats.fisher_exact([[k1, k2], [n1 - k1, n2 - k2]]).pvalue
            assert result.p_value == pytest.approx(min(1.0, reference), abs=1e-12)
            assert result.test == "fisher" and "Fisher" in result.test_name
            assert result.difference == pytest.approx(k1 / n1 - k2 / n2)


def test_barnard_matches_scipy() -> None:
    rng = random.Random(0)
    cases = [(0, 4, 4, 4), (4, 4, 0, 4), (2, 4, 2, 4), (7, 15, 12, 15), (0, 1, 1, 1)]
    for _ in range(30):
        n1, n2 = rng.randint(1, 14), rng.randint(1, 14)
        cases.append((rng.randint(0, n1), n1, rng.randint(0, n2), n2))
    for k1, n1, k2, n2 in cases:
        result = compare_rates(k1, n1, k2, n2, test="barnard")
        reference = scipy_stats.barnard_exact([[k1, k2], [n1 - k1, n2 - k2]]).pvalue
        assert result.p_value == pytest.approx(min(1.0, reference), abs=1e-9), (k1, n1, k2, n2)
        assert result.test == "barnard" and "Barnard" in result.test_name


def test_barnard_vaccine_example_from_scipy_docs() -> None:
    # scipy.stats.barnard_exact docs: vaccine trial [[7, 12], [8, 3]], one-sided ("less")
    # p = 0.03407; the test is symmetric here, so the two-sided p is twice that.
    result = compare_rates(7, 15, 12, 15, test="barnard")
    assert result.p_value == pytest.approx(2 * 0.03407, abs=2e-4)


def test_comparison_without_trials_has_no_p_value() -> None:
    result = compare_rates(3, 5, 0, 0)
    assert result.p_value is None and result.difference is None
    assert result.describe() == "fisher: n/a" and not result.significant()


def test_comparison_rejects_unknown_test_and_bad_counts() -> None:
    with pytest.raises(ValueError, match="unknown test 'chi2'"):
        compare_rates(1, 2, 1, 2, test="chi2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="second"):
        compare_rates(1, 2, 3, 2)


def test_comparison_states_its_test() -> None:
    result = compare_rates(9, 10, 1, 10)
    assert result.significant() and result.describe().startswith("fisher p=")


# --- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_mean_ci() -> None:
    values = np.random.default_rng(1).normal(0.5, 0.1, size=200).tolist()
    result = bootstrap_mean_ci(values, n_boot=2000, seed=3)
    assert result.mean == pytest.approx(float(np.mean(values)))
    assert result.low < result.mean < result.high
    normal_half = 1.96 * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    assert (result.high - result.low) / 2 == pytest.approx(normal_half, rel=0.2)
    assert bootstrap_mean_ci(values, n_boot=2000, seed=3) == result
    assert bootstrap_mean_ci(values, n_boot=2000, seed=4) != result


def test_bootstrap_edge_cases() -> None:
    empty = bootstrap_mean_ci([])
    assert (empty.mean, empty.low, empty.high, empty.n) == (None, None, None, 0)
    single = bootstrap_mean_ci([0.3])
    assert (single.mean, single.low, single.high) == (0.3, 0.3, 0.3)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_mean_ci([0.1, float("nan")])


# --- agreement -------------------------------------------------------------------------------


def test_cohen_kappa_textbook_example() -> None:
    # Wikipedia "Cohen's kappa": 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)


def test_cohen_kappa_matches_statsmodels() -> None:
    rng = np.random.default_rng(7)
    for categories in (2, 3, 4):
        for _ in range(10):
            a = rng.integers(0, categories, size=40)
            b = np.where(rng.random(40) < 0.6, a, rng.integers(0, categories, size=40))
            table, _ = inter_rater.to_table(np.column_stack([a, b]), bins=categories)
            expected = inter_rater.cohens_kappa(table).kappa
            assert cohen_kappa(a.tolist(), b.tolist()) == pytest.approx(expected, abs=1e-12)


def test_cohen_kappa_undefined_and_invalid() -> None:
    assert math.isnan(cohen_kappa([True, True], [True, True]))
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa([True], [True, False])


FLEISS_WIKIPEDIA = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_textbook_example() -> None:
    assert fleiss_kappa(FLEISS_WIKIPEDIA) == pytest.approx(0.20993, abs=1e-5)


def test_fleiss_kappa_matches_statsmodels() -> None:
    rng = np.random.default_rng(11)
    for raters, categories in [(2, 2), (3, 2), (5, 3), (4, 4)]:
        for _ in range(10):
            labels = rng.integers(0, categories, size=(30, raters))
            table, _ = inter_rater.aggregate_raters(labels, n_cat=categories)
            expected = inter_rater.fleiss_kappa(table, method="fleiss")
            assert fleiss_kappa(table.tolist()) == pytest.approx(expected, abs=1e-12)


def test_fleiss_kappa_refuses_ragged_tables() -> None:
    with pytest.raises(ValueError, match="same number of raters"):
        fleiss_kappa([[1, 1], [2, 1]])


# --- label resolution ------------------------------------------------------------------------


def human(evaluator: str | None, success: bool, progress: float | None = None) -> LabelVote:
    return LabelVote("human", evaluator, success, progress)


def sim(success: bool) -> LabelVote:
    return LabelVote("sim", None, success, None)


def test_no_votes_is_unlabeled() -> None:
    outcome = resolve_outcome([])
    assert (outcome.status, outcome.success, outcome.source, outcome.n_votes) == (
        "unlabeled", None, None, 0
    )


def test_sim_label_alone_decides() -> None:
    outcome = resolve_outcome([sim(True)])
    assert (outcome.status, outcome.success, outcome.source, outcome.n_votes) == (
        "resolved", True, "sim", 1
    )


def test_human_labels_override_sim() -> None:
    outcome = resolve_outcome([sim(True), human("ann", False)])
    assert (outcome.status, outcome.success, outcome.source, outcome.n_votes) == (
        "resolved", False, "human", 1
    )


def test_human_majority_wins() -> None:
    votes = [human("ann", True), human("bob", True), human("cy", False), sim(False)]
    outcome = resolve_outcome(votes)
    assert (outcome.status, outcome.success, outcome.successes, outcome.failures) == (
        "resolved", True, 2, 1
    )


def test_tie_is_disputed_never_counted() -> None:
    outcome = resolve_outcome([human("ann", True, 1.0), human("bob", False, 0.5), sim(True)])
    assert (outcome.status, outcome.success, outcome.source, outcome.n_votes) == (
        "disputed", None, "human", 2
    )
    assert outcome.progress == pytest.approx(0.75)


def test_an_evaluators_latest_label_replaces_their_earlier_one() -> None:
    outcome = resolve_outcome([human("ann", True), human("bob", False), human("ann", False)])
    assert (outcome.status, outcome.success, outcome.n_votes) == ("resolved", False, 2)


def test_sim_tie_is_disputed_too() -> None:
    assert resolve_outcome([sim(True), sim(False)]).status == "disputed"


# --- cells -----------------------------------------------------------------------------------


def test_format_cell() -> None:
    rate = success_rate(15, 24)
    low, high = wilson_interval(15, 24)
    expected = (f"63% [{math.floor(low * 100 + 0.5)}-{math.floor(high * 100 + 0.5)}] n=24 "
                "(0 disputed, 0 unlabeled)")
    assert format_cell(rate) == expected
    assert format_cell(success_rate(0, 0)) == "– n=0 (0 disputed, 0 unlabeled)"
    assert format_cell(success_rate(0, 5)) == "0% [0-43] n=5 (0 disputed, 0 unlabeled)"
    assert format_cell(success_rate(5, 5)) == "100% [57-100] n=5 (0 disputed, 0 unlabeled)"
    assert format_cell(SuccessRate(1, 3, 1 / 3, 0.0615, 0.7923, disputed=2, unlabeled=1)) == (
        "33% [6-79] n=3 (2 disputed, 1 unlabeled)")
    assert format_cell(success_rate(23, 40)).startswith("58% ")  # 57.5% rounds half up
