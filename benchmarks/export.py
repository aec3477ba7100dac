"""Export benchmark: the demo's 99 episodes as a LeRobotDataset v3.0, and as an episodes table.

    .venv/bin/python benchmarks/export.py                 # runs `evalfleet demo` first (~3 min)
    .venv/bin/python benchmarks/export.py --home DIR      # reuse a home where the demo ran

Times `evalfleet export CAMPAIGN DIR` end to end (the command a person types, Python start
included) and the export itself in-process (median of --runs), against a baseline measured in
the same run: the same export with every video decoded and re-encoded instead of remuxed.
Target: <= 10 s for the 99 episodes. Writes benchmarks/results/export.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select

from orchestrator.export import video
from orchestrator.export.writer import export_episodes, export_lerobot
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import Campaign

RESULTS = ROOT / "benchmarks" / "results" / "export.json"
EVALFLEET = ROOT / ".venv" / "bin" / "evalfleet"
TARGET_S = 10.0


def _run_demo(home: Path) -> None:
    env = {**os.environ, "EVALFLEET_HOME": str(home)}
    env.pop("EVALFLEET_DATABASE_URL", None)
    print(f"running `evalfleet demo` into {home} (about 3 minutes) ...", flush=True)
    subprocess.run([str(EVALFLEET), "demo"], env=env, check=True, timeout=1200,
                   stdout=subprocess.DEVNULL)


def _campaign(store: Store, name: str | None) -> str:
    with store.read() as s:
        if name:
            return name
        found = s.scalar(select(Campaign.name).where(Campaign.name.like("demo-%"))
                         .order_by(Campaign.created_at.desc()))
    if found is None:
        sys.exit("no demo campaign in that home: run `evalfleet demo` there or drop --home")
    return str(found)


def _timed(fn, *args, **kwargs) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="EVALFLEET_HOME where `evalfleet demo` ran")
    ap.add_argument("--campaign", help="campaign name (default: the newest demo-*)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="evalfleet-export-bench-"))
    try:
        home = args.home
        if home is None:
            home = scratch / "home"
            _run_demo(home)
        store = Store(make_engine(f"sqlite:///{home / 'evalfleet.db'}"))
        media = home / "media"
        name = _campaign(store, args.campaign)
        load_before = os.getloadavg()

        env = {**os.environ, "EVALFLEET_HOME": str(home)}
        env.pop("EVALFLEET_DATABASE_URL", None)
        t0 = time.perf_counter()
        subprocess.run([str(EVALFLEET), "export", name, str(scratch / "cli")], env=env,
                       check=True, timeout=600, stdout=subprocess.DEVNULL)
        cli_s = time.perf_counter() - t0

        runs, result = [], None
        for i in range(args.runs):
            dest = scratch / f"ds-{i}"
            t0 = time.perf_counter()
            result = export_lerobot(store, name, dest, media_dir=media)
            runs.append(time.perf_counter() - t0)
        assert result is not None
        ds = scratch / "ds-0"
        video_bytes = sum(p.stat().st_size for p in (ds / "videos").rglob("*.mp4"))

        keep = video.concat_camera

        def reencode_all(segments, fps, out, on_segment=None):  # type: ignore[no-untyped-def]
            return video._reencode(segments, fps, out, on_segment)

        video.concat_camera = reencode_all  # type: ignore[assignment]
        try:
            baseline_s = _timed(export_lerobot, store, name, scratch / "reencoded",
                                media_dir=media)
        finally:
            video.concat_camera = keep  # type: ignore[assignment]
        table_csv_s = _timed(export_episodes, store, name, scratch / "episodes.csv")
        table_parquet_s = _timed(export_episodes, store, name, scratch / "episodes.parquet")
        store.close()
        median = statistics.median(runs)
        out = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                       f"{platform.python_version()}",
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "campaign": name,
            "episodes": result.episodes,
            "frames": result.frames,
            "cameras": list(result.cameras),
            "video_methods": list(result.video_methods),
            "video_bytes": video_bytes,
            "cli_export_s": round(cli_s, 3),
            "export_s_runs": [round(r, 3) for r in runs],
            "export_s_median": round(median, 3),
            "baseline_reencode_s": round(baseline_s, 3),
            "episodes_csv_s": round(table_csv_s, 3),
            "episodes_parquet_s": round(table_parquet_s, 3),
            "target_s": TARGET_S,
            "target_met": cli_s <= TARGET_S,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
