"""The export's pure core: outcomes, the dataset plan (frames, timestamps, episode indexes,
video segments), statistics and the metadata rows, from typed values only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from orchestrator.export import lerobot_plan as lp
from orchestrator.export.episodes_table import csv_value, episodes_table
from orchestrator.export.records import (
    EpisodeRecord,
    ExportError,
    LabelRecord,
    StepSeries,
    StepTiming,
    VideoSource,
    episode_outcome,
)
from orchestrator.export.stats import combine, image_stats, stats_json, vector_stats

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def record(eid: int, *, instruction: str = "pick coke can", hz: float = 5.0,
           frames: dict[str, int] | None = None,
           labels: tuple[LabelRecord, ...] = ()) -> EpisodeRecord:
    vids = tuple(VideoSource(c, f"c/episode-{eid}-{c}.mp4", n, hz)
                 for c, n in (frames or {"main": 3, "wrist": 3}).items())
    return EpisodeRecord(
        episode_id=eid, trial_id=eid, trial_index=0, attempt=1, task_key=f"t{eid}",
        instruction=instruction, category="seen", split="seen", difficulty=None,
        scene_seed=100 + eid, control_hz=hz, policy_name="oracle", policy_version="1",
        blind_code="P-AAAA", robot="arm-1", station="s", driver="sim", started_at=T0,
        ended_at=T0 + timedelta(seconds=2.5), step_count=3, late_steps=0,
        terminated_by="success", videos=vids, labels=labels)


def series(n: int, *, dim: int = 7, space: str = "ee_delta[7]", seed: int = 0) -> StepSeries:
    rng = np.random.default_rng(seed)
    return StepSeries(space, rng.normal(size=(n, dim)).astype(np.float32),
                      rng.normal(size=(n, 7)).astype(np.float32),
                      np.arange(n, dtype=np.int64) * 200_000_000 + seed)


def test_outcome_resolves_as_the_reports_do() -> None:
    h = [LabelRecord("sim", "sim", False, None, None),
         LabelRecord("human", "ann", True, 1.0, None),
         LabelRecord("human", "bob", True, 0.5, "slow")]
    o = episode_outcome(tuple(h))
    assert (o.outcome, o.success, o.source) == ("success", True, "human")
    assert o.progress == 0.75 and o.evaluators == ("ann", "bob") and o.sim_success is False
    assert o.failure_modes == ("slow",) and o.human_votes == 2
    tie = episode_outcome((LabelRecord("human", "ann", True, None, None),
                           LabelRecord("human", "bob", False, None, "drop")))
    assert (tie.outcome, tie.success) == ("disputed", None)
    assert episode_outcome(()).outcome == "unlabeled"
    assert episode_outcome((LabelRecord("sim", "sim", False, None, None),)).success is False


def test_plan_places_frames_episodes_and_video_segments() -> None:
    recs = [record(1, frames={"main": 3, "wrist": 3}),
            record(2, instruction="open drawer", frames={"main": 5, "wrist": 4}),
            record(3, frames={"main": 2, "wrist": 2})]
    steps = {1: series(3), 2: series(4, seed=2), 3: series(2, seed=3)}
    plan = lp.plan_dataset(recs, steps)
    assert plan.fps == 5.0 and plan.cameras == ("main", "wrist")
    assert plan.tasks == ("pick coke can", "open drawer")
    assert [e.task_index for e in plan.episodes] == [0, 1, 0]
    assert [(e.from_index, e.to_index) for e in plan.episodes] == [(0, 3), (3, 7), (7, 9)]
    # main of episode 2 has a frame more than steps: it stays in the MP4, episode 3 after it
    spans = {(e.index, s.camera): (s.from_timestamp, s.to_timestamp)
             for e in plan.episodes for s in e.spans}
    assert spans[(1, "main")] == pytest.approx((0.6, 1.4))
    assert spans[(2, "main")] == pytest.approx((1.6, 2.0))
    assert spans[(2, "wrist")] == pytest.approx((1.4, 1.8))
    cols = lp.frame_columns(plan, steps)
    assert cols["timestamp"].tolist() == pytest.approx([0, .2, .4, 0, .2, .4, .6, 0, .2])
    assert cols["frame_index"].tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1]
    assert cols["episode_index"].tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert cols["index"].tolist() == list(range(9))
    assert cols["next.done"].tolist() == [0, 0, 1, 0, 0, 0, 1, 0, 1]
    np.testing.assert_array_equal(cols["action"][3:7], steps[2].actions)
    np.testing.assert_array_equal(cols["obs_wall_ns"][7:], steps[3].obs_wall_ns)
    assert plan.total_frames == 9


def test_plan_shortens_to_video_and_skips_empty_episodes() -> None:
    recs = [record(1, frames={"main": 2}), record(2, frames={"main": 3})]
    plan = lp.plan_dataset(recs, {1: series(3)})  # episode 2 has no step
    assert plan.skipped == (2,) and [e.length for e in plan.episodes] == [2]


@pytest.mark.parametrize(("recs", "steps", "match"), [
    ([record(1), record(2, hz=10.0)], {1: series(3), 2: series(3)}, "control rates"),
    ([record(1), record(2)], {1: series(3), 2: series(3, dim=8, space="joint_position[8]")},
     "action spaces"),
    ([record(1), record(2, frames={"main": 3})], {1: series(3), 2: series(3)}, "wrist"),
    ([], {}, "nothing to export"),
])
def test_plan_refuses_what_one_dataset_cannot_hold(recs, steps, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ExportError, match=match):
        lp.plan_dataset(recs, steps)


def test_vector_stats_and_combine_are_exact() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    whole = vector_stats(x)
    parts = combine([vector_stats(x[:7]), vector_stats(x[7:30]), vector_stats(x[30:])])
    for a, b in ((whole.mean, x.mean(0)), (whole.std, x.std(0)), (parts.mean, x.mean(0)),
                 (parts.std, x.std(0)), (parts.min, x.min(0)), (parts.max, x.max(0))):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert parts.count == 50 and vector_stats(np.arange(4.0)).mean.shape == (1,)
    assert stats_json({"a": whole})["a"]["count"] == [50]


def test_image_stats_per_channel_in_unit_range() -> None:
    f = np.zeros((2, 4, 4, 3), np.uint8)
    f[0, ..., 0], f[1, ..., 0] = 255, 0
    f[..., 1] = 51
    s = image_stats(f)
    assert s.mean.shape == (3, 1, 1) and s.count == 2
    np.testing.assert_allclose(s.mean.ravel(), [0.5, 0.2, 0.0])
    np.testing.assert_allclose(s.std.ravel(), [0.5, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(s.max.ravel(), [1.0, 0.2, 0.0])
    c = combine([image_stats(f[:1]), image_stats(f[1:])])
    np.testing.assert_allclose(c.std.ravel(), s.std.ravel(), atol=1e-9)


def test_info_and_episode_metadata() -> None:
    labels = (LabelRecord("human", "ann", True, 1.0, None),)
    recs = [record(1, labels=labels), record(2)]
    plan = lp.plan_dataset(recs, {1: series(3), 2: series(3)})
    vi = {"main": lp.VideoInfo("h264", 64, 48, "yuv420p"),
          "wrist": lp.VideoInfo("h264", 32, 32, "yuv420p")}
    info = lp.info_json(plan, vi, robot_type="sim", data_mb=0.1, video_mb=700.2)
    assert info["codebase_version"] == "v3.0" and info["fps"] == 5
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 6, 1)
    assert info["video_files_size_in_mb"] == 701 and info["data_files_size_in_mb"] == 100
    assert info["features"]["observation.images.main"]["shape"] == [48, 64, 3]
    assert info["features"]["action"]["names"][0] == "dx"
    assert info["features"]["timestamp"] == {"dtype": "float32", "shape": [1], "names": None}
    outcomes = {r.episode_id: episode_outcome(r.labels) for r in recs}
    rows = lp.episode_metadata(plan, outcomes, blind=False)
    assert rows[0]["success"] is True and rows[1]["outcome"] == "unlabeled"
    assert rows[1]["dataset_from_index"] == 3 and rows[1]["tasks"] == ["pick coke can"]
    assert rows[1]["videos/observation.images.wrist/from_timestamp"] == pytest.approx(0.6)
    assert rows[0]["policy"] == "oracle" and rows[0]["scene_seed"] == 101
    blind = lp.episode_metadata(plan, outcomes, blind=True)
    assert "policy" not in blind[0] and blind[0]["policy_blind_code"] == "P-AAAA"


def test_episodes_table_rows_and_blind() -> None:
    recs = [record(1, labels=(LabelRecord("human", "ann", False, 0.2, "drop"),))]
    outcomes = {1: episode_outcome(recs[0].labels)}
    t = episodes_table("c", recs, outcomes, {1: StepTiming(20.0, 1.0, 5.0, 0.5)}, blind=False)
    assert t.column("outcome") == ["failure"] and t.column("duration_s") == [2.5]
    assert t.column("failure_modes") == [("drop",)] and t.column("mean_inference_ms") == [20.0]
    b = episodes_table("c", recs, outcomes, {}, blind=True)
    assert "policy" not in b.columns and b.column("mean_inference_ms") == [None]
    assert [csv_value(v) for v in (None, ("a", "b"), True, T0, 1.5)] == [
        "", "a;b", "true", T0.isoformat(), "1.5"]
