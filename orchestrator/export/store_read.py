"""The store queries of an export: a campaign's counted recorded episodes, their labels,
steps and latency means, as the typed values of records.py (a few set-based queries per
campaign, never one per episode)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from orchestrator.export.records import (
    EpisodeRecord,
    ExportError,
    LabelRecord,
    StepSeries,
    StepTiming,
    VideoSource,
)
from orchestrator.store.models import (
    Campaign,
    CampaignPolicy,
    Episode,
    Label,
    Policy,
    Robot,
    Step,
    Task,
    Trial,
)
from orchestrator.store.states import EpisodeStatus, LabelSource

EE_COLUMNS = (Step.dx, Step.dy, Step.dz, Step.droll, Step.dpitch, Step.dyaw, Step.gripper)


def campaign_id(s: Session, name: str) -> int:
    cid = s.scalar(select(Campaign.id).where(Campaign.name == name))
    if cid is None:
        raise ExportError(f"no campaign named {name!r} in the store; "
                          "`evalfleet campaign list` shows the campaigns")
    return int(cid)


def _counted(cid: int) -> Any:
    return and_(Trial.campaign_id == cid, Episode.counted.is_(True),
                Episode.status == EpisodeStatus.RECORDED)


def _videos(media: Sequence[Any] | None, fps: float) -> tuple[VideoSource, ...]:
    out = []
    for m in media or ():
        if isinstance(m, dict) and m.get("camera") and m.get("uri"):
            out.append(VideoSource(str(m["camera"]), str(m["uri"]), int(m.get("frames") or 0),
                                   float(m.get("fps") or fps)))
    return tuple(sorted(out, key=lambda v: v.camera))


def episode_records(s: Session, cid: int) -> list[EpisodeRecord]:
    """The campaign's counted recorded episodes, in episode id order, with their labels."""
    labels: dict[int, list[LabelRecord]] = defaultdict(list)
    label_rows = s.execute(
        select(Label.episode_id, Label.source, Label.evaluator, Label.success, Label.progress,
               Label.failure_mode)
        .join(Episode, Episode.id == Label.episode_id).join(Trial, Trial.id == Episode.trial_id)
        .where(_counted(cid), Label.source.in_((LabelSource.HUMAN, LabelSource.SIM)))
        .order_by(Label.created_at, Label.id)  # auto labels (detectors) are not outcomes
    )
    for eid, source, evaluator, success, progress, failure in label_rows:
        labels[eid].append(LabelRecord(source, evaluator, bool(success), progress, failure))
    rows = s.execute(
        select(Episode, Trial.trial_index, Trial.scene_seed, Task, Policy.name, Policy.version,
               CampaignPolicy.blind_code, Robot.name, Robot.station, Robot.capabilities)
        .join(Trial, Trial.id == Episode.trial_id)
        .join(Task, Task.id == Trial.task_id)
        .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
        .join(Policy, Policy.id == CampaignPolicy.policy_id)
        .outerjoin(Robot, Robot.id == Episode.robot_id)
        .where(_counted(cid)).order_by(Episode.id)
    )
    out = []
    for ep, trial_index, seed, task, pname, pversion, code, robot, station, caps in rows:
        driver = caps.get("driver") if isinstance(caps, dict) else None
        out.append(EpisodeRecord(
            episode_id=ep.id, trial_id=ep.trial_id, trial_index=trial_index, attempt=ep.attempt,
            task_key=task.key, instruction=task.instruction, category=task.category,
            split=task.split, difficulty=task.difficulty, scene_seed=int(seed),
            control_hz=float(task.control_hz), policy_name=pname, policy_version=pversion,
            blind_code=code, robot=robot, station=station,
            driver=str(driver) if driver else None, started_at=ep.started_at,
            ended_at=ep.ended_at, step_count=ep.step_count, late_steps=ep.late_steps,
            terminated_by=ep.terminated_by, videos=_videos(ep.media, float(task.control_hz)),
            labels=tuple(labels.get(ep.id, ())),
        ))
    return out


def _action(values: Any, ee: Sequence[float | None]) -> list[float]:
    """The applied action: `action` (every space), else RT-2's columns (rows before 0008)."""
    if values:
        return [float(v) for v in values]
    return [float(v) for v in ee if v is not None]


def step_series(s: Session, cid: int) -> dict[int, StepSeries]:
    """Every counted episode's steps (idx order) as arrays; episode id -> StepSeries."""
    acc: dict[int, tuple[list[Any], list[Any], list[int], set[str]]] = {}
    rows = s.execute(
        select(Step.episode_id, Step.action, Step.action_space, Step.proprio, Step.obs_wall_ns,
               *EE_COLUMNS)
        .join(Episode, Episode.id == Step.episode_id).join(Trial, Trial.id == Episode.trial_id)
        .where(_counted(cid)).order_by(Step.episode_id, Step.idx)
    )
    for eid, action, space, proprio, wall, *ee in rows:
        a, p, w, spaces = acc.setdefault(eid, ([], [], [], set()))
        a.append(_action(action, ee))
        p.append([float(v) for v in proprio or ()])
        w.append(int(wall or 0))
        spaces.add(space)
    out = {}
    for eid, (a, p, w, spaces) in acc.items():
        try:
            actions = np.asarray(a, dtype=np.float32).reshape(len(a), -1)
            states = np.asarray(p, dtype=np.float32).reshape(len(p), -1)
        except ValueError as e:
            raise ExportError(f"episode {eid}: steps with actions or states of different "
                              f"sizes ({e}); the export needs one size per episode") from e
        if len(spaces) != 1:
            raise ExportError(f"episode {eid} mixes action spaces {sorted(spaces)}")
        out[eid] = StepSeries(spaces.pop(), actions, states, np.asarray(w, dtype=np.int64))
    return out


def step_timings(s: Session, cid: int) -> dict[int, StepTiming]:
    rows = s.execute(
        select(Step.episode_id, func.avg(Step.inference_ms), func.avg(Step.orchestration_ms),
               func.avg(Step.obs_age_ms), func.avg(Step.command_ms))
        .join(Episode, Episode.id == Step.episode_id).join(Trial, Trial.id == Episode.trial_id)
        .where(_counted(cid)).group_by(Step.episode_id)
    )
    return {
        int(eid): StepTiming(*(None if v is None else float(v) for v in vals))
        for eid, *vals in rows
    }
