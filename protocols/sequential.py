"""Anytime-valid sequential comparisons: stop a campaign's question as soon as it is decided.

Two questions are supported, both on binary outcomes:

* **pair** -- policy a against policy b on the campaign's blocks (same task, trial index and
  scene seed): each resolved block gives a pair (a, b) in {0, 1}^2 and the paired difference
  z = a - b in {-1, 0, 1}, whose mean is the difference of success rates p_a - p_b. Concordant
  blocks (z = 0) leave every bet unchanged, so only discordant pairs carry evidence, as in
  McNemar's test.
* **threshold** -- one policy's success rate p against a fixed p0: z = outcome in {0, 1}.

Each hypothesis about the mean of z is tested with a *betting e-process* (Waudby-Smith &
Ramdas, "Estimating means of bounded random variables by betting", JRSS-B 2023; Shafer & Vovk):
for H0: E[z] <= m0 the wealth K_t = prod_i (1 + lam_i (z_i - m0)), with a bet lam_i >= 0 chosen
from the outcomes before i (predictable) and small enough that every factor stays >= 0, is a
nonnegative supermartingale under H0, so Ville's inequality gives P(sup_t K_t >= 1/alpha) <=
alpha: the test may be looked at after every outcome and stopped at any time. The bet is the
plug-in Kelly fraction (mean - m0) / E[(z - m0)^2] (the aGRAPA rule of that paper; for the
paired difference it is exactly Kelly's (p10 - p01) / (p10 + p01)), estimated from the outcomes
so far shrunk towards the question's planning alternative, and truncated.

Decisions (STEP, arXiv 2503.10966, motivates stopping both for a difference and for its absence;
no code of it was read):

* efficacy: two-sided, the average of the e-processes for H0: mean <= m0 and H0: mean >= m0
  (an e-process for mean = m0) crosses 1/alpha; the side with more wealth gives the direction,
  and each directional error is also <= alpha. One-sided: only the upper e-process.
* futility ("no difference"): e-processes for H0: mean >= m0 + delta (and, two-sided,
  H0: mean <= m0 - delta) all cross 1/beta, beta = 1 - power: the chance of declaring no
  difference when the true effect is at least the minimal effect delta is <= beta.
* the cap: the question's trial budget is spent without either -> cap_reached.

A decision is sticky: outcomes that arrive after it (episodes already running) are counted in
`late` but change nothing. Pure: numpy and scipy only. The same step function runs on scalars
(`update`) and on arrays of simulated campaigns (`simulate_paths`, used by the benchmark).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

__all__ = [
    "Decision",
    "Paths",
    "Question",
    "QuestionKind",
    "SequentialState",
    "Verdict",
    "decision",
    "fixed_n",
    "fixed_n_pair",
    "fixed_n_threshold",
    "simulate_paths",
    "start",
    "trials_saved",
    "update",
    "verdict",
]

_BET_LIMIT = 0.75  # fraction of the largest bet that keeps the wealth >= 0


class QuestionKind(Enum):
    PAIR = "pair"  # policy a against policy b on matched blocks
    THRESHOLD = "threshold"  # one policy against a fixed success rate


class Decision(Enum):
    RUNNING = "running"
    A_BETTER = "a_better"  # threshold questions: the policy is above the threshold
    B_BETTER = "b_better"  # threshold questions: the policy is below the threshold
    NO_DIFFERENCE = "no_difference"  # |effect| < minimal effect, by the futility e-processes
    CAP_REACHED = "cap_reached"  # the trial cap was spent without a decision


@dataclass(frozen=True)
class Question:
    """What a campaign asks, with its error rates. `min_effect` is on the success-rate scale
    (pair: |p_a - p_b|; threshold: |p - threshold|); `discordance` is the planning guess of
    P(a != b) for pairs, used only for the fixed-n design and to start the bets (the test is
    valid whatever it is). `prior_weight` is how many pseudo-outcomes that start is worth."""

    kind: QuestionKind
    alpha: float = 0.05
    power: float = 0.8
    min_effect: float = 0.2
    cap: int = 200
    threshold: float | None = None
    two_sided: bool = True
    discordance: float = 0.4
    prior_weight: float = 50.0

    def __post_init__(self) -> None:
        where = f"sequential question {self.kind.value}"
        if not 0.0 < self.alpha < 1.0 or not 0.0 < self.power < 1.0:
            raise ValueError(f"{where}: alpha and power must be in (0, 1), got "
                             f"{self.alpha}, {self.power}")
        if self.cap < 1 or not self.prior_weight > 0:
            raise ValueError(f"{where}: cap must be >= 1 and prior_weight > 0, got "
                             f"{self.cap}, {self.prior_weight}")
        if self.kind is QuestionKind.THRESHOLD:
            p0 = self.threshold
            if p0 is None or not 0.0 < p0 < 1.0:
                raise ValueError(f"{where}: threshold must be in (0, 1), got {p0}")
            if not p0 + self.min_effect < 1.0 or (self.two_sided and not p0 - self.min_effect > 0):
                raise ValueError(f"{where}: threshold +- min_effect must stay inside (0, 1); "
                                 "use a smaller min_effect or a one-sided question")
        else:
            if self.threshold is not None:
                raise ValueError(f"{where}: a pair question takes no threshold")
            if not 0.0 < self.min_effect <= self.discordance <= 1.0:
                raise ValueError(f"{where}: need 0 < min_effect <= discordance <= 1, got "
                                 f"{self.min_effect}, {self.discordance}")

    @classmethod
    def pair(cls, **kwargs: Any) -> Question:
        return cls(QuestionKind.PAIR, **kwargs)

    @classmethod
    def against_threshold(cls, threshold: float, **kwargs: Any) -> Question:
        return cls(QuestionKind.THRESHOLD, threshold=threshold, **kwargs)


@dataclass(frozen=True)
class _Bet:
    """One betting e-process for a one-sided null about the mean of z."""

    m0: float  # null boundary
    side: int  # +1: H0 mean <= m0 (wealth grows when z > m0); -1: H0 mean >= m0
    limit: float  # largest bet allowed
    prior_mean: float  # planning alternative the bet starts from
    prior_second: float  # E[(z - m0)^2] under that alternative


def _bets(q: Question) -> tuple[tuple[_Bet, ...], tuple[_Bet, ...]]:
    """(efficacy bets: upper first, then lower if two-sided; futility bets)."""
    d = q.min_effect
    if q.kind is QuestionKind.PAIR:
        lo, hi, centre = -1.0, 1.0, 0.0

        def second(mean: float, m0: float) -> float:  # E[(D - m0)^2] with E[D^2] = discordance
            return max(q.discordance, abs(mean)) - 2 * m0 * mean + m0 * m0
    else:
        assert q.threshold is not None
        lo, hi, centre = 0.0, 1.0, q.threshold

        def second(mean: float, m0: float) -> float:  # binary outcome with P(1) = mean
            return mean * (1 - m0) ** 2 + (1 - mean) * m0 * m0

    def bet(m0: float, side: int, alt: float) -> _Bet:
        room = (m0 - lo) if side > 0 else (hi - m0)
        return _Bet(m0, side, _BET_LIMIT / room, alt, second(alt, m0))

    efficacy = [bet(centre, +1, centre + d)]
    futility = [bet(centre + d, -1, centre)]
    if q.two_sided:
        efficacy.append(bet(centre, -1, centre - d))
        futility.append(bet(centre - d, +1, centre))
    return tuple(efficacy), tuple(futility)


@dataclass(frozen=True)
class SequentialState:
    """Everything the test knows: counts of z so far and the log-wealth of each e-process."""

    question: Question
    trials: int = 0  # outcomes used by the test (blocks for pairs)
    sum_z: float = 0.0
    sum_z2: float = 0.0
    log_efficacy: tuple[float, ...] = ()
    log_futility: tuple[float, ...] = ()
    decided: Decision = Decision.RUNNING
    late: int = 0  # outcomes that arrived after the decision (not used)

    @property
    def e_value(self) -> float:
        """Efficacy e-value: two-sided, the mean of the two one-sided wealths."""
        return float(np.mean(np.exp(self.log_efficacy)))

    @property
    def futility_e_value(self) -> float:
        """The smallest futility wealth (all of them must cross 1/beta)."""
        return float(np.exp(min(self.log_futility)))

    @property
    def estimate(self) -> float | None:
        """Mean of z so far: p_a - p_b for pairs, the success rate for thresholds."""
        return self.sum_z / self.trials if self.trials else None


def start(question: Question) -> SequentialState:
    efficacy, futility = _bets(question)
    return SequentialState(question, log_efficacy=(0.0,) * len(efficacy),
                           log_futility=(0.0,) * len(futility))


def _log_factor(bet: _Bet, n: Any, sum_z: Any, sum_z2: Any, z: Any, w: float) -> Any:
    """log(1 + side * lam * (z - m0)) with lam predictable from (n, sum_z, sum_z2) and the
    prior worth w pseudo-outcomes. Works on floats and on numpy arrays alike."""
    mean = (w * bet.prior_mean + sum_z) / (w + n)
    around = sum_z2 - 2 * bet.m0 * sum_z + n * bet.m0 * bet.m0  # sum of (z - m0)^2
    second = (w * bet.prior_second + around) / (w + n)
    lam = np.clip(bet.side * (mean - bet.m0) / np.maximum(second, 1e-12), 0.0, bet.limit)
    return np.log1p(bet.side * lam * (z - bet.m0))


def _outcome_z(question: Question, outcome: tuple[bool, bool] | bool) -> float:
    if question.kind is QuestionKind.PAIR:
        if not isinstance(outcome, tuple) or len(outcome) != 2:
            raise TypeError(f"a pair question takes (a_success, b_success), got {outcome!r}")
        return float(bool(outcome[0])) - float(bool(outcome[1]))
    if isinstance(outcome, tuple):
        raise TypeError(f"a threshold question takes one success flag, got {outcome!r}")
    return float(bool(outcome))


def _decide(q: Question, trials: Any, log_eff: Any, log_fut: Any) -> Any:
    """Decision codes 0 running, 1 a better, 2 b better, 3 no difference, 4 cap; arrays of
    log-wealth have the process as the first axis."""
    log_eff = np.asarray(log_eff, dtype=float)
    log_fut = np.asarray(log_fut, dtype=float)
    combined = np.logaddexp.reduce(log_eff, axis=0) - math.log(len(log_eff))
    efficacy = combined >= math.log(1 / q.alpha)
    upper = log_eff[0] >= (log_eff[1] if len(log_eff) > 1 else -np.inf)
    futile = np.min(log_fut, axis=0) >= math.log(1 / (1 - q.power))
    code = np.where(efficacy, np.where(upper, 1, 2),
                    np.where(futile, 3, np.where(np.asarray(trials) >= q.cap, 4, 0)))
    return code


_CODES = (Decision.RUNNING, Decision.A_BETTER, Decision.B_BETTER, Decision.NO_DIFFERENCE,
          Decision.CAP_REACHED)


def update(state: SequentialState, outcome: tuple[bool, bool] | bool) -> SequentialState:
    """The state after one more resolved outcome: (a, b) for pairs, a flag for thresholds."""
    q = state.question
    z = _outcome_z(q, outcome)
    if state.decided is not Decision.RUNNING:
        return replace(state, late=state.late + 1)
    efficacy, futility = _bets(q)
    args = (state.trials, state.sum_z, state.sum_z2, z, q.prior_weight)
    log_eff = tuple(le + float(_log_factor(b, *args)) for b, le in zip(efficacy,
                                                                        state.log_efficacy))
    log_fut = tuple(lf + float(_log_factor(b, *args)) for b, lf in zip(futility,
                                                                       state.log_futility))
    trials = state.trials + 1
    code = int(_decide(q, trials, log_eff, log_fut))
    return replace(state, trials=trials, sum_z=state.sum_z + z, sum_z2=state.sum_z2 + z * z,
                   log_efficacy=log_eff, log_futility=log_fut, decided=_CODES[code])


def decision(state: SequentialState) -> Decision:
    return state.decided


@dataclass(frozen=True)
class Verdict:
    """What a report shows for a question: its state, evidence and the trials it used."""

    decision: Decision
    e_value: float  # efficacy e-value (decides a difference at >= 1 / alpha)
    futility_e_value: float  # decides no difference at >= 1 / (1 - power)
    trials: int
    late: int
    estimate: float | None


def verdict(state: SequentialState) -> Verdict:
    return Verdict(state.decided, state.e_value, state.futility_e_value, state.trials,
                   state.late, state.estimate)


def trials_saved(state: SequentialState, fixed_n: int) -> int | None:
    """Trials the fixed-n plan would still have run after this decision (negative when the
    sequential test used more); None while the question is running."""
    if state.decided is Decision.RUNNING:
        return None
    return fixed_n - state.trials


# ---------------------------------------------------------------------------- fixed-n design

def _z_alpha(alpha: float, two_sided: bool) -> float:
    return float(scipy_stats.norm.ppf(1 - alpha / 2 if two_sided else 1 - alpha))


def fixed_n_pair(alpha: float, power: float, min_effect: float, discordance: float,
                 two_sided: bool = True) -> int:
    """Pairs a classical McNemar test needs (Connor 1987, Biometrics 43:207):
    n = (z_a sqrt(psi) + z_b sqrt(psi - delta^2))^2 / delta^2, psi = P(a != b)."""
    if not 0 < min_effect <= discordance <= 1:
        raise ValueError("fixed_n_pair: need 0 < min_effect <= discordance <= 1")
    za, zb = _z_alpha(alpha, two_sided), float(scipy_stats.norm.ppf(power))
    root = za * math.sqrt(discordance) + zb * math.sqrt(discordance - min_effect ** 2)
    return math.ceil(root ** 2 / min_effect ** 2)


def fixed_n_threshold(alpha: float, power: float, threshold: float, min_effect: float,
                      two_sided: bool = True) -> int:
    """Trials a one-sample binomial (normal) test of p = p0 needs against p0 + delta:
    n = (z_a sqrt(p0 q0) + z_b sqrt(p1 q1))^2 / delta^2."""
    p0, p1 = threshold, threshold + min_effect
    if not 0 < p0 < p1 < 1:
        raise ValueError("fixed_n_threshold: need 0 < threshold < threshold + min_effect < 1")
    za, zb = _z_alpha(alpha, two_sided), float(scipy_stats.norm.ppf(power))
    root = za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(p1 * (1 - p1))
    return math.ceil(root ** 2 / min_effect ** 2)


def fixed_n(question: Question) -> int:
    """The fixed plan at the question's alpha and power for its minimal effect."""
    q = question
    if q.kind is QuestionKind.PAIR:
        return fixed_n_pair(q.alpha, q.power, q.min_effect, q.discordance, q.two_sided)
    assert q.threshold is not None
    return fixed_n_threshold(q.alpha, q.power, q.threshold, q.min_effect, q.two_sided)


# ----------------------------------------------------------------- many campaigns at once

@dataclass(frozen=True)
class Paths:
    """Outcome of many simulated campaigns: decision and trials used per campaign."""

    decisions: tuple[Decision, ...]
    trials: np.ndarray  # trials used to reach the decision (the cap if none)
    max_e_value: np.ndarray  # largest efficacy e-value seen up to the decision


def simulate_paths(question: Question, z: np.ndarray) -> Paths:
    """Run the test on each row of z (campaigns x cap outcomes, z as in `update`) with a
    look after every outcome; identical to folding `update` over each row."""
    q = question
    z = np.asarray(z, dtype=float)
    if z.ndim != 2 or z.shape[1] < q.cap:
        raise ValueError(f"simulate_paths: need a (campaigns, >= {q.cap}) array, got {z.shape}")
    sims = z.shape[0]
    efficacy, futility = _bets(q)
    log_eff = np.zeros((len(efficacy), sims))
    log_fut = np.zeros((len(futility), sims))
    sum_z = np.zeros(sims)
    sum_z2 = np.zeros(sims)
    code = np.zeros(sims, dtype=int)
    used = np.full(sims, q.cap)
    best = np.zeros(sims)
    for t in range(q.cap):
        live = code == 0
        if not live.any():
            break
        zt = z[:, t]
        args = (t, sum_z, sum_z2, zt, q.prior_weight)
        step_eff = np.stack([_log_factor(b, *args) for b in efficacy])
        step_fut = np.stack([_log_factor(b, *args) for b in futility])
        log_eff = np.where(live, log_eff + step_eff, log_eff)
        log_fut = np.where(live, log_fut + step_fut, log_fut)
        sum_z = np.where(live, sum_z + zt, sum_z)
        sum_z2 = np.where(live, sum_z2 + zt * zt, sum_z2)
        combined = np.exp(np.logaddexp.reduce(log_eff, axis=0)) / len(efficacy)
        best = np.where(live, np.maximum(best, combined), best)
        new = np.where(live, _decide(q, t + 1, log_eff, log_fut), code)
        used = np.where(live & (new != 0), t + 1, used)
        code = new
    return Paths(tuple(_CODES[c] for c in code), used, best)
