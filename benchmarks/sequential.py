"""Sequential stopping and prediction-powered inference on simulated campaigns with known
true rates (issue 13). Pure, seeded, numpy/scipy only.

    .venv/bin/python benchmarks/sequential.py [--sims 4000] [--seed 13] [--ppi-reps 4000]

(a) Type-I error under continuous monitoring: campaigns where the two policies are equally good
    (p10 = p01) or the policy sits exactly on the threshold; the sequential test
    (protocols.sequential) looks after every pair, up to the cap, with its futility stop off so
    that every path runs to the cap (the worst case). Baselines on the same paths: exact
    McNemar, Fisher's exact test (unpaired 2x2) and the exact binomial test, each at alpha after
    every trial, stopping at the first p < alpha.
(b) Trials to a decision at equal power: the sequential test (cap = 2 x the fixed plan) against
    the fixed-n design (protocols.sequential.fixed_n at the power the sequential test attains
    at the minimal effect), over true effects 0, delta/2, delta, 1.5 delta, 2 delta.
(c) Coverage of the 95 % intervals of success rates from a biased detector plus a 10 % random
    human audit: PPI, PPI++ (power-tuned), auto-only (naive) and human-only (protocols.ppi).
(d) Human labels PPI needs to be as narrow as an all-human interval with `--human-ref`
    labels, when the detector agrees with humans on 90 % of episodes.

Writes benchmarks/results/sequential.json. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.ppi import auto_only, human_only, ppi
from protocols.sequential import (
    Decision,
    Question,
    fixed_n,
    fixed_n_pair,
    fixed_n_threshold,
    simulate_paths,
)

RESULTS = Path(__file__).parent / "results" / "sequential.json"
ALPHA = 0.05


# ------------------------------------------------------------------------- simulated data

def pair_cells(rng: np.random.Generator, sims: int, steps: int, p10: float, p01: float,
               p11: float) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes (a, b) of `sims` campaigns x `steps` blocks with the given cell probabilities."""
    u = rng.random((sims, steps))
    a = (u < p11) | ((u >= p11) & (u < p11 + p10))
    b = (u < p11) | ((u >= p11 + p10) & (u < p11 + p10 + p01))
    return a, b


def first_rejection(p_values: np.ndarray) -> np.ndarray:
    """Per campaign: did p < alpha at any look?"""
    return np.asarray((p_values < ALPHA).any(axis=1))


def mcnemar_table(cap: int) -> np.ndarray:
    """Exact two-sided McNemar p-value for (a_only, discordant) up to cap discordant pairs."""
    table = np.ones((cap + 1, cap + 1))
    for m in range(1, cap + 1):
        k = np.arange(m + 1)
        table[k, m] = np.minimum(1.0, 2 * scipy_stats.binom.cdf(np.minimum(k, m - k), m, 0.5))
    return table


def binomial_table(cap: int, p0: float) -> np.ndarray:
    """Exact two-sided binomial p-value (scipy's binomtest rule) for (successes, trials)."""
    table = np.ones((cap + 1, cap + 1))
    for t in range(1, cap + 1):
        pmf = scipy_stats.binom.pmf(np.arange(t + 1), t, p0)
        order = np.sort(pmf)
        cum = np.cumsum(order)
        idx = np.searchsorted(order, pmf * (1 + 1e-7), side="right") - 1
        table[: t + 1, t] = np.minimum(1.0, cum[idx])
    return table


class FisherTable:
    """Two-sided Fisher exact p-values of [[sa, t - sa], [sb, t - sb]], cached per (t, sa+sb)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def p(self, sa: np.ndarray, sb: np.ndarray, t: int) -> np.ndarray:
        out = np.empty(sa.shape)
        s = sa + sb
        for total in np.unique(s):
            key = (t, int(total))
            if key not in self._cache:
                x = np.arange(max(0, total - t), min(total, t) + 1)
                pmf = scipy_stats.hypergeom.pmf(x, 2 * t, total, t)
                order = np.sort(pmf)
                idx = np.searchsorted(order, pmf * (1 + 1e-7), side="right") - 1
                row = np.ones(t + 1)
                row[x] = np.minimum(1.0, np.cumsum(order)[idx])
                self._cache[key] = row
            mask = s == total
            out[mask] = self._cache[key][sa[mask]]
        return out


# ------------------------------------------------------------------ (a) type-I error

def type_one_pairs(rng: np.random.Generator, sims: int, cap: int, discordance: float,
                   fisher: FisherTable, mcnemar: np.ndarray) -> dict:
    half = discordance / 2
    a, b = pair_cells(rng, sims, cap, half, half, (1 - discordance) / 2)
    z = a.astype(float) - b.astype(float)
    q = Question.pair(min_effect=0.2, discordance=0.4, cap=cap, power=1 - 1e-9)
    paths = simulate_paths(q, z)
    seq = np.isin([d.value for d in paths.decisions], ["a_better", "b_better"])
    full = simulate_paths(Question.pair(min_effect=0.2, discordance=0.4, cap=cap), z)
    seq_full = np.isin([d.value for d in full.decisions], ["a_better", "b_better"])
    a_only = np.cumsum(z > 0, axis=1)
    disc = np.cumsum(z != 0, axis=1)
    mc = first_rejection(mcnemar[a_only, disc])
    sa, sb = np.cumsum(a, axis=1), np.cumsum(b, axis=1)
    fisher_p = np.stack([fisher.p(sa[:, t], sb[:, t], t + 1) for t in range(cap)], axis=1)
    fi = first_rejection(fisher_p)
    return {"question": "pair", "p10 = p01": half, "cap": cap, "looks": "after every pair",
            "sequential_type1": float(seq.mean()),
            "sequential_with_futility_type1": float(seq_full.mean()),
            "naive_mcnemar_every_pair": float(mc.mean()),
            "naive_fisher_every_pair": float(fi.mean())}


def type_one_threshold(rng: np.random.Generator, sims: int, cap: int, p0: float) -> dict:
    x = rng.random((sims, cap)) < p0
    q = Question.against_threshold(p0, min_effect=0.15, cap=cap, power=1 - 1e-9)
    seq = np.isin([d.value for d in simulate_paths(q, x.astype(float)).decisions],
                  ["a_better", "b_better"])
    table = binomial_table(cap, p0)
    naive = first_rejection(table[np.cumsum(x, axis=1), np.arange(1, cap + 1)])
    return {"question": "threshold", "true rate = threshold": p0, "cap": cap,
            "looks": "after every trial", "sequential_type1": float(seq.mean()),
            "naive_binomial_every_trial": float(naive.mean())}


# ------------------------------------------------------- (b) trials to a decision, power

def exact_mcnemar_power(n: int, p10: float, p01: float) -> float:
    """Power of the two-sided exact McNemar test (what `evalfleet report` runs) with n pairs:
    the discordant count k ~ Bin(n, p10 + p01), then a ~ Bin(k, p10 / (p10 + p01)) against
    the exact binomial test at 1/2. Exact, no simulation."""
    psi = p10 + p01
    power = 0.0
    for k in range(1, n + 1):
        w = float(scipy_stats.binom.pmf(k, n, psi))
        if w < 1e-12:
            continue
        x = np.arange(k + 1)
        p = np.minimum(1.0, 2 * np.minimum(scipy_stats.binom.cdf(x, k, 0.5),
                                           scipy_stats.binom.sf(x - 1, k, 0.5)))
        power += w * float(scipy_stats.binom.pmf(x, k, p10 / psi)[p < ALPHA].sum())
    return power


def exact_binomial_power(n: int, p0: float, p: float) -> float:
    """Power of the two-sided exact binomial test of rate p0 with n trials at true rate p."""
    x = np.arange(n + 1)
    pv = np.minimum(1.0, 2 * np.minimum(scipy_stats.binom.cdf(x, n, p0),
                                        scipy_stats.binom.sf(x - 1, n, p0)))
    return float(scipy_stats.binom.pmf(x, n, p)[pv < ALPHA].sum())


def exact_fixed_n(power: float, power_at: Callable[[int], float], start: int) -> int:
    """The smallest n at which the exact test reaches `power` (its power saw-tooths in n:
    the first n that reaches it, as a lab sizing the fixed design would pick)."""
    n = max(2, start // 2)
    while power_at(n) < power:
        n += 1
    return n


def trials_to_decision(rng: np.random.Generator, sims: int, delta: float, discordance: float,
                       cap_multiple: float, true_discordance: float | None = None) -> dict:
    plan = fixed_n_pair(ALPHA, 0.8, delta, discordance)
    q = Question.pair(min_effect=delta, discordance=discordance, power=0.8,
                      cap=round(cap_multiple * plan))
    psi = discordance if true_discordance is None else true_discordance
    mcnemar = mcnemar_table(plan)
    rows = []
    for factor in (0.0, 0.5, 1.0, 1.5, 2.0):
        mu = factor * delta
        a, b = pair_cells(rng, sims, q.cap, (psi + mu) / 2, (psi - mu) / 2, (1 - psi) / 2)
        z = a.astype(float) - b.astype(float)
        paths = simulate_paths(q, z)
        dec = np.array([d.value for d in paths.decisions])
        zf = z[:, :plan]
        fixed_p = mcnemar[(zf > 0).sum(axis=1), (zf != 0).sum(axis=1)]
        rows.append({"true_difference": round(mu, 4), "p10": (psi + mu) / 2,
                     "p01": (psi - mu) / 2,
                     "sequential_mean_trials": float(paths.trials.mean()),
                     "sequential_a_better": float((dec == "a_better").mean()),
                     "sequential_b_better": float((dec == "b_better").mean()),
                     "sequential_no_difference": float((dec == "no_difference").mean()),
                     "sequential_cap_reached": float((dec == "cap_reached").mean()),
                     "fixed_plan_rejects": float((fixed_p < ALPHA).mean())})
    at_delta = next(r for r in rows if r["true_difference"] == round(delta, 4))
    seq_power = at_delta["sequential_a_better"]
    # the fixed design with the same power, sized with hindsight (the true discordance):
    # by the normal approximation (Connor), and for the exact McNemar test the report runs
    equal = fixed_n_pair(ALPHA, min(seq_power, 0.999), delta, psi)
    exact = exact_fixed_n(seq_power, lambda n: exact_mcnemar_power(
        n, (psi + delta) / 2, (psi - delta) / 2), equal)
    for r in rows:
        r["saved_vs_fixed_at_equal_power"] = round(1 - r["sequential_mean_trials"] / equal, 4)
        r["saved_vs_exact_fixed_at_equal_power"] = round(
            1 - r["sequential_mean_trials"] / exact, 4)
    mean_trials = float(np.mean([r["sequential_mean_trials"] for r in rows]))
    return {"question": "pair", "alpha": ALPHA, "min_effect": delta,
            "planned_discordance": discordance, "true_discordance": psi,
            "fixed_plan_n_at_power_0.8": plan, "cap": q.cap,
            "sequential_power_at_min_effect": seq_power,
            "fixed_n_at_that_power": equal,
            "saved_at_min_effect": round(1 - at_delta["sequential_mean_trials"] / equal, 4),
            "saved_mean_over_effects": round(1 - mean_trials / equal, 4),
            "fixed_n_exact_test_at_that_power": exact,
            "saved_at_min_effect_vs_exact": round(
                1 - at_delta["sequential_mean_trials"] / exact, 4),
            "saved_mean_over_effects_vs_exact": round(1 - mean_trials / exact, 4),
            "fixed_plan_power_at_min_effect": at_delta["fixed_plan_rejects"],
            "saved_vs_fixed_plan_at_min_effect": round(
                1 - at_delta["sequential_mean_trials"] / plan, 4),
            "saved_vs_fixed_plan_mean_over_effects": round(1 - mean_trials / plan, 4),
            "by_true_difference": rows}


def threshold_trials(rng: np.random.Generator, sims: int, p0: float, delta: float,
                     cap_multiple: float) -> dict:
    plan = fixed_n_threshold(ALPHA, 0.8, p0, delta)
    q = Question.against_threshold(p0, min_effect=delta, cap=round(cap_multiple * plan))
    assert fixed_n(q) == plan
    rows = []
    for factor in (0.0, 0.5, 1.0, 1.5, 2.0):
        p = p0 + factor * delta
        x = (rng.random((sims, q.cap)) < min(p, 0.999)).astype(float)
        paths = simulate_paths(q, x)
        rows.append({"true_rate": round(p, 4), "sequential_mean_trials":
                     float(paths.trials.mean()), "sequential_above": float(np.mean(
                         [d is Decision.A_BETTER for d in paths.decisions]))})
    at_delta = rows[2]
    equal = fixed_n_threshold(ALPHA, min(at_delta["sequential_above"], 0.999), p0, delta)
    exact = exact_fixed_n(at_delta["sequential_above"],
                          lambda n: exact_binomial_power(n, p0, p0 + delta), equal)
    mean_trials = float(np.mean([r["sequential_mean_trials"] for r in rows]))
    return {"question": "threshold", "threshold": p0, "min_effect": delta,
            "fixed_plan_n_at_power_0.8": plan, "cap": q.cap,
            "sequential_power_at_min_effect": at_delta["sequential_above"],
            "fixed_n_at_that_power": equal,
            "saved_at_min_effect": round(1 - at_delta["sequential_mean_trials"] / equal, 4),
            "saved_mean_over_effects": round(1 - mean_trials / equal, 4),
            "fixed_n_exact_test_at_that_power": exact,
            "saved_at_min_effect_vs_exact": round(
                1 - at_delta["sequential_mean_trials"] / exact, 4),
            "saved_mean_over_effects_vs_exact": round(1 - mean_trials / exact, 4),
            "saved_vs_fixed_plan_at_min_effect": round(
                1 - at_delta["sequential_mean_trials"] / plan, 4),
            "saved_vs_fixed_plan_mean_over_effects": round(1 - mean_trials / plan, 4),
            "by_true_rate": rows}


# ----------------------------------------------------------------------------- (c), (d)

def detector(rng: np.random.Generator, y: np.ndarray, miss: float, false_success: float
             ) -> np.ndarray:
    u = rng.random(y.shape)
    return np.where(y == 1, u >= miss, u < false_success).astype(float)


def coverage(rng: np.random.Generator, reps: int, rate: float, miss: float, false_success: float,
             episodes: int, audit: int) -> dict:
    hits = {"ppi": 0, "ppi_power_tuned": 0, "auto_only": 0, "human_only": 0}
    widths = {k: 0.0 for k in hits}
    for _ in range(reps):
        y = (rng.random(episodes) < rate).astype(float)
        f = detector(rng, y, miss, false_success)
        ests = {"ppi": ppi(f[audit:], f[:audit], y[:audit]),
                "ppi_power_tuned": ppi(f[audit:], f[:audit], y[:audit], power_tuned=True),
                "auto_only": auto_only(f), "human_only": human_only(y[:audit])}
        for k, e in ests.items():
            hits[k] += e.low <= rate <= e.high
            widths[k] += e.width / reps
    return {"true_rate": rate, "detector_miss": miss, "detector_false_success": false_success,
            "detector_rate": rate * (1 - miss) + (1 - rate) * false_success,
            "episodes": episodes, "human_audit": audit,
            "coverage": {k: v / reps for k, v in hits.items()},
            "mean_width": {k: round(v, 4) for k, v in widths.items()}}


def labels_needed(rng: np.random.Generator, reps: int, rate: float, miss: float,
                  false_success: float, episodes: int, human_ref: int) -> dict:
    ref_width = float(np.mean([human_only((rng.random(human_ref) < rate).astype(float)).width
                               for _ in range(reps)]))
    found: dict[str, int | None] = {"ppi": None, "ppi_power_tuned": None}
    for n in range(10, human_ref + 1, 5):
        width = {"ppi": 0.0, "ppi_power_tuned": 0.0}
        for _ in range(reps):
            y = (rng.random(episodes) < rate).astype(float)
            f = detector(rng, y, miss, false_success)
            width["ppi"] += ppi(f[n:], f[:n], y[:n]).width / reps
            width["ppi_power_tuned"] += ppi(f[n:], f[:n], y[:n], power_tuned=True).width / reps
        for k, value in width.items():
            if found[k] is None and value <= ref_width:
                found[k] = n
        if all(v is not None for v in found.values()):
            break
    agree = 1 - (rate * miss + (1 - rate) * false_success)
    return {"true_rate": rate, "detector_miss": miss, "detector_false_success": false_success,
            "agreement": round(agree, 4), "episodes_auto_labelled": episodes,
            "all_human_labels": human_ref, "all_human_mean_width": round(ref_width, 4),
            "human_labels_needed": found,
            "fewer_human_labels": {k: None if v is None else round(1 - v / human_ref, 4)
                                   for k, v in found.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sims", type=int, default=4000, help="campaigns per scenario")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--cap", type=int, default=200, help="looks per campaign in (a)")
    ap.add_argument("--cap-multiple", type=float, default=2.0,
                    help="sequential cap / fixed plan in (b)")
    ap.add_argument("--ppi-reps", type=int, default=4000)
    ap.add_argument("--episodes", type=int, default=3000, help="auto-labelled episodes in (d)")
    ap.add_argument("--human-ref", type=int, default=300, help="all-human labels in (d)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    fisher, mcnemar = FisherTable(), mcnemar_table(args.cap)

    type1 = [type_one_pairs(rng, args.sims, args.cap, psi, fisher, mcnemar)
             for psi in (0.2, 0.4, 0.6)]
    type1 += [type_one_threshold(rng, args.sims, args.cap, p0) for p0 in (0.3, 0.5)]
    for r in type1:
        print("(a)", {k: v for k, v in r.items() if k != "looks"})

    trials = [trials_to_decision(rng, args.sims, 0.2, 0.4, args.cap_multiple),
              trials_to_decision(rng, args.sims, 0.15, 0.3, args.cap_multiple),
              trials_to_decision(rng, args.sims, 0.2, 0.4, args.cap_multiple,
                                 true_discordance=0.6),
              threshold_trials(rng, args.sims, 0.5, 0.2, args.cap_multiple)]
    for r in trials:
        print("(b)", {k: v for k, v in r.items() if not k.startswith("by_")})

    cover = [coverage(rng, args.ppi_reps, rate, miss, fs, 1000, 100)
             for rate, miss, fs in ((0.4, 0.05, 0.25), (0.6, 0.3, 0.05), (0.3, 0.1, 0.1),
                                    (0.5, 0.15, 0.15))]
    for r in cover:
        print("(c)", r["true_rate"], r["coverage"], r["mean_width"])

    reps_d = max(50, args.ppi_reps // 5)
    needed = [labels_needed(rng, reps_d, rate, miss, fs, args.episodes, args.human_ref)
              for rate, miss, fs in ((0.5, 0.1, 0.1), (0.3, 0.1, 0.1), (0.5, 0.0, 0.2),
                                     (0.3, 0.0, 1 / 7))]
    for r in needed:
        print("(d)", r["true_rate"], r["agreement"], r["human_labels_needed"],
              r["fewer_human_labels"])

    out = {
        "command": "python benchmarks/sequential.py " + " ".join(sys.argv[1:]),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "seed": args.seed, "sims": args.sims, "ppi_reps": args.ppi_reps, "alpha": ALPHA,
        "a_type1_continuous_monitoring": type1,
        "b_trials_to_decision": trials,
        "c_ppi_coverage": cover,
        "d_human_labels_needed": needed,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS} in {out['seconds']} s")


if __name__ == "__main__":
    main()
