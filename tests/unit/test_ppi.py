"""Prediction-powered inference (protocols.ppi): exact small cases, the limiting cases (a
perfect and a useless detector), unbiasedness and coverage by seeded simulation, stratified
audits, the confusion matrix with kappa, and the between-policy disagreement check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocols.ppi import (
    Agreement,
    Stratum,
    agreement,
    auto_only,
    disagreement_check,
    human_only,
    ppi,
    ppi_stratified,
)

Z95 = 1.959963984540054


def test_human_and_auto_only_are_wald_intervals() -> None:
    est = human_only([1, 1, 0, 0])
    assert est.rate == 0.5 and est.std_error == pytest.approx(math.sqrt((1 / 3) / 4))
    assert est.low == pytest.approx(0.5 - Z95 * est.std_error)
    assert est.human_labels == 4 and est.auto_labels == 0
    auto = auto_only([1, 0, 0, 0, 0])
    assert auto.rate == 0.2 and auto.std_error == pytest.approx(math.sqrt(0.2 / 5))
    assert auto.method == "auto" and auto.width == pytest.approx(2 * Z95 * auto.std_error)


def test_ppi_small_case_by_hand() -> None:
    # unaudited auto: mean 0.5, var 1/3, N = 4; audit: human - auto = (0, 0, 1, -1, 0),
    # mean 0, var 0.5, n = 5 -> rate 0.5, variance 1/12 + 1/10
    est = ppi([1, 1, 0, 0], [1, 0, 0, 1, 1], [1, 0, 1, 0, 1])
    assert est.rate == pytest.approx(0.5)
    assert est.std_error == pytest.approx(math.sqrt(1 / 12 + 0.5 / 5))
    assert (est.human_labels, est.auto_labels) == (5, 9)


def test_a_constant_detector_gives_the_human_estimate() -> None:
    human = [1, 0, 1, 1, 0, 1]
    est = ppi([1] * 50, [1] * 6, human)
    ref = human_only(human)
    assert est.rate == pytest.approx(ref.rate) and est.std_error == pytest.approx(ref.std_error)


def test_a_perfect_detector_gives_the_all_auto_estimate() -> None:
    rng = np.random.default_rng(0)
    unaudited = (rng.random(400) < 0.3).tolist()
    audited = (rng.random(40) < 0.3).tolist()
    est = ppi(unaudited, audited, audited)
    assert est.rate == pytest.approx(np.mean(unaudited))
    assert est.std_error == pytest.approx(np.std(unaudited, ddof=1) / math.sqrt(400))


def _biased_detector(rng: np.random.Generator, y: np.ndarray, miss: float, false_success: float
                     ) -> np.ndarray:
    u = rng.random(y.shape)
    return np.where(y == 1, u >= miss, u < false_success).astype(float)


def test_ppi_is_unbiased_and_covers_where_the_naive_estimate_does_not() -> None:
    rng = np.random.default_rng(42)
    rate, big_n, n, reps = 0.4, 500, 60, 400
    ppi_rates, covered, naive_covered = [], 0, 0
    for _ in range(reps):
        y = (rng.random(big_n + n) < rate).astype(float)
        f = _biased_detector(rng, y, miss=0.05, false_success=0.25)  # optimistic detector
        est = ppi(f[n:], f[:n], y[:n])
        ppi_rates.append(est.rate)
        covered += est.low <= rate <= est.high
        naive = auto_only(f)
        naive_covered += naive.low <= rate <= naive.high
    se = np.std(ppi_rates) / math.sqrt(reps)
    assert abs(np.mean(ppi_rates) - rate) < 4 * se
    assert covered / reps >= 0.92
    assert naive_covered / reps < 0.2  # narrow and centred on the detector's bias


def test_power_tuning_ignores_a_useless_detector_and_keeps_a_good_one() -> None:
    rng = np.random.default_rng(7)
    y = (rng.random(80) < 0.5).astype(float)
    noise = (rng.random(2080) < 0.5).astype(float)  # independent of the truth
    plain = ppi(noise[80:], noise[:80], y)
    tuned = ppi(noise[80:], noise[:80], y, power_tuned=True)
    human = human_only(y)
    assert plain.std_error > 1.3 * human.std_error
    assert tuned.std_error < 1.1 * human.std_error
    good = _biased_detector(rng, np.concatenate([y, (rng.random(2000) < 0.5)]), 0.05, 0.05)
    tuned_good = ppi(good[80:], good[:80], y, power_tuned=True)
    assert tuned_good.std_error < 0.75 * human.std_error  # 11 % disagreement in this audit
    assert tuned_good.std_error <= ppi(good[80:], good[:80], y).std_error


def test_stratified_audit_weights_strata_by_their_episodes() -> None:
    # stratum 1: 10 episodes, all audited at 50 %; stratum 2: 30 episodes, audited at 10 %
    s1 = Stratum([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], [1, 0, 1, 0, 1])
    s2 = Stratum([0] * 27, [0, 1, 0], [0, 1, 1])
    est = ppi_stratified([s1, s2])
    r1 = 0.6 + 0.0
    r2 = 0.0 + (1 / 3)
    assert est.rate == pytest.approx(0.25 * r1 + 0.75 * r2)
    v1 = 0.3 / 5 + 0.5 / 5
    v2 = 0.0 / 27 + (1 / 3) / 3
    assert est.std_error == pytest.approx(math.sqrt(0.25 ** 2 * v1 + 0.75 ** 2 * v2))


def test_stratified_estimate_is_unbiased_with_unequal_audit_rates() -> None:
    rng = np.random.default_rng(1)
    # easy category (rate .8, audited at 30 %) and hard one (rate .2, audited at 5 %)
    sizes, rates, audit = (100, 300), (0.8, 0.2), (30, 15)
    truth = (100 * 0.8 + 300 * 0.2) / 400
    estimates = []
    for _ in range(300):
        strata = []
        for size, rate, n in zip(sizes, rates, audit):
            y = (rng.random(size) < rate).astype(float)
            f = _biased_detector(rng, y, 0.1, 0.2)
            strata.append(Stratum(f[n:], f[:n], y[:n]))
        estimates.append(ppi_stratified(strata).rate)
    assert abs(np.mean(estimates) - truth) < 4 * np.std(estimates) / math.sqrt(300)


def test_errors_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match="2 audited"):
        ppi([1, 0], [1], [1])
    with pytest.raises(ValueError, match="both labels"):
        ppi([1, 0], [1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="0/1"):
        human_only([1, 2, 0])


def test_confusion_matrix_and_kappa() -> None:
    g = agreement([1, 1, 0, 0], [1, 0, 0, 0])
    assert (g.both_success, g.auto_only, g.human_only, g.both_failure) == (1, 0, 1, 2)
    assert g.disagreement_rate == 0.25
    assert g.kappa == pytest.approx(0.5)  # p_o = .75, p_e = .5*.25 + .5*.75 = .5
    assert agreement([1, 0], [1, 0]).kappa == 1.0
    assert agreement([1, 1], [1, 1]).kappa is None  # chance agreement is 1
    assert Agreement(0, 0, 0, 0).disagreement_rate is None


def test_disagreement_check_flags_a_policy_dependent_detector() -> None:
    fair = {"a": Agreement(40, 3, 2, 55), "b": Agreement(30, 2, 3, 65),
            "c": Agreement(20, 3, 2, 75)}
    assert disagreement_check(fair).flagged == ()
    biased = dict(fair, c=Agreement(20, 25, 5, 50))  # 30 % disagreement on c only
    check = disagreement_check(biased)
    assert {(p.policy_a, p.policy_b) for p in check.flagged} == {("a", "c"), ("b", "c")}
    for pair in check.pairs:
        assert pair.p_holm >= pair.p_value
