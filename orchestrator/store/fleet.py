"""The runner's reads and writes about arms, operators, e-stop requests and media (the runner
holds no SQL: orchestrator.runner calls these inside its retrying store wrapper).

Each function runs in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from orchestrator.store.arm_leases import ArmLeaseResult, lease_arms
from orchestrator.store.campaigns import log_event
from orchestrator.store.models import Campaign, Episode, Event, Policy, Robot, Trial, utcnow
from orchestrator.store.states import (
    CampaignStatus,
    EpisodeStatus,
    EventKind,
    RobotStatus,
    TrialStatus,
)


@dataclass(frozen=True)
class ArmRow:
    name: str
    endpoint: str
    station: str


def upsert_robots(s: Session, arms: Sequence[ArmRow]) -> dict[str, int]:
    """The fleet's arms as robots rows (created or their endpoint/station updated): name -> id."""
    ids = {}
    for a in arms:
        row = s.scalar(select(Robot).where(Robot.name == a.name))
        if row is None:
            row = Robot(name=a.name, endpoint=a.endpoint)
            s.add(row)
        row.endpoint, row.station = a.endpoint, a.station
        s.flush()
        ids[a.name] = row.id
    return ids


def last_event_id(s: Session) -> int:
    return int(s.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0)


def take_arms(s: Session, robot_ids: Sequence[int], *, holder: str,
              lease_s: float) -> ArmLeaseResult:
    """Lease free arms to holder; each taken arm's status is unknown until probed (audited)."""
    res = lease_arms(s, robot_ids, holder=holder, lease_s=lease_s)
    for rid in res.taken:
        row = s.get(Robot, rid)
        assert row is not None
        row.status = RobotStatus.UNKNOWN
        log_event(s, EventKind.ARM_LEASED, robot_id=rid, holder=holder)
    return res


def touch_heartbeat(s: Session, robot_id: int) -> None:
    s.execute(update(Robot).where(Robot.id == robot_id).values(last_heartbeat=utcnow()))


def set_robot_status(s: Session, robot_id: int, status: RobotStatus,
                     capabilities: dict[str, Any], error: str | None = None) -> None:
    """An arm's status and last known capabilities; a change of status is audited."""
    row = s.get(Robot, robot_id)
    assert row is not None
    if row.status != status:
        log_event(s, EventKind.robot(status), robot_id=robot_id, detail=error)
    row.status = status
    row.capabilities = capabilities
    row.last_heartbeat = utcnow()


def robot_capabilities(s: Session, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """name -> the capabilities JSON last recorded for each arm (all arms, or those named)."""
    stmt = select(Robot.name, Robot.capabilities)
    if names is not None:
        stmt = stmt.where(Robot.name.in_(list(names)))
    return {n: dict(c or {}) for n, c in s.execute(stmt)}


def policy_weights_checksum(s: Session, policy_id: int) -> str | None:
    p = s.get(Policy, policy_id)
    return p.weights_checksum if p is not None else None


def policy_configs(s: Session, policy_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """policy id -> its registry config {name, kind, path, options} (no model is loaded)."""
    out = {}
    for p in s.scalars(select(Policy).where(Policy.id.in_(list(policy_ids)))):
        cfg = dict(p.config or {})
        out[p.id] = {"name": p.name, "kind": cfg.get("kind", p.kind), "path": cfg.get("path"),
                     "options": cfg.get("options") or {}}
    return out


def mark_campaign_running(s: Session, campaign_id: int) -> None:
    camp = s.get(Campaign, campaign_id)
    if camp is not None and camp.status == CampaignStatus.PENDING:
        camp.status = CampaignStatus.RUNNING


def estop_requests_after(s: Session, event_id: int) -> list[tuple[int, dict[str, Any]]]:
    rows = s.execute(
        select(Event.id, Event.payload)
        .where(Event.kind == EventKind.ESTOP_REQUESTED, Event.id > event_id)
        .order_by(Event.id)
    ).all()
    return [(int(i), dict(p or {})) for i, p in rows]


def ask_operator(s: Session, *, robot_id: int, robot: str, episode_id: int, campaign_id: int,
                 trial_id: int, instructions: str) -> int:
    """An operator_setup_required event (the dashboard and the CLI show it); its id."""
    ev = Event(kind=EventKind.OPERATOR_SETUP_REQUIRED, robot_id=robot_id, episode_id=episode_id,
               campaign_id=campaign_id,
               payload={"robot": robot, "instructions": instructions, "trial_id": trial_id})
    s.add(ev)
    s.flush()
    return ev.id


def operator_confirmed(s: Session, robot_id: int, after_event_id: int) -> bool:
    return s.scalar(select(Event.id).where(
        Event.kind == EventKind.OPERATOR_CONFIRMED, Event.robot_id == robot_id,
        Event.id > after_event_id).limit(1)) is not None


def has_open_trials(s: Session, campaign_ids: Sequence[int] | None) -> bool:
    """Any pending or leased trial of a campaign that is still to run (pending, running,
    paused)."""
    stmt = select(Trial.id).join(Campaign, Campaign.id == Trial.campaign_id).where(
        Trial.status.in_((TrialStatus.PENDING, TrialStatus.LEASED)),
        Campaign.status.in_((CampaignStatus.PENDING, CampaignStatus.RUNNING,
                             CampaignStatus.PAUSED)),
    )
    if campaign_ids is not None:
        stmt = stmt.where(Trial.campaign_id.in_(list(campaign_ids)))
    return s.scalar(stmt.limit(1)) is not None


def aborted_media(s: Session) -> list[tuple[int, str, list[str]]]:
    """(episode id, campaign name, media uris it keeps) of every aborted episode: the sweep
    removes an aborted episode's files except those its row lists."""
    rows = s.execute(
        select(Episode.id, Campaign.name, Episode.media)
        .join(Trial, Trial.id == Episode.trial_id)
        .join(Campaign, Campaign.id == Trial.campaign_id)
        .where(Episode.status == EpisodeStatus.ABORTED)
    ).all()
    return [(int(e), str(c), [str(m.get("uri")) for m in (media or [])]) for e, c, media in rows]
