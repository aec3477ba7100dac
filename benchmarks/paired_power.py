"""Paired vs unpaired: power of the report's exact McNemar test on matched blocks against an
unpaired Fisher exact test, on simulated campaigns with the planner's paired design.

    .venv/bin/python benchmarks/paired_power.py [--sims 2000] [--seed 9]

Each simulated campaign has `tasks` tasks x `trials` blocks; in a block both policies run the
same task and scene seed. Success is Bernoulli(logistic(task effect + scene effect + policy
effect)) with task effects ~ N(0, sd_task) (tasks from easy to hard, as in RT-2's categories)
and scene effects ~ N(0, sd_scene), shared by the policies of a block. The second policy is
better by `delta` on the log-odds scale; delta = 0 measures the type I error. Both tests are
the report's own functions (protocols.paired.mcnemar_exact, protocols.stats.compare_rates).

Writes benchmarks/results/paired_power.json. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.paired import mcnemar_exact
from protocols.stats import compare_rates

RESULTS = Path(__file__).parent / "results" / "paired_power.json"
DELTAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)


def simulate(rng: np.random.Generator, tasks: int, trials: int, sd_task: float,
             sd_scene: float, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes of policies a and b on the same blocks (tasks * trials each)."""
    task = np.repeat(rng.normal(0.0, sd_task, tasks), trials)
    scene = rng.normal(0.0, sd_scene, tasks * trials)
    base = task + scene
    a = rng.random(base.size) < 1.0 / (1.0 + np.exp(-base))
    b = rng.random(base.size) < 1.0 / (1.0 + np.exp(-(base + delta)))
    return a, b


def power(sims: int, seed: int, tasks: int, trials: int, sd_task: float, sd_scene: float,
          delta: float, alpha: float = 0.05) -> dict:
    rng = np.random.default_rng([seed, int(delta * 1000), tasks, trials])
    paired = unpaired = 0
    rate_a = rate_b = 0.0
    for _ in range(sims):
        a, b = simulate(rng, tasks, trials, sd_task, sd_scene, delta)
        n = a.size
        a_only = int((a & ~b).sum())
        b_only = int((~a & b).sum())
        paired += mcnemar_exact(a_only, b_only) < alpha
        p = compare_rates(int(a.sum()), n, int(b.sum()), n, "fisher").p_value
        unpaired += p is not None and p < alpha
        rate_a += a.mean() / sims
        rate_b += b.mean() / sims
    return {
        "delta_log_odds": delta,
        "mean_rate_a": round(rate_a, 4),
        "mean_rate_b": round(rate_b, 4),
        "power_paired_mcnemar": round(paired / sims, 4),
        "power_unpaired_fisher": round(unpaired / sims, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--tasks", type=int, default=13)
    ap.add_argument("--trials", type=int, default=6, help="blocks per task")
    ap.add_argument("--sd-task", type=float, default=2.0)
    ap.add_argument("--sd-scene", type=float, default=1.0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    scenarios = []
    for sd_task, sd_scene, label in [
        (args.sd_task, args.sd_scene, "task and scene heterogeneity (default)"),
        (0.0, 0.0, "no heterogeneity (every block alike)"),
    ]:
        rows = [power(args.sims, args.seed, args.tasks, args.trials, sd_task, sd_scene, d)
                for d in DELTAS]
        scenarios.append({"scenario": label, "sd_task": sd_task, "sd_scene": sd_scene,
                          "results": rows})
        print(f"\n{label}: {args.tasks} tasks x {args.trials} blocks, {args.sims} sims")
        print("delta  rate a  rate b  paired McNemar  unpaired Fisher")
        for r in rows:
            print(f"{r['delta_log_odds']:5.2f}  {r['mean_rate_a']:6.3f}  {r['mean_rate_b']:6.3f}"
                  f"  {r['power_paired_mcnemar']:14.3f}  {r['power_unpaired_fisher']:15.3f}")
    out = {
        "command": "python benchmarks/paired_power.py " + " ".join(sys.argv[1:]),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "sims": args.sims, "seed": args.seed, "tasks": args.tasks, "blocks_per_task": args.trials,
        "alpha": 0.05, "scenarios": scenarios,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
