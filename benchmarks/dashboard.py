"""Dashboard benchmark over 100k episodes: the Results page rendered by AppTest cold (empty
Streamlit caches, fresh engine) and cached, and saving a label, on SQLite and (when reachable)
PostgreSQL.

    .venv/bin/python benchmarks/dashboard.py [--episodes 100000] [--no-postgres]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Writes benchmarks/results/dashboard.json. Targets: results page <= 2 s cold, <= 0.3 s cached;
saving a label <= 200 ms. The store is filled by benchmarks/store.py's populate() (3 policies
over the rt2_generalization protocol, sim labels on all episodes, human labels on ~30%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import create_engine
from streamlit.testing.v1 import AppTest

from benchmarks.store import populate
from orchestrator.config import get_settings, normalize_url
from orchestrator.store import migrate
from orchestrator.store.db import Store, make_engine
from orchestrator.store.labels import LabelInput, save_label

console = Console()
APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
RESULTS = Path(__file__).parent / "results" / "dashboard.json"
TARGETS = {"results_cold_s": 2.0, "results_cached_s": 0.3, "label_save_ms": 200.0}


def _clear() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()


def _app(user: str | None = "bench") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    if user:
        at.session_state["evaluator"] = user
    return at


def _timed_run(at: AppTest) -> float:
    t0 = time.perf_counter()
    at.run()
    dt = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the page failed: {at.exception[0].value}")
    return dt


def time_results(cold_repeats: int = 3, cached_repeats: int = 5) -> dict:
    cold, cached = [], []
    for _ in range(cold_repeats):
        at = _app(user=None)
        at.run()  # the label page without a name: no query; registers the pages
        _clear()
        at.switch_page("views/results.py")
        cold.append(_timed_run(at))
        for _ in range(cached_repeats):
            cached.append(_timed_run(at))
    shown = at.dataframe[0].value
    return {
        "cold_s": [round(x, 3) for x in cold], "cold_median_s": round(statistics.median(cold), 3),
        "cached_s": [round(x, 3) for x in cached],
        "cached_median_s": round(statistics.median(cached), 3),
        "overall_row": list(map(str, shown.iloc[-1])),
    }


def time_label_saves(store: Store, episode_ids: list[int], n: int = 40) -> dict:
    times = []
    for i, ep in enumerate(episode_ids[-n:]):
        t0 = time.perf_counter()
        save_label(store, LabelInput(ep, "bench-saver", i % 2 == 0, 0.5))
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    _clear()
    at = _app("bench-clicker")
    label_cold = _timed_run(at)
    clicks = []
    for _ in range(5):
        at.button(key="label_success")
        t0 = time.perf_counter()
        at.button(key="label_success").click().run()
        clicks.append(time.perf_counter() - t0)
        if at.error:
            raise RuntimeError(at.error[0].value)
    return {
        "save_label_ms": {"p50": round(times[len(times) // 2], 1),
                          "p95": round(times[int(len(times) * 0.95) - 1], 1),
                          "max": round(times[-1], 1), "n": len(times)},
        "label_page_cold_s": round(label_cold, 3),
        "label_click_save_and_rerender_s": [round(x, 3) for x in clicks],
    }


def run_backend(name: str, url: str, n_episodes: int, home: Path) -> dict:
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    console.rule(f"{name}: {n_episodes} episodes")
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        pop = populate(store, n_episodes, 0, progress)
    populate_s = time.perf_counter() - t0
    if store.is_sqlite:
        with store.engine.connect() as c:
            c.exec_driver_sql("ANALYZE")
    else:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM ANALYZE")
    os.environ["EVALFLEET_HOME"] = str(home)
    os.environ["EVALFLEET_DATABASE_URL"] = url
    get_settings.cache_clear()
    try:
        results = time_results()
        labels = time_label_saves(store, pop["episode_ids"])
    finally:
        _clear()
        store.close()
    out = {
        "episodes": len(pop["episode_ids"]),
        "populate_s": round(populate_s, 1),
        "results_page": results,
        "labels": labels,
        "targets": TARGETS,
        "meets_targets": results["cold_median_s"] <= TARGETS["results_cold_s"]
        and results["cached_median_s"] <= TARGETS["results_cached_s"]
        and labels["save_label_ms"]["p95"] <= TARGETS["label_save_ms"],
    }
    console.print_json(data=out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=100_000)
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                    help="admin URL; a scratch database is created and dropped")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    results: dict = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "streamlit": st.__version__},
        "command": "python benchmarks/dashboard.py " + " ".join(sys.argv[1:]),
        "how": "AppTest run of the Results page (default campaign, all filters off); cold = "
               "st.cache_data and st.cache_resource cleared (new engine, schema check, "
               "queries); cached = the same page run again. Label save = "
               "orchestrator.store.labels.save_label, one transaction each.",
    }
    with tempfile.TemporaryDirectory() as d:
        results["sqlite"] = run_backend("sqlite", f"sqlite:///{d}/bench.db", args.episodes, Path(d))
        if not args.no_postgres:
            admin = create_engine(normalize_url(args.postgres), isolation_level="AUTOCOMMIT")
            name = f"evalfleet_dash_{uuid.uuid4().hex[:8]}"
            try:
                with admin.connect() as c:
                    c.exec_driver_sql(f'CREATE DATABASE "{name}"')
            except Exception as e:  # noqa: BLE001 - reported, not fatal for the SQLite half
                results["postgres"] = {"skipped": f"cannot reach {args.postgres}: {e}"}
            else:
                try:
                    url = admin.url.set(database=name).render_as_string(hide_password=False)
                    results["postgres"] = run_backend("postgres", url, args.episodes, Path(d))
                finally:
                    with admin.connect() as c:
                        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
