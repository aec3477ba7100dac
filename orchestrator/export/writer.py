"""The export shell: read the store, plan (lerobot_plan), write the files (pyarrow, PyAV).

Nothing half-written is ever left under the destination's name: a dataset is written into
`DIR.partial-XXXX` next to DIR and renamed onto DIR at the end (an interrupted or failed
export removes its partial folder); an episodes table goes to `FILE.partial-XXXX` first.
An existing non-empty DIR or an existing FILE is refused unless `overwrite`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.export import lerobot_plan as lp
from orchestrator.export.episodes_table import LIST_COLUMNS, csv_value, episodes_table
from orchestrator.export.records import ExportError, episode_outcome
from orchestrator.export.stats import (
    FeatureStats,
    combine,
    flat_episode_stats,
    stats_json,
    vector_stats,
)
from orchestrator.export.store_read import campaign_id, episode_records, step_series, step_timings
from orchestrator.store.db import Store

MB = 1024 * 1024


@dataclass(frozen=True)
class Progress:
    """Callbacks of a long export: `start(total)` once the work is known, `advance()` per
    unit (one episode's data, one episode's video of one camera)."""

    start: Callable[[int], None]
    advance: Callable[[], None]


NO_PROGRESS = Progress(lambda _n: None, lambda: None)


@dataclass(frozen=True)
class LeRobotResult:
    path: Path
    episodes: int
    frames: int
    cameras: tuple[str, ...]
    video_methods: tuple[str, ...]  # per camera: remux | reencode
    skipped: tuple[int, ...]


@dataclass(frozen=True)
class EpisodesResult:
    path: Path
    rows: int


def _refuse_existing_dir(dest: Path, overwrite: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest} exists and is not a folder: choose another DIR")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise ExportError(f"{dest} exists and is not empty: choose another DIR or add "
                          "--overwrite to replace it")


@contextlib.contextmanager
def atomic_dir(dest: Path, *, overwrite: bool) -> Iterator[Path]:
    """A fresh `DEST.partial-XXXX` folder, renamed onto DEST when the block succeeds and
    removed when it fails or is interrupted."""
    _refuse_existing_dir(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{dest.name}.partial-", dir=dest.parent))
    try:
        yield tmp
        _refuse_existing_dir(dest, overwrite)  # someone may have filled it meanwhile
        old = None
        if dest.is_dir():
            if any(dest.iterdir()):
                old = dest.with_name(f"{dest.name}.old-{secrets.token_hex(4)}")
                os.replace(dest, old)
            else:
                dest.rmdir()
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(dest: Path, *, overwrite: bool) -> Iterator[Path]:
    if dest.exists() and (dest.is_dir() or not overwrite):
        raise ExportError(f"{dest} exists: choose another file or add --overwrite to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.partial-{secrets.token_hex(4)}")
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _vector_array(values: np.ndarray) -> pa.Array:
    if values.ndim == 1:
        return pa.array(values)
    flat = pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4) + "\n")


def export_lerobot(store: Store, campaign: str, dest: Path, *, media_dir: Path,
                   blind: bool = False, overwrite: bool = False,
                   progress: Progress = NO_PROGRESS) -> LeRobotResult:
    """Write the campaign's counted recorded episodes as a LeRobotDataset v3.0 at `dest`."""
    from orchestrator.export.video import Segment, concat_camera

    _refuse_existing_dir(dest, overwrite)
    with store.read() as s:
        cid = campaign_id(s, campaign)
        records = episode_records(s, cid)
        steps = step_series(s, cid)
    plan = lp.plan_dataset(records, steps)
    outcomes = {r.episode_id: episode_outcome(r.labels) for r in records}
    progress.start(len(plan.episodes) * (1 + len(plan.cameras)))
    with atomic_dir(dest, overwrite=overwrite) as root:
        cols = lp.frame_columns(plan, steps)
        data_path = root / lp.DATA_PATH.format(chunk_index=0, file_index=0)
        data_path.parent.mkdir(parents=True)
        pq.write_table(pa.table({k: _vector_array(v) for k, v in cols.items()}), data_path)
        stat_keys = [k for k in cols if k not in lp.STATS_SKIPPED]
        ep_stats: list[dict[str, FeatureStats]] = []
        for e in plan.episodes:
            sl = slice(e.from_index, e.to_index)
            ep_stats.append({k: vector_stats(cols[k][sl]) for k in stat_keys})
            progress.advance()
        stats = {k: vector_stats(cols[k]) for k in stat_keys}
        videos, methods, video_mb = {}, [], 0.0
        for cam in plan.cameras:
            key = lp.video_key(cam)
            out = root / lp.VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
            out.parent.mkdir(parents=True)
            segments = []
            for e in plan.episodes:
                v = next(v for v in e.record.videos if v.camera == cam)
                segments.append(Segment(media_dir / v.uri, v.frames, e.length))
            result = concat_camera(segments, plan.fps, out, progress.advance)
            videos[cam] = result.info
            methods.append(result.method)
            for per_episode, st in zip(ep_stats, result.stats, strict=True):
                per_episode[key] = st
            stats[key] = combine(result.stats)
            video_mb = max(video_mb, out.stat().st_size / MB)
        meta = root / "meta"
        rows = lp.episode_metadata(plan, outcomes, blind=blind)
        for row, per_ep in zip(rows, ep_stats, strict=True):
            row.update(flat_episode_stats(per_ep))
        (meta / "episodes/chunk-000").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / lp.EPISODES_PATH)
        tasks = pd.DataFrame({"task_index": np.arange(len(plan.tasks), dtype=np.int64)},
                             index=pd.Index(list(plan.tasks), name="task"))
        tasks.to_parquet(meta / "tasks.parquet")
        drivers = {e.record.driver for e in plan.episodes if e.record.driver}
        robot_type = drivers.pop() if len(drivers) == 1 else ("mixed" if drivers else None)
        _write_json(meta / "info.json", lp.info_json(
            plan, videos, robot_type=robot_type, data_mb=data_path.stat().st_size / MB,
            video_mb=video_mb))
        _write_json(meta / "stats.json", stats_json(stats))
    return LeRobotResult(dest, len(plan.episodes), plan.total_frames, plan.cameras,
                         tuple(methods), plan.skipped)


EPISODE_TYPES: dict[str, pa.DataType] = {
    "started_at": pa.timestamp("us", tz="UTC"), "ended_at": pa.timestamp("us", tz="UTC"),
    "success": pa.bool_(), "sim_success": pa.bool_(), "progress": pa.float64(),
    "duration_s": pa.float64(), "difficulty": pa.string(), "outcome_source": pa.string(),
    "robot": pa.string(), "station": pa.string(), "terminated_by": pa.string(),
    "evaluators": pa.list_(pa.string()), "failure_modes": pa.list_(pa.string()),
    "mean_inference_ms": pa.float64(), "mean_orchestration_ms": pa.float64(),
    "mean_obs_age_ms": pa.float64(), "mean_command_ms": pa.float64(),
}


def export_episodes(store: Store, campaign: str, dest: Path, *, blind: bool = False,
                    overwrite: bool = False) -> EpisodesResult:
    """One row per counted episode to `dest` (.csv or .parquet)."""
    import csv

    kind = dest.suffix.lower()
    if kind not in (".csv", ".parquet"):
        raise ExportError(f"{dest}: --format episodes writes FILE.csv or FILE.parquet; "
                          "name the file with one of these endings")
    if dest.exists() and (dest.is_dir() or not overwrite):
        raise ExportError(f"{dest} exists: choose another file or add --overwrite to replace it")
    with store.read() as s:
        cid = campaign_id(s, campaign)
        records = episode_records(s, cid)
        timings = step_timings(s, cid)
    outcomes = {r.episode_id: episode_outcome(r.labels) for r in records}
    table = episodes_table(campaign, records, outcomes, timings, blind=blind)
    with atomic_file(dest, overwrite=overwrite) as tmp:
        if kind == ".csv":
            with tmp.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(table.columns)
                for row in table.rows:
                    w.writerow([csv_value(v) for v in row])
        else:
            arrays = {}
            for c in table.columns:
                values = table.column(c)
                if c in LIST_COLUMNS:
                    values = [list(v) for v in values]
                arrays[c] = pa.array(values, type=EPISODE_TYPES.get(c))
            pq.write_table(pa.table(arrays), tmp)
    return EpisodesResult(dest, len(table.rows))
