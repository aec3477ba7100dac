"""Store benchmark: 100k episodes with labels and 1M steps; per-category report time and
batched step-insert throughput, on SQLite and (when reachable) PostgreSQL.

    .venv/bin/python benchmarks/store.py [--episodes 100000] [--steps-per-episode 10]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Writes benchmarks/results/store.json. Targets: report <= 0.5 s, step inserts >= 50k rows/s.
Baseline in the same run: the same steps inserted through the ORM (session.add_all), which
is what a naive recorder would do.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.progress import Progress
from sqlalchemy import create_engine, insert, text

from orchestrator.reporting import build_report_for_ids
from orchestrator.store import migrate, queue
from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import Episode, Label, Step, Trial, utcnow
from protocols.loader import load_protocol, resolve_protocol_path

console = Console()
RESULTS = Path(__file__).parent / "results" / "store.json"


def step_rows(episode_ids: list[int], per_episode: int, rng: random.Random) -> list[dict]:
    rows = []
    for ep in episode_ids:
        for i in range(per_episode):
            rows.append(
                {
                    "episode_id": ep,
                    "idx": i,
                    "terminate": i == per_episode - 1,
                    "dx": rng.uniform(-0.05, 0.05),
                    "dy": rng.uniform(-0.05, 0.05),
                    "dz": rng.uniform(-0.05, 0.05),
                    "droll": 0.0,
                    "dpitch": 0.0,
                    "dyaw": 0.0,
                    "gripper": 1.0,
                    "tokens": "0 128 128 128 128 128 128 255",
                    "proprio": [0.1, 0.0, 0.25, 0.0, 0.0, 0.0, 1.0],
                    "obs_seq": i,
                    "obs_monotonic_ns": i * 200_000_000,
                    "obs_wall_ns": 1_700_000_000_000_000_000 + i * 200_000_000,
                    "command_wall_ns": 1_700_000_000_000_000_000 + i * 200_000_000 + 5_000_000,
                    "obs_age_ms": 1.2,
                    "inference_ms": 3.4,
                    "orchestration_ms": 0.8,
                    "command_ms": 0.3,
                }
            )
    return rows


def populate(store: Store, n_episodes: int, steps_per_episode: int, progress: Progress) -> dict:
    rng = random.Random(0)
    loaded = load_protocol(resolve_protocol_path("rt2_generalization"))
    n_tasks = len(loaded.protocol.tasks)
    policies = ["oracle", "heuristic", "random"]
    trials_per_task = -(-n_episodes // (n_tasks * len(policies)))
    with store.write() as s:
        for p in policies:
            register_policy(s, PolicySpec(name=p, kind="random"))
        c = create_campaign(
            s,
            name="bench",
            loaded=loaded,
            policy_names=policies,
            trials_per_task=trials_per_task,
            seed=1,
        )
        cid = c.id
    with store.read() as s:
        trial_ids = [r[0] for r in s.execute(text(f"SELECT id FROM trials WHERE campaign_id={cid}"))]
    trial_ids = trial_ids[:n_episodes]
    now = utcnow()
    task = progress.add_task("episodes + labels", total=len(trial_ids))
    chunk = 5000
    episode_ids: list[int] = []
    for i in range(0, len(trial_ids), chunk):
        part = trial_ids[i : i + chunk]
        with store.write() as s:
            s.execute(
                insert(Episode),
                [
                    {
                        "trial_id": t,
                        "attempt": 1,
                        "status": "recorded",
                        "counted": True,
                        "started_at": now,
                        "ended_at": now,
                        "step_count": steps_per_episode,
                        "late_steps": 0,
                        "media": [],
                    }
                    for t in part
                ],
            )
            s.execute(
                Trial.__table__.update().where(Trial.id.in_(part)).values(status="done")
            )
            ids = [
                r[0]
                for r in s.execute(
                    text(
                        "SELECT id FROM episodes WHERE trial_id IN ("
                        + ",".join(map(str, part))
                        + ")"
                    )
                )
            ]
            labels = []
            for ep in ids:
                labels.append({"episode_id": ep, "source": "sim", "evaluator": "sim",
                               "success": rng.random() < 0.5, "version": 1,
                               "created_at": now, "updated_at": now})
                if rng.random() < 0.3:
                    for who in ("ann", "bob")[: rng.randint(1, 2)]:
                        labels.append({"episode_id": ep, "source": "human", "evaluator": who,
                                       "success": rng.random() < 0.5, "progress": rng.random(),
                                       "version": 1, "created_at": now, "updated_at": now})
            s.execute(insert(Label), labels)
        episode_ids.extend(ids)
        progress.advance(task, len(part))
    return {"campaign_id": cid, "episode_ids": episode_ids}


def time_step_inserts(
    store: Store, episode_ids: list[int], per_episode: int, progress: Progress
) -> dict:
    """Insert all steps in recorder-sized batches (one episode = one batch of ~per_episode
    rows is too small to be fair; the recorder flushes every 50 steps or per episode)."""
    rng = random.Random(1)
    batch_eps = 500
    total = 0
    elapsed = 0.0
    task = progress.add_task("steps (batched)", total=len(episode_ids) * per_episode)
    for i in range(0, len(episode_ids), batch_eps):
        rows = step_rows(episode_ids[i : i + batch_eps], per_episode, rng)
        t0 = time.perf_counter()
        with store.write() as s:
            queue.add_step_rows(s, rows)
        elapsed += time.perf_counter() - t0
        total += len(rows)
        progress.advance(task, len(rows))
    return {"rows": total, "seconds": round(elapsed, 3), "rows_per_s": round(total / elapsed)}


def time_orm_baseline(store: Store, episode_ids: list[int], per_episode: int) -> dict:
    """Baseline: the same kind of rows through session.add_all (ORM unit of work)."""
    rng = random.Random(2)
    eps = episode_ids[:1000]
    rows = step_rows(eps, per_episode, rng)
    for r in rows:
        r["idx"] += 10_000  # distinct keys from the batched run
    t0 = time.perf_counter()
    with store.write() as s:
        s.add_all(Step(**r) for r in rows)
    dt = time.perf_counter() - t0
    return {"rows": len(rows), "seconds": round(dt, 3), "rows_per_s": round(len(rows) / dt)}


#: Baseline in the same run: the block query as issue 9 shipped it (grouping the analyst view
#: v_episode_outcomes by block, joined back to trials), before it was written against the
#: tables with the labels aggregated first and the ix_trials_blocks index (migration 0010).
ISSUE9_BLOCK_SQL = """
SELECT campaign_id, task_key, category, difficulty, present, success, failure, disputed, COUNT(*)
FROM (
    SELECT o.campaign_id AS campaign_id, o.task_key AS task_key, o.category AS category,
           o.difficulty AS difficulty, SUM(1 << cp.position) AS present,
           SUM(CASE WHEN o.outcome = 'success' THEN 1 << cp.position ELSE 0 END) AS success,
           SUM(CASE WHEN o.outcome = 'failure' THEN 1 << cp.position ELSE 0 END) AS failure,
           SUM(CASE WHEN o.outcome = 'disputed' THEN 1 << cp.position ELSE 0 END) AS disputed
    FROM (SELECT campaign_id, trial_id, task_key, category, difficulty, outcome
          FROM v_episode_outcomes src WHERE campaign_id IN ({cid})) o
    JOIN trials t ON t.id = o.trial_id
    JOIN campaign_policies cp ON cp.id = t.campaign_policy_id
    GROUP BY o.campaign_id, o.task_key, o.category, o.difficulty, t.trial_index
) b
GROUP BY campaign_id, task_key, category, difficulty, present, success, failure, disputed
"""


def time_report(store: Store, campaign_id: int, repeats: int = 5) -> dict:
    """The whole report (query + statistics), and alternating with it the issue-9 block query
    alone as the baseline."""
    times, baseline = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        report = build_report_for_ids(store, [campaign_id])
        times.append(time.perf_counter() - t0)
        with store.read() as s:
            if not store.is_sqlite:
                s.execute(text("SET LOCAL work_mem = '32MB'"))
            t0 = time.perf_counter()
            s.execute(text(ISSUE9_BLOCK_SQL.format(cid=int(campaign_id)))).all()
            baseline.append(time.perf_counter() - t0)
    overall = next(r for r in report.rows if r.key == "overall")
    return {
        "first_s": round(times[0], 4),
        "median_s": round(statistics.median(times), 4),
        "baseline_issue9_block_query_median_s": round(statistics.median(baseline), 4),
        "repeats": repeats,
        "episodes_in_report": sum(c.n for c in overall.cells),
    }


def run_backend(name: str, url: str, n_episodes: int, per_episode: int) -> dict:
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    console.rule(f"{name}: {n_episodes} episodes, {n_episodes * per_episode} steps")
    with Progress(console=console, transient=True) as progress:
        t0 = time.perf_counter()
        pop = populate(store, n_episodes, per_episode, progress)
        populate_s = time.perf_counter() - t0
        steps = time_step_inserts(store, pop["episode_ids"], per_episode, progress)
    baseline = time_orm_baseline(store, pop["episode_ids"], per_episode)
    if store.is_sqlite:
        with store.engine.connect() as c:
            c.exec_driver_sql("ANALYZE")
    else:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM ANALYZE")
    report = time_report(store, pop["campaign_id"])
    store.close()
    out = {
        "episodes": len(pop["episode_ids"]),
        "steps": steps["rows"],
        "populate_episodes_labels_s": round(populate_s, 2),
        "step_insert_batched": steps,
        "step_insert_orm_baseline": baseline,
        "report": report,
        "targets": {"report_s": 0.5, "step_rows_per_s": 50_000},
        "meets_targets": report["median_s"] <= 0.5 and steps["rows_per_s"] >= 50_000,
    }
    console.print_json(data=out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=100_000)
    ap.add_argument("--steps-per-episode", type=int, default=10)
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                    help="admin URL; a scratch database is created and dropped")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    results: dict = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "command": "python benchmarks/store.py " + " ".join(sys.argv[1:]),
    }
    with tempfile.TemporaryDirectory() as d:
        results["sqlite"] = run_backend(
            "sqlite", f"sqlite:///{d}/bench.db", args.episodes, args.steps_per_episode
        )
    if not args.no_postgres:
        from orchestrator.config import normalize_url

        admin = create_engine(normalize_url(args.postgres), isolation_level="AUTOCOMMIT")
        name = f"evalfleet_bench_{uuid.uuid4().hex[:8]}"
        try:
            with admin.connect() as c:
                c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        except Exception as e:  # noqa: BLE001 - reported, not fatal for the SQLite half
            results["postgres"] = {"skipped": f"cannot reach {args.postgres}: {e}"}
        else:
            try:
                url = admin.url.set(database=name).render_as_string(hide_password=False)
                results["postgres"] = run_backend(
                    "postgres", url, args.episodes, args.steps_per_episode
                )
            finally:
                with admin.connect() as c:
                    c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
