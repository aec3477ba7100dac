"""Anytime-valid sequential comparisons (protocols.sequential): exact first steps, decisions,
the fixed-n designs, and the e-process's guarantees checked by seeded simulation."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from protocols.sequential import (
    Decision,
    Question,
    SequentialState,
    _bets,
    _log_factor,
    decision,
    fixed_n,
    fixed_n_pair,
    fixed_n_threshold,
    simulate_paths,
    start,
    trials_saved,
    update,
    verdict,
)


def _fold(question: Question, outcomes: list) -> SequentialState:
    state = start(question)
    for outcome in outcomes:
        state = update(state, outcome)
    return state


def _pair_z(rng: np.random.Generator, sims: int, steps: int, p10: float, p01: float
            ) -> np.ndarray:
    u = rng.random((sims, steps))
    return np.where(u < p10, 1.0, np.where(u < p10 + p01, -1.0, 0.0))


def test_first_discordant_pair_bets_the_planned_kelly_fraction() -> None:
    # Planned alternative: difference 0.2 with discordance 0.4 -> Kelly bet 0.2 / 0.4 = 0.5 on
    # each side; a pair (1, 0) multiplies the upper wealth by 1.5 and the lower by 0.5.
    q = Question.pair(min_effect=0.2, discordance=0.4)
    state = update(start(q), (True, False))
    assert np.exp(state.log_efficacy) == pytest.approx([1.5, 0.5])
    assert state.e_value == pytest.approx(1.0)
    assert state.trials == 1 and state.estimate == 1.0
    assert decision(state) is Decision.RUNNING


def test_concordant_pairs_leave_the_efficacy_e_value_unchanged() -> None:
    q = Question.pair()
    state = _fold(q, [(True, True), (False, False)] * 5)
    assert state.log_efficacy == (0.0, 0.0)
    assert state.e_value == 1.0
    # ... but they are evidence that the difference is small (futility grows)
    assert state.futility_e_value > 1.0


def test_decisions_on_clear_data() -> None:
    q = Question.pair(cap=200)
    a = _fold(q, [(True, False)] * 40)
    assert decision(a) is Decision.A_BETTER and a.e_value >= 1 / q.alpha
    assert a.trials < 40 and a.late == 40 - a.trials  # sticky: later pairs only counted
    b = _fold(q, [(False, True)] * 40)
    assert decision(b) is Decision.B_BETTER
    same = _fold(q, [(True, True), (False, False)] * 100)
    assert decision(same) is Decision.NO_DIFFERENCE
    assert same.futility_e_value >= 1 / (1 - q.power)
    assert same.trials < q.cap


def test_cap_reached_without_a_decision() -> None:
    q = Question.pair(cap=6)
    state = _fold(q, [(True, False), (False, True)] * 3)
    assert decision(state) is Decision.CAP_REACHED and state.trials == 6
    assert decision(update(state, (True, False))) is Decision.CAP_REACHED


def test_trials_saved_against_the_fixed_plan() -> None:
    q = Question.pair()
    assert trials_saved(start(q), fixed_n(q)) is None
    a = _fold(q, [(True, False)] * 30)
    assert trials_saved(a, 77) == 77 - a.trials
    v = verdict(a)
    assert (v.decision, v.trials, v.late) == (Decision.A_BETTER, a.trials, 30 - a.trials)
    assert v.estimate == 1.0
    assert v.e_value >= 1 / q.alpha and v.futility_e_value < 1


def test_threshold_questions() -> None:
    two = Question.against_threshold(0.5, min_effect=0.2)
    assert decision(_fold(two, [True] * 30)) is Decision.A_BETTER
    assert decision(_fold(two, [False] * 30)) is Decision.B_BETTER
    one = Question.against_threshold(0.5, min_effect=0.2, two_sided=False)
    assert len(start(one).log_efficacy) == 1
    assert decision(_fold(one, [False] * 30)) is Decision.NO_DIFFERENCE  # never "below"


def test_questions_are_validated() -> None:
    with pytest.raises(ValueError, match="threshold"):
        Question(Question.pair().kind, threshold=0.5)
    with pytest.raises(ValueError, match="inside"):
        Question.against_threshold(0.9, min_effect=0.2)
    with pytest.raises(ValueError, match="discordance"):
        Question.pair(min_effect=0.5, discordance=0.3)
    with pytest.raises(ValueError, match="alpha"):
        Question.pair(alpha=0.0)
    with pytest.raises(TypeError, match=r"\(a_success, b_success\)"):
        update(start(Question.pair()), True)
    with pytest.raises(TypeError, match="one success flag"):
        update(start(Question.against_threshold(0.5)), (True, False))


def test_fixed_n_designs_match_the_textbook_formulas() -> None:
    # Connor (1987): (1.960 sqrt(.4) + 0.842 sqrt(.36))^2 / .04 = 76.09 -> 77 pairs
    assert fixed_n_pair(0.05, 0.8, 0.2, 0.4) == 77
    # (1.960 * .5 + 0.842 sqrt(.21))^2 / .04 = 46.6 -> 47 trials
    assert fixed_n_threshold(0.05, 0.8, 0.5, 0.2) == 47
    assert fixed_n(Question.against_threshold(0.5, min_effect=0.2)) == 47
    assert fixed_n_pair(0.05, 0.8, 0.2, 0.4, two_sided=False) < 77


def test_simulate_paths_is_the_fold_of_update() -> None:
    q = Question.pair(cap=60)
    rng = np.random.default_rng(3)
    z = _pair_z(rng, 12, q.cap, 0.3, 0.1)
    paths = simulate_paths(q, z)
    for row, dec, used in zip(z, paths.decisions, paths.trials):
        state = _fold(q, [(v > 0, v < 0) for v in row])
        assert decision(state) is dec and state.trials == used
    tq = Question.against_threshold(0.4, cap=50)
    x = (rng.random((8, 50)) < 0.6).astype(float)
    tpaths = simulate_paths(tq, x)
    for row, dec in zip(x, tpaths.decisions):
        assert decision(_fold(tq, [bool(v) for v in row])) is dec


def test_efficacy_wealth_is_a_supermartingale_and_ville_holds_under_the_null() -> None:
    # H0: p10 = p01 (no difference). The two-sided e-value has mean <= 1 at every time and
    # crosses 1/alpha on at most alpha of the paths when looked at after every pair.
    q = Question.pair(cap=300, power=0.999999)  # futility practically off: run to the cap
    rng = np.random.default_rng(11)
    sims = 4000
    z = _pair_z(rng, sims, q.cap, 0.25, 0.25)
    paths = simulate_paths(q, z)
    rejected = np.isin(np.array([d.value for d in paths.decisions]), ["a_better", "b_better"])
    assert rejected.mean() <= q.alpha
    # mean wealth at fixed times (no stopping): martingale, E = 1 within Monte-Carlo error
    efficacy, _ = _bets(q)
    log_w = np.zeros((len(efficacy), sims))
    s1 = np.zeros(sims)
    s2 = np.zeros(sims)
    for t in range(40):
        args = (t, s1, s2, z[:, t], q.prior_weight)
        log_w += np.stack([_log_factor(b, *args) for b in efficacy])
        s1 += z[:, t]
        s2 += z[:, t] ** 2
    e = np.exp(log_w).mean(axis=0)
    assert e.min() >= 0.0
    assert e.mean() <= 1.0 + 4 * e.std() / math.sqrt(sims)


def test_one_sided_wealth_is_a_supermartingale_under_a_composite_null() -> None:
    # H0: a is worse (p10 < p01): the upper wealth may only shrink in expectation.
    q = Question.pair(cap=200, two_sided=False, power=0.999999)
    z = _pair_z(np.random.default_rng(5), 3000, q.cap, 0.15, 0.25)
    paths = simulate_paths(q, z)
    assert np.mean([d is Decision.A_BETTER for d in paths.decisions]) <= q.alpha / 5


def test_detects_a_true_difference_with_the_planned_power() -> None:
    q = Question.pair(min_effect=0.2, discordance=0.4, cap=2 * 77)
    z = _pair_z(np.random.default_rng(8), 2000, q.cap, 0.3, 0.1)
    paths = simulate_paths(q, z)
    decisions = np.array([d.value for d in paths.decisions])
    assert (decisions == "a_better").mean() >= 0.8
    assert (decisions == "no_difference").mean() <= 1 - q.power  # futility's guarantee
    assert (decisions == "b_better").mean() <= q.alpha


@pytest.mark.parametrize("module", ["protocols/sequential.py", "protocols/ppi.py"])
def test_pure_modules_import_only_numpy_scipy_and_the_standard_library(module: str) -> None:
    tree = ast.parse((Path(__file__).resolve().parents[2] / module).read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree)
             if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    assert roots <= {"__future__", "math", "itertools", "collections", "dataclasses", "enum",
                     "typing", "numpy", "scipy", "protocols"}
