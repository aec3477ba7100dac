"""What the lab-side tests read back from evalfleet's store after a campaign."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from sqlalchemy import func, select

from orchestrator.store.models import Campaign, Episode, Step, Trial


@dataclass(frozen=True)
class EpisodeRow:
    id: int
    trial_id: int
    status: str
    counted: bool
    abort_reason: str | None
    steps: int
    media: list[dict[str, Any]]


def episodes(store: Any, campaign_id: int) -> list[EpisodeRow]:
    with store.read() as s:
        rows = s.execute(
            select(Episode, func.count(Step.idx))
            .join(Trial, Trial.id == Episode.trial_id)
            .outerjoin(Step, Step.episode_id == Episode.id)
            .where(Trial.campaign_id == campaign_id)
            .group_by(Episode.id).order_by(Episode.id)
        ).all()
        return [EpisodeRow(e.id, e.trial_id, e.status, bool(e.counted), e.abort_reason, n,
                           list(e.media or [])) for e, n in rows]


def step_ages_ms(store: Any, campaign_id: int) -> list[float]:
    """obs_age_ms of every recorded step of the campaign."""
    with store.read() as s:
        return [float(a) for a in s.scalars(
            select(Step.obs_age_ms).join(Episode, Episode.id == Step.episode_id)
            .join(Trial, Trial.id == Episode.trial_id).where(Trial.campaign_id == campaign_id))]


def step_actions(store: Any, campaign_id: int) -> list[tuple[list[float], str]]:
    """(action, action_space) of every stored step, by episode then index."""
    with store.read() as s:
        rows = s.execute(
            select(Step.action, Step.action_space).join(Episode, Episode.id == Step.episode_id)
            .join(Trial, Trial.id == Episode.trial_id).where(Trial.campaign_id == campaign_id)
            .order_by(Step.episode_id, Step.idx)).all()
        return [([float(x) for x in a], str(sp)) for a, sp in rows]


def trial_statuses(store: Any, campaign_id: int) -> list[str]:
    with store.read() as s:
        return list(s.scalars(select(Trial.status).where(Trial.campaign_id == campaign_id)
                              .order_by(Trial.id)))


def campaign_status(store: Any, campaign_id: int) -> str:
    with store.read() as s:
        return str(s.get(Campaign, campaign_id).status)


def video_frames(media_dir: Path, media: dict[str, Any]) -> int:
    """Frames actually decodable from a stored MP4."""
    with av.open(str(media_dir / media["uri"])) as c:
        return sum(1 for _ in c.decode(video=0))
