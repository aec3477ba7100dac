"""`evalfleet export`: the LeRobotDataset v3.0 and the episodes table, read back with
independent readers (pyarrow for Parquet, PyAV for video) and compared with the store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from orchestrator.export.records import ExportError
from orchestrator.export.writer import Progress, export_episodes, export_lerobot
from orchestrator.store.queries import episode_outcomes
from tests.integration.export_support import (
    POLICIES,
    SIZES,
    Built,
    action,
    build_campaign,
    colour,
    state,
    wall_ns,
)

FPS = 5.0


@pytest.fixture
def built(store, tmp_path: Path) -> tuple[object, Path, Built]:  # type: ignore[no-untyped-def]
    media = tmp_path / "media"
    return store, media, build_campaign(store, media)


def _decode(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(float(f.pts * s.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(s)]


def _view_outcomes(store, cid: int) -> dict[int, str]:  # type: ignore[no-untyped-def]
    with store.read() as s:
        return {o.episode_id: o.outcome for o in episode_outcomes(s, [cid])}


def test_lerobot_dataset_reads_back_as_the_store_has_it(built, tmp_path: Path) -> None:
    store, media, b = built
    dest = tmp_path / "out" / "ds"
    res = export_lerobot(store, b.campaign, dest, media_dir=media)
    eps = b.episode_ids
    lengths = [b.steps[e] for e in eps]
    assert res.episodes == len(eps) == 6 and res.frames == sum(lengths)
    assert res.video_methods == ("remux", "remux") and res.skipped == ()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ds"]  # no partial left

    info = json.loads((dest / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["fps"]) == (6, sum(lengths), 5)
    assert info["splits"] == {"train": "0:6"}
    feats = info["features"]
    assert feats["action"]["shape"] == [7] and feats["observation.state"]["shape"] == [7]
    assert feats["observation.images.main"]["shape"] == [48, 64, 3]
    assert feats["observation.images.wrist"]["info"]["video.codec"] == "h264"

    # data: one row per step, in episode order, as the store has the steps
    data = pq.read_table(dest / "data/chunk-000/file-000.parquet").to_pydict()
    assert len(data["index"]) == sum(lengths) and data["index"] == list(range(sum(lengths)))
    row = 0
    for k, (ep, n) in enumerate(zip(eps, lengths, strict=True)):
        for i in range(n):
            assert data["episode_index"][row] == k and data["frame_index"][row] == i
            assert data["timestamp"][row] == pytest.approx(i / FPS, abs=1e-6)
            assert data["obs_wall_ns"][row] == wall_ns(k, i)
            np.testing.assert_allclose(data["action"][row], action(k, i), atol=1e-6)
            np.testing.assert_allclose(data["observation.state"][row], state(k, i), atol=1e-6)
            assert data["next.done"][row] == (i == n - 1)
            row += 1

    # episodes: boundaries, tasks, outcomes (the analyst view's), no aborted attempt
    meta = pq.read_table(dest / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [m["evalfleet/episode_id"] for m in meta] == eps
    assert not set(b.aborted_ids) & {m["evalfleet/episode_id"] for m in meta}
    starts = np.cumsum([0, *lengths])
    tasks = pq.read_table(dest / "meta/tasks.parquet").to_pandas()
    view = _view_outcomes(store, b.campaign_id)
    for k, m in enumerate(meta):
        assert m["length"] == lengths[k]
        assert (m["dataset_from_index"], m["dataset_to_index"]) == (starts[k], starts[k + 1])
        assert data["task_index"][starts[k]] == tasks.loc[m["tasks"][0], "task_index"]
        assert m["outcome"] == view[eps[k]]
        assert m["success"] == {"success": True, "failure": False}.get(view[eps[k]])
        assert m["policy"] in POLICIES and m["policy_blind_code"].startswith("P-")
        assert m["task_category"] and isinstance(m["scene_seed"], int)
    assert meta[0]["outcome"] == "disputed" and meta[0]["evaluator_count"] == 2
    assert meta[0]["failure_modes"] == ["missed_grasp"] and meta[0]["progress"] == 0.625
    assert meta[1]["outcome"] == "success" and meta[1]["outcome_source"] == "human"
    assert meta[2]["outcome"] == "unlabeled" and meta[2]["success"] is None

    # videos: every recorded frame, each episode's frames where its segment says, in order
    for cam in ("main", "wrist"):
        key = f"observation.images.{cam}"
        frames = _decode(dest / f"videos/{key}/chunk-000/file-000.mp4")
        assert len(frames) == sum(b.frames[e] for e in eps)
        by_time = {round(t * FPS): img for t, img in frames}
        for k, m in enumerate(meta):
            t0, t1 = m[f"videos/{key}/from_timestamp"], m[f"videos/{key}/to_timestamp"]
            assert t1 - t0 == pytest.approx(lengths[k] / FPS)
            inside = [t for t, _ in frames if t0 - 1e-6 <= t < t1 - 1e-6]
            assert len(inside) == lengths[k]
            for i in range(lengths[k]):
                img = by_time[round((t0 + i / FPS) * FPS)]
                assert img.shape[:2] == SIZES[cam]
                np.testing.assert_allclose(img.reshape(-1, 3).mean(0), colour(k, i, cam), atol=6)

    # stats: the store's actions exactly; images per channel from the frames
    stats = json.loads((dest / "meta/stats.json").read_text())
    acts = np.array([action(k, i) for k, n in enumerate(lengths) for i in range(n)])
    np.testing.assert_allclose(stats["action"]["mean"], acts.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], acts.std(0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["min"], acts.min(0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["max"], acts.max(0), atol=1e-6)
    assert stats["action"]["count"] == [sum(lengths)]
    assert stats["timestamp"]["max"] == pytest.approx([(max(lengths) - 1) / FPS])
    cols = np.array([colour(k, i, "main") for k, n in enumerate(lengths) for i in range(n)])
    img = stats["observation.images.main"]
    assert np.array(img["mean"]).shape == (3, 1, 1)
    np.testing.assert_allclose(np.array(img["mean"]).ravel(), cols.mean(0) / 255, atol=0.02)
    np.testing.assert_allclose(np.array(img["max"]).ravel(), cols.max(0) / 255, atol=0.03)
    np.testing.assert_allclose(np.array(img["std"]).ravel(), cols.std(0) / 255, atol=0.02)


def test_blind_export_names_no_policy(built, tmp_path: Path) -> None:
    store, media, b = built
    dest = tmp_path / "blind"
    export_lerobot(store, b.campaign, dest, media_dir=media, blind=True)
    meta = pq.read_table(dest / "meta/episodes/chunk-000/file-000.parquet")
    assert "policy" not in meta.column_names and "policy_blind_code" in meta.column_names
    for f in dest.rglob("*"):
        if f.is_file() and f.suffix != ".mp4":
            blob = f.read_bytes()
            assert not any(p.encode() in blob for p in POLICIES), f
    table = tmp_path / "blind.csv"
    export_episodes(store, b.campaign, table, blind=True)
    text = table.read_text()
    assert "policy_blind_code" in text and not any(p in text for p in POLICIES)


def test_different_sizes_are_reencoded_at_the_first_size(store, tmp_path: Path) -> None:
    media = tmp_path / "media"
    b = build_campaign(store, media, episodes=3, odd_size_episode=1)
    res = export_lerobot(store, b.campaign, tmp_path / "ds", media_dir=media)
    assert res.video_methods == ("reencode", "remux")  # main differs, wrist does not
    frames = _decode(tmp_path / "ds/videos/observation.images.main/chunk-000/file-000.mp4")
    assert len(frames) == sum(b.frames.values())
    assert {img.shape for _, img in frames} == {(48, 64, 3)}
    k, i = 2, 1  # a frame of the third episode, after the re-sized one
    start = (b.frames[b.episode_ids[0]] + b.frames[b.episode_ids[1]]) / FPS
    img = {round(t * FPS): im for t, im in frames}[round((start + i / FPS) * FPS)]
    np.testing.assert_allclose(img.reshape(-1, 3).mean(0), colour(k, i, "main"), atol=8)


def test_existing_folder_refused_and_failures_leave_nothing(built, tmp_path: Path) -> None:
    store, media, b = built
    dest = tmp_path / "x" / "ds"
    dest.mkdir(parents=True)
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty.*--overwrite"):
        export_lerobot(store, b.campaign, dest, media_dir=media)
    assert (dest / "keep.txt").read_text() == "mine"
    # a video gone: the export fails naming it, the old folder stays, no partial is left
    victim = next(media.rglob("*-wrist.mp4"))
    victim.rename(victim.with_suffix(".moved"))
    with pytest.raises(ExportError, match="cannot read video"):
        export_lerobot(store, b.campaign, dest, media_dir=media, overwrite=True)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ds"]
    assert (dest / "keep.txt").exists()
    victim.with_suffix(".moved").rename(victim)
    export_lerobot(store, b.campaign, dest, media_dir=media, overwrite=True)
    assert not (dest / "keep.txt").exists() and (dest / "meta/info.json").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ds"]
    # interrupted (Ctrl-C) half-way through the videos: the same
    calls = []

    def interrupt() -> None:
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_lerobot(store, b.campaign, dest, media_dir=media, overwrite=True,
                       progress=Progress(lambda _n: None, interrupt))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ds"]
    assert (dest / "meta/info.json").exists()
    with pytest.raises(ExportError, match="no campaign named 'nope'"):
        export_lerobot(store, "nope", tmp_path / "y", media_dir=media)


def test_episodes_table_csv_and_parquet_agree_with_the_store(built, tmp_path: Path) -> None:
    store, _media, b = built
    view = _view_outcomes(store, b.campaign_id)
    export_episodes(store, b.campaign, tmp_path / "e.parquet")
    export_episodes(store, b.campaign, tmp_path / "e.csv")
    pq_rows = pq.read_table(tmp_path / "e.parquet").to_pylist()
    with (tmp_path / "e.csv").open(newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["episode_id"] for r in pq_rows] == b.episode_ids
    assert [int(r["episode_id"]) for r in csv_rows] == b.episode_ids
    for p, c in zip(pq_rows, csv_rows, strict=True):
        ep = p["episode_id"]
        assert p["outcome"] == c["outcome"] == view[ep]
        assert p["step_count"] == int(c["step_count"]) == b.steps[ep]
        assert p["policy"] in POLICIES and c["policy"] == p["policy"]
        assert p["campaign"] == b.campaign and p["mean_inference_ms"] is not None
    assert pq_rows[0]["evaluators"] == ["ann", "bob"] and csv_rows[0]["evaluators"] == "ann;bob"
    assert pq_rows[0]["failure_modes"] == ["missed_grasp"]
    assert pq_rows[2]["success"] is None and csv_rows[2]["success"] == ""
    with pytest.raises(ExportError, match="exists"):
        export_episodes(store, b.campaign, tmp_path / "e.csv")
    with pytest.raises(ExportError, match="FILE.csv or FILE.parquet"):
        export_episodes(store, b.campaign, tmp_path / "e.txt")


def test_cli_export_both_formats(tmp_path: Path) -> None:
    from orchestrator.cli import app
    from orchestrator.config import get_settings
    from orchestrator.store import migrate
    from orchestrator.store.db import Store

    settings = get_settings()
    store = Store.open(settings.resolved_database_url, check_schema=False)
    with store:
        migrate.upgrade(store.engine)
        b = build_campaign(store, settings.media_dir, episodes=3)
    runner = CliRunner()
    out = runner.invoke(app, ["export", b.campaign, str(tmp_path / "ds"), "--blind"])
    assert out.exit_code == 0, out.output
    assert "3 episodes" in out.output and "main (remux)" in out.output
    out = runner.invoke(app, ["export", b.campaign, str(tmp_path / "ds")])
    assert out.exit_code == 1 and "--overwrite" in out.output
    out = runner.invoke(app, ["export", b.campaign, str(tmp_path / "e.csv"), "-f", "episodes"])
    assert out.exit_code == 0, out.output
    assert len((tmp_path / "e.csv").read_text().splitlines()) == 4
    out = runner.invoke(app, ["export", "--help"])
    assert "LeRobotDataset v3.0" in out.output and "--blind" in out.output
