"""Success rates from many machine labels and a few human ones: prediction-powered inference.

A success detector labels every episode (`auto`, 0/1); humans label a random audit sample
(`human`, 0/1). Three estimates of a success rate, each with a normal (Wald) interval:

* human-only: the mean of the human labels (valid, wide: only n labels).
* auto-only (naive): the mean of the detector's labels, as if the detector were right. Its
  interval is narrow and *wrong* whenever the detector is biased: it does not cover the true
  rate, whatever N.
* prediction-powered (PPI; Angelopoulos, Bates, Fannjiang, Jordan & Zrnic, "Prediction-powered
  inference", Science 382, 2023): theta = mean of auto over the unaudited episodes + the
  *rectifier*, the mean over the audit of (human - auto). The rectifier removes the detector's
  bias, so theta is unbiased for any detector; its variance var(auto)/N + var(human - auto)/n
  is small when the detector mostly agrees with humans. With `power_tuned` (PPI++,
  Angelopoulos, Duchi & Zrnic 2023) the detector's labels are scaled by an estimated
  lam in [0, 1], so a useless detector costs nothing (lam -> 0 gives the human-only estimate).

The audit may be stratified (policy x category, each with its own known sampling rate): each
stratum gets its own PPI estimate and the strata are combined with weights N_h / N, i.e. each
audited episode counts 1 / (its inclusion probability). The intervals are asymptotic (normal);
the unit tests and benchmarks/sequential.py check coverage by simulation.

Also here: the detector-vs-human confusion matrix and Cohen's kappa, and a check that flags
when the detector disagrees with humans more for some policies than for others (Fisher's
exact test on the disagreement counts of each pair of policies, Holm over the pairs): a
detector whose errors depend on the policy biases naive comparisons between policies.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats

from protocols.multiplicity import holm

__all__ = [
    "Agreement",
    "DisagreementCheck",
    "DisagreementPair",
    "Estimate",
    "Labels",
    "Stratum",
    "agreement",
    "auto_only",
    "disagreement_check",
    "human_only",
    "ppi",
    "ppi_stratified",
]

Labels: TypeAlias = Sequence[bool] | Sequence[int] | npt.NDArray[np.generic]  # 0/1 per episode


@dataclass(frozen=True)
class Estimate:
    """A success rate with its two-sided normal interval (not clipped to [0, 1])."""

    method: str  # "human" | "auto" | "ppi"
    rate: float
    std_error: float
    low: float
    high: float
    human_labels: int
    auto_labels: int

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class Stratum:
    """One stratum (e.g. policy x category) of a known-probability audit: `auto_unaudited` are
    the detector's labels of the episodes humans did not see; `auto_audited` and `human` are
    the two labels of each audited episode, in the same order."""

    auto_unaudited: Labels
    auto_audited: Labels
    human: Labels

    @property
    def episodes(self) -> int:
        return len(self.auto_unaudited) + len(self.auto_audited)


def _array(labels: Labels, what: str) -> np.ndarray:
    arr = np.asarray(labels, dtype=float)
    if arr.ndim != 1 or not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError(f"ppi: {what} must be a flat sequence of 0/1 labels")
    return arr


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"ppi: confidence must be in (0, 1), got {confidence}")
    return float(scipy_stats.norm.ppf(0.5 + confidence / 2))


def _var(x: np.ndarray) -> float:
    return float(np.var(x, ddof=1)) if x.size > 1 else 0.0


def _estimate(method: str, rate: float, variance: float, confidence: float, human: int,
              auto: int) -> Estimate:
    se = math.sqrt(max(variance, 0.0))
    half = _z(confidence) * se
    return Estimate(method, rate, se, rate - half, rate + half, human, auto)


def human_only(human: Labels, confidence: float = 0.95) -> Estimate:
    y = _array(human, "human labels")
    if y.size < 2:
        raise ValueError("ppi: the human-only estimate needs at least 2 human labels")
    return _estimate("human", float(y.mean()), _var(y) / y.size, confidence, y.size, 0)


def auto_only(auto: Labels, confidence: float = 0.95) -> Estimate:
    """The naive estimate: the detector's labels taken as the truth."""
    f = _array(auto, "auto labels")
    if f.size < 2:
        raise ValueError("ppi: the auto-only estimate needs at least 2 auto labels")
    return _estimate("auto", float(f.mean()), _var(f) / f.size, confidence, 0, f.size)


def _ppi_parts(stratum: Stratum, power_tuned: bool) -> tuple[float, float]:
    """(estimate, variance) of one stratum."""
    f_un = _array(stratum.auto_unaudited, "auto labels of unaudited episodes")
    f_au = _array(stratum.auto_audited, "auto labels of audited episodes")
    y = _array(stratum.human, "human labels")
    if f_au.size != y.size:
        raise ValueError(f"ppi: {f_au.size} auto labels for {y.size} audited episodes; "
                         "give both labels of every audited episode")
    if y.size < 2 or f_un.size < 1:
        raise ValueError("ppi: each stratum needs >= 2 audited and >= 1 unaudited episodes "
                         f"(got {y.size} and {f_un.size}); raise the audit rate or merge strata")
    n, big_n = y.size, f_un.size
    lam = 1.0
    if power_tuned:
        var_f = _var(np.concatenate([f_un, f_au]))
        cov = float(np.cov(y, f_au, ddof=1)[0, 1]) if var_f > 0 else 0.0
        lam = float(np.clip(cov / ((1 + n / big_n) * var_f), 0.0, 1.0)) if var_f > 0 else 0.0
    rectifier = y - lam * f_au
    rate = lam * float(f_un.mean()) + float(rectifier.mean())
    variance = lam * lam * _var(f_un) / big_n + _var(rectifier) / n
    return rate, variance


def ppi(auto_unaudited: Labels, auto_audited: Labels, human: Labels,
        confidence: float = 0.95, power_tuned: bool = False) -> Estimate:
    """Prediction-powered estimate from a simple random audit (one stratum)."""
    return ppi_stratified([Stratum(auto_unaudited, auto_audited, human)], confidence,
                          power_tuned)


def ppi_stratified(strata: Sequence[Stratum], confidence: float = 0.95,
                   power_tuned: bool = False) -> Estimate:
    """Prediction-powered estimate over strata, each audited at its own known rate: the
    stratum estimates weighted by their share of the episodes."""
    if not strata:
        raise ValueError("ppi: no strata")
    total = sum(s.episodes for s in strata)
    rate = variance = 0.0
    for s in strata:
        r, v = _ppi_parts(s, power_tuned)
        w = s.episodes / total
        rate += w * r
        variance += w * w * v
    humans = sum(len(s.human) for s in strata)
    return _estimate("ppi", rate, variance, confidence, humans, total)


# --------------------------------------------------------------- agreement with humans

@dataclass(frozen=True)
class Agreement:
    """Detector against human on the audited episodes: the confusion matrix and kappa."""

    both_success: int  # human 1, auto 1
    auto_only: int  # human 0, auto 1 (false success)
    human_only: int  # human 1, auto 0 (missed success)
    both_failure: int  # human 0, auto 0

    @property
    def n(self) -> int:
        return self.both_success + self.auto_only + self.human_only + self.both_failure

    @property
    def disagreements(self) -> int:
        return self.auto_only + self.human_only

    @property
    def disagreement_rate(self) -> float | None:
        return self.disagreements / self.n if self.n else None

    @property
    def kappa(self) -> float | None:
        """Cohen's kappa, (p_o - p_e) / (1 - p_e); None when undefined (p_e = 1 or no data)."""
        if not self.n:
            return None
        n = self.n
        p_o = (self.both_success + self.both_failure) / n
        human1 = (self.both_success + self.human_only) / n
        auto1 = (self.both_success + self.auto_only) / n
        p_e = human1 * auto1 + (1 - human1) * (1 - auto1)
        return None if p_e >= 1.0 else (p_o - p_e) / (1 - p_e)


def agreement(human: Labels, auto: Labels) -> Agreement:
    y, f = _array(human, "human labels"), _array(auto, "auto labels")
    if y.size != f.size:
        raise ValueError(f"ppi: {y.size} human labels against {f.size} auto labels")
    return Agreement(int(((y == 1) & (f == 1)).sum()), int(((y == 0) & (f == 1)).sum()),
                     int(((y == 1) & (f == 0)).sum()), int(((y == 0) & (f == 0)).sum()))


@dataclass(frozen=True)
class DisagreementPair:
    policy_a: str
    policy_b: str
    rate_a: float | None
    rate_b: float | None
    p_value: float
    p_holm: float


@dataclass(frozen=True)
class DisagreementCheck:
    pairs: tuple[DisagreementPair, ...]
    alpha: float

    @property
    def flagged(self) -> tuple[DisagreementPair, ...]:
        """Pairs of policies whose disagreement rates differ (Holm-adjusted p < alpha)."""
        return tuple(p for p in self.pairs if p.p_holm < self.alpha)


def disagreement_check(by_policy: Mapping[str, Agreement], alpha: float = 0.05
                       ) -> DisagreementCheck:
    """Does the detector disagree with humans at different rates for different policies?
    Fisher's exact test on [[disagree, agree]] of each pair of policies, Holm over the pairs."""
    names = sorted(by_policy)
    raw: list[tuple[str, str, float]] = []
    for a, b in itertools.combinations(names, 2):
        ga, gb = by_policy[a], by_policy[b]
        table = [[ga.disagreements, ga.n - ga.disagreements],
                 [gb.disagreements, gb.n - gb.disagreements]]
        p = 1.0 if min(ga.n, gb.n) == 0 else float(scipy_stats.fisher_exact(table)[1])
        raw.append((a, b, min(1.0, p)))
    adjusted = holm([p for _, _, p in raw])
    pairs = tuple(DisagreementPair(a, b, by_policy[a].disagreement_rate,
                                   by_policy[b].disagreement_rate, p,
                                   1.0 if h is None else float(h))
                  for (a, b, p), h in zip(raw, adjusted))
    return DisagreementCheck(pairs, alpha)
