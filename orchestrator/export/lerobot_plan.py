"""The pure core of the LeRobotDataset v3.0 export: where every frame goes.

From typed values only (records.py; no SQL, no video): the dataset's fps, tasks and feature
shapes, each episode's frame range in the one data file (`dataset_from_index` ..
`dataset_to_index`), each camera's segment in that camera's one concatenated MP4
(`from_timestamp` .. `to_timestamp`), the per-frame columns and the metadata files.

An episode has one frame per control step: step i's observation (state, camera frames)
and the action applied from it; `timestamp` = i / fps. Each camera's recorded MP4 holds one
frame per step too; a camera file with fewer frames than steps shortens the episode to the
frames it has (a file with more keeps them in the MP4: the next episode starts after them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.export.records import EpisodeOutcome, EpisodeRecord, ExportError, StepSeries

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 500
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
STATE = "observation.state"
ACTION = "action"
EE_DELTA_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


def video_key(camera: str) -> str:
    return f"observation.images.{camera}"


@dataclass(frozen=True)
class VideoSpan:
    camera: str
    from_timestamp: float
    to_timestamp: float


@dataclass(frozen=True)
class EpisodePlan:
    index: int  # episode_index in the dataset
    record: EpisodeRecord
    task_index: int
    length: int
    from_index: int  # first frame's global index
    spans: tuple[VideoSpan, ...]  # one per camera, in DatasetPlan.cameras order

    @property
    def to_index(self) -> int:  # exclusive, as LeRobot's dataset_to_index
        return self.from_index + self.length


@dataclass(frozen=True)
class DatasetPlan:
    fps: float
    tasks: tuple[str, ...]
    cameras: tuple[str, ...]
    action_space: str
    action_dim: int
    state_dim: int
    episodes: tuple[EpisodePlan, ...]
    skipped: tuple[int, ...] = ()  # episode ids without a frame (no step or no video frame)

    @property
    def total_frames(self) -> int:
        return sum(e.length for e in self.episodes)


@dataclass(frozen=True)
class VideoInfo:
    """What the concatenated MP4 of one camera holds (probed by the writer)."""

    codec: str
    width: int
    height: int
    pix_fmt: str


def _one(values: set[Any], what: str, hint: str) -> Any:
    if len(values) != 1:
        raise ExportError(f"the episodes have several {what} ({sorted(map(str, values))}): "
                          f"a LeRobot dataset has one; {hint}")
    return next(iter(values))


def plan_dataset(records: Sequence[EpisodeRecord], steps: Mapping[int, StepSeries]) -> DatasetPlan:
    """Episode indexes, frame ranges and video segments, in the order of `records`.

    An episode without a frame (no step, or a camera without a frame) is left out and listed
    in `skipped`."""
    cameras = tuple(sorted({v.camera for r in records for v in r.videos}))
    skipped = tuple(r.episode_id for r in records if _length(r, steps, cameras) == 0)
    records = [r for r in records if r.episode_id not in skipped]
    if not records:
        raise ExportError("the campaign has no counted recorded episode with steps: "
                          "nothing to export")
    fps = float(_one({r.control_hz for r in records}, "control rates",
                     "run one rate per campaign"))
    mixed = "export arms with one action space and state per dataset"
    action_space = str(_one({steps[r.episode_id].action_space for r in records},
                            "action spaces", mixed))
    action_dim = int(_one({steps[r.episode_id].actions.shape[1] for r in records},
                          "action sizes", mixed))
    state_dim = int(_one({steps[r.episode_id].states.shape[1] for r in records},
                         "state sizes", mixed))
    tasks: dict[str, int] = {}
    offsets = dict.fromkeys(cameras, 0)
    out: list[EpisodePlan] = []
    first = 0
    for i, r in enumerate(records):
        videos = {v.camera: v for v in r.videos}
        missing = [c for c in cameras if c not in videos]
        if missing:
            raise ExportError(f"episode {r.episode_id} has no video of camera(s) {missing}: "
                              "a LeRobot dataset needs every camera in every episode")
        length = _length(r, steps, cameras)
        spans = []
        for c in cameras:
            start = offsets[c] / fps
            spans.append(VideoSpan(c, start, start + length / fps))
            offsets[c] += videos[c].frames
        task_index = tasks.setdefault(r.instruction, len(tasks))
        out.append(EpisodePlan(i, r, task_index, length, first, tuple(spans)))
        first += length
    return DatasetPlan(fps, tuple(tasks), cameras, action_space, action_dim, state_dim,
                       tuple(out), skipped)


def _length(r: EpisodeRecord, steps: Mapping[int, StepSeries], cameras: Sequence[str]) -> int:
    """Frames of an episode: its steps, at most the frames of each camera's video."""
    frames = {v.camera: v.frames for v in r.videos}
    s = steps.get(r.episode_id)
    return min([s.length if s is not None else 0, *(frames.get(c, 1 << 62) for c in cameras)])


def frame_columns(plan: DatasetPlan, steps: Mapping[int, StepSeries]) -> dict[str, np.ndarray]:
    """The data file's columns, one row per frame, in episode order."""
    n = plan.total_frames
    cols: dict[str, np.ndarray] = {
        STATE: np.zeros((n, plan.state_dim), np.float32),
        ACTION: np.zeros((n, plan.action_dim), np.float32),
        "timestamp": np.zeros(n, np.float32),
        "frame_index": np.zeros(n, np.int64),
        "episode_index": np.zeros(n, np.int64),
        "index": np.arange(n, dtype=np.int64),
        "task_index": np.zeros(n, np.int64),
        "next.done": np.zeros(n, np.bool_),
        "obs_wall_ns": np.zeros(n, np.int64),
    }
    for e in plan.episodes:
        s, sl = steps[e.record.episode_id], slice(e.from_index, e.to_index)
        k = np.arange(e.length, dtype=np.int64)
        cols[STATE][sl] = s.states[: e.length]
        cols[ACTION][sl] = s.actions[: e.length]
        cols["timestamp"][sl] = (k / plan.fps).astype(np.float32)
        cols["frame_index"][sl] = k
        cols["episode_index"][sl] = e.index
        cols["task_index"][sl] = e.task_index
        cols["next.done"][sl] = k == e.length - 1
        cols["obs_wall_ns"][sl] = s.obs_wall_ns[: e.length]
    if plan.state_dim == 0:
        del cols[STATE]
    return cols


STATS_SKIPPED = ("next.done",)  # booleans: LeRobot keeps no stats of them either


def _fps_json(fps: float) -> int | float:
    return int(fps) if float(fps).is_integer() else fps


def features(plan: DatasetPlan, videos: Mapping[str, VideoInfo]) -> dict[str, Any]:
    """info.json's `features`: dtype, shape and names of every column and video."""
    names = list(EE_DELTA_NAMES) if plan.action_space == "ee_delta[7]" else None
    scalar = {"shape": [1], "names": None}
    out: dict[str, Any] = {}
    if plan.state_dim:
        out[STATE] = {"dtype": "float32", "shape": [plan.state_dim], "names": None}
    out[ACTION] = {"dtype": "float32", "shape": [plan.action_dim], "names": names}
    for c in plan.cameras:
        v = videos[c]
        out[video_key(c)] = {
            "dtype": "video",
            "shape": [v.height, v.width, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": v.height, "video.width": v.width, "video.codec": v.codec,
                "video.pix_fmt": v.pix_fmt, "video.is_depth_map": False,
                "video.fps": _fps_json(plan.fps), "video.channels": 3, "has_audio": False,
            },
        }
    out["timestamp"] = {"dtype": "float32", **scalar}
    for key in ("frame_index", "episode_index", "index", "task_index"):
        out[key] = {"dtype": "int64", **scalar}
    out["next.done"] = {"dtype": "bool", **scalar}
    out["obs_wall_ns"] = {"dtype": "int64", **scalar}
    return out


def info_json(plan: DatasetPlan, videos: Mapping[str, VideoInfo], *, robot_type: str | None,
              data_mb: float, video_mb: float) -> dict[str, Any]:
    """meta/info.json. Everything is in chunk 0, file 0: the size limits are raised to what
    the files hold, so a LeRobot writer appending later starts a new file."""
    n_eps = len(plan.episodes)
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": n_eps,
        "total_frames": plan.total_frames,
        "total_tasks": len(plan.tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": max(DATA_FILES_SIZE_IN_MB, int(np.ceil(data_mb))),
        "video_files_size_in_mb": max(VIDEO_FILES_SIZE_IN_MB, int(np.ceil(video_mb))),
        "fps": _fps_json(plan.fps),
        "splits": {"train": f"0:{n_eps}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if plan.cameras else None,
        "features": features(plan, videos),
    }


def episode_metadata(plan: DatasetPlan, outcomes: Mapping[int, EpisodeOutcome], *,
                     blind: bool) -> list[dict[str, Any]]:
    """meta/episodes rows: LeRobot's index columns plus evalfleet's per-episode outcome,
    labels, policy (blind code always; name unless `blind`), task category and scene seed."""
    rows = []
    for e in plan.episodes:
        r, o = e.record, outcomes[e.record.episode_id]
        row: dict[str, Any] = {
            "episode_index": e.index,
            "tasks": [plan.tasks[e.task_index]],
            "length": e.length,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": e.from_index,
            "dataset_to_index": e.to_index,
        }
        for span in e.spans:
            k = video_key(span.camera)
            row[f"videos/{k}/chunk_index"] = 0
            row[f"videos/{k}/file_index"] = 0
            row[f"videos/{k}/from_timestamp"] = span.from_timestamp
            row[f"videos/{k}/to_timestamp"] = span.to_timestamp
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        row.update({
            "evalfleet/episode_id": r.episode_id,
            "success": o.success,
            "outcome": o.outcome,
            "outcome_source": o.source,
            "progress": o.progress,
            "failure_modes": list(o.failure_modes),
            "evaluator_count": len(o.evaluators),
            "policy_blind_code": r.blind_code,
        })
        if not blind:
            row["policy"] = r.policy_name
            row["policy_version"] = r.policy_version
        row.update({
            "task_key": r.task_key,
            "task_category": r.category,
            "task_difficulty": r.difficulty,
            "scene_seed": r.scene_seed,
            "trial_index": r.trial_index,
            "terminated_by": r.terminated_by,
        })
        rows.append(row)
    return rows
