"""The dashboard's queries: the blind label queue, episodes, agreement input, fleet, operator
prompts and e-stop requests. Each function runs in the caller's session (read or write).

Blind by construction: everything the Label page uses (QueueItem, BlindEpisode, Disagreement)
carries the policy's blind code only, never its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, or_, select
from sqlalchemy.orm import Session

from orchestrator.store.audit import audit_condition
from orchestrator.store.models import (
    Campaign,
    CampaignPolicy,
    Episode,
    Event,
    Label,
    Policy,
    Robot,
    Step,
    Task,
    Trial,
)
from orchestrator.store.states import EpisodeStatus, EventKind

SETUP_REQUIRED, SETUP_CONFIRMED, ESTOP_REQUESTED = (
    EventKind.OPERATOR_SETUP_REQUIRED, EventKind.OPERATOR_CONFIRMED, EventKind.ESTOP_REQUESTED)
SAFETY_KIND_PATTERNS = ("%estop%", "%e_stop%", "%watchdog%", "%rearm%", "robot_%",
                        EventKind.EPISODE_ABORTED)
ACTION_COLUMNS = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
LATENCY_COLUMNS = ("obs_age_ms", "inference_ms", "orchestration_ms", "command_ms")


class BrowseError(LookupError):
    """Something the dashboard asked for is not there; the message says what to do."""


@dataclass(frozen=True)
class MediaRef:
    camera: str
    uri: str  # relative to Settings.media_dir
    sha256: str
    bytes: int
    frames: int
    fps: float


@dataclass(frozen=True)
class QueueItem:
    episode_id: int
    campaign_id: int
    blind_code: str
    task_key: str
    instruction: str
    category: str
    difficulty: str | None
    robot: str | None
    ended_at: datetime | None
    human_labels: int = 0


@dataclass(frozen=True)
class MyLabel:
    success: bool
    progress: float | None
    failure_mode: str | None
    notes: str | None
    version: int


@dataclass(frozen=True)
class BlindEpisode:
    item: QueueItem
    media: tuple[MediaRef, ...]
    mine: MyLabel | None


@dataclass(frozen=True)
class StepTable:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Vote:
    episode_id: int
    evaluator: str
    success: bool


@dataclass(frozen=True)
class Disagreement:
    item: QueueItem
    votes: tuple[tuple[str, bool], ...]  # (evaluator, success)

    @property
    def status(self) -> str:
        yes = sum(1 for _, ok in self.votes if ok)
        no = len(self.votes) - yes
        return "disputed (tie)" if yes == no else f"majority {'success' if yes > no else 'failure'}"


def _media(raw: Sequence[Any] | None) -> tuple[MediaRef, ...]:
    out = []
    for m in raw or ():
        out.append(MediaRef(str(m.get("camera", "?")), str(m["uri"]), str(m.get("sha256", "")),
                            int(m.get("bytes", 0)), int(m.get("frames", 0)),
                            float(m.get("fps", 0.0) or 0.0)))
    return tuple(out)


def _item_select() -> Select:
    return (
        select(Episode.id, Trial.campaign_id, CampaignPolicy.blind_code, Task.key,
               Task.instruction, Task.category, Task.difficulty, Robot.name, Episode.ended_at)
        .join(Trial, Trial.id == Episode.trial_id)
        .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
        .join(Task, Task.id == Trial.task_id)
        .outerjoin(Robot, Robot.id == Episode.robot_id)
    )


def _human_counts(s: Session, ids: Sequence[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = s.execute(select(Label.episode_id, func.count()).where(
        Label.episode_id.in_(list(ids)), Label.source == "human").group_by(Label.episode_id))
    return {int(e): int(n) for e, n in rows}


def _items(s: Session, stmt: Select) -> list[QueueItem]:
    rows = s.execute(stmt).all()
    counts = _human_counts(s, [r[0] for r in rows])
    return [QueueItem(eid, cid, code, key, instruction, category, difficulty, robot, ended,
                      human_labels=counts.get(eid, 0))
            for eid, cid, code, key, instruction, category, difficulty, robot, ended in rows]


def label_queue(
    s: Session, *, evaluator: str, campaign_ids: Sequence[int] | None = None, limit: int = 50,
    max_human_labels: int | None = None,
) -> tuple[list[QueueItem], int]:
    """Counted, recorded episodes this evaluator has not labeled yet, oldest first; and how
    many there are in all. max_human_labels: leave out episodes with that many human labels.
    A campaign with an audit rate serves only its audit sample (orchestrator.store.audit)."""
    mine = select(Label.id).where(Label.episode_id == Episode.id, Label.source == "human",
                                  Label.evaluator == evaluator).exists()
    conds = [Episode.status == EpisodeStatus.RECORDED, Episode.counted, ~mine]
    if campaign_ids:
        conds.append(Trial.campaign_id.in_(list(campaign_ids)))
    audit = audit_condition(s, campaign_ids)  # audited campaigns: only their drawn trials
    if audit is not None:
        conds.append(audit)
    if max_human_labels is not None:
        n_human = (select(func.count()).select_from(Label)
                   .where(Label.episode_id == Episode.id, Label.source == "human")
                   .scalar_subquery())
        conds.append(n_human < max_human_labels)
    items = _items(s, _item_select().where(*conds).order_by(Episode.id).limit(limit))
    total = s.scalar(select(func.count()).select_from(Episode)
                     .join(Trial, Trial.id == Episode.trial_id).where(*conds))
    return items, int(total or 0)


def blind_episode(s: Session, episode_id: int, *, evaluator: str) -> BlindEpisode:
    """One episode as an evaluator may see it: blind code, task, videos, their own label."""
    items = _items(s, _item_select().where(Episode.id == episode_id))
    if not items:
        raise BrowseError(f"episode {episode_id} does not exist: pick one from the queue")
    media = s.scalar(select(Episode.media).where(Episode.id == episode_id))
    lab = s.scalar(select(Label).where(Label.episode_id == episode_id, Label.source == "human",
                                       Label.evaluator == evaluator))
    mine = (MyLabel(lab.success, lab.progress, lab.failure_mode, lab.notes, lab.version)
            if lab is not None else None)
    return BlindEpisode(items[0], _media(media), mine)


def step_table(s: Session, episode_id: int, columns: Sequence[str] | None = None) -> StepTable:
    """An episode's steps in order: the given columns (default: all but episode_id)."""
    names = tuple(columns or (c.name for c in Step.__table__.columns if c.name != "episode_id"))
    cols = [Step.__table__.c[n] for n in names]
    rows = s.execute(select(*cols).where(Step.episode_id == episode_id).order_by(Step.idx))
    return StepTable(names, tuple(tuple(r) for r in rows))


def _label_scope(campaign_ids: Sequence[int] | None) -> list[Any]:
    conds: list[Any] = [Label.source == "human", Episode.counted, Episode.status == EpisodeStatus.RECORDED]
    if campaign_ids:
        conds.append(Trial.campaign_id.in_(list(campaign_ids)))
    return conds


def human_votes(s: Session, campaign_ids: Sequence[int] | None = None) -> list[Vote]:
    """Every human label on counted episodes (one per evaluator and episode): kappa's input."""
    rows = s.execute(
        select(Label.episode_id, Label.evaluator, Label.success)
        .join(Episode, Episode.id == Label.episode_id).join(Trial, Trial.id == Episode.trial_id)
        .where(*_label_scope(campaign_ids)).order_by(Label.episode_id, Label.evaluator))
    return [Vote(int(e), str(who), bool(ok)) for e, who, ok in rows]


def disagreements(s: Session, campaign_ids: Sequence[int] | None = None,
                  limit: int = 200) -> list[Disagreement]:
    """Episodes whose human labels disagree (ties first: they are not counted until adjudicated)."""
    yes = func.sum(case((Label.success, 1), else_=0))
    no = func.sum(case((Label.success, 0), else_=1))
    rows = s.execute(
        select(Label.episode_id, yes, no)
        .join(Episode, Episode.id == Label.episode_id).join(Trial, Trial.id == Episode.trial_id)
        .where(*_label_scope(campaign_ids)).group_by(Label.episode_id)
        .having(yes > 0, no > 0).limit(limit)).all()
    if not rows:
        return []
    ids = [int(r[0]) for r in rows]
    items = {i.episode_id: i for i in _items(s, _item_select().where(Episode.id.in_(ids)))}
    votes: dict[int, list[tuple[str, bool]]] = {}
    for e, who, ok in s.execute(select(Label.episode_id, Label.evaluator, Label.success).where(
            Label.episode_id.in_(ids), Label.source == "human").order_by(Label.evaluator)):
        votes.setdefault(int(e), []).append((str(who), bool(ok)))
    out = [Disagreement(items[i], tuple(votes[i])) for i in ids]
    return sorted(out, key=lambda d: (not d.status.startswith("disputed"), d.item.episode_id))


# --- episodes (not blind) -------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeDetail:
    episode_id: int
    trial_id: int
    attempt: int
    status: str
    counted: bool
    abort_reason: str | None
    campaign_id: int
    campaign: str
    policy: str
    policy_version: str
    blind_code: str
    policy_checksum: str | None
    task_key: str
    instruction: str
    category: str
    difficulty: str | None
    scene_seed: int
    robot: str | None
    station: str | None
    started_at: datetime | None
    ended_at: datetime | None
    step_count: int
    late_steps: int
    terminated_by: str | None
    media: tuple[MediaRef, ...]


@dataclass(frozen=True)
class LabelRow:
    source: str
    evaluator: str
    success: bool
    progress: float | None
    failure_mode: str | None
    notes: str | None
    version: int
    updated_at: datetime | None


@dataclass(frozen=True)
class EventRow:
    id: int
    at: datetime
    kind: str
    actor: str
    campaign_id: int | None
    robot_id: int | None
    episode_id: int | None
    payload: dict[str, Any]


def episode_detail(s: Session, episode_id: int) -> EpisodeDetail:
    row = s.execute(
        select(Episode, Trial, Campaign.name, Policy.name, Policy.version, CampaignPolicy.blind_code,
               Task, Robot.name, Robot.station)
        .join(Trial, Trial.id == Episode.trial_id).join(Campaign, Campaign.id == Trial.campaign_id)
        .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
        .join(Policy, Policy.id == CampaignPolicy.policy_id).join(Task, Task.id == Trial.task_id)
        .outerjoin(Robot, Robot.id == Episode.robot_id).where(Episode.id == episode_id)).first()
    if row is None:
        raise BrowseError(f"episode {episode_id} does not exist: check the id")
    ep, trial, cname, pname, pversion, code, task, robot, station = row
    return EpisodeDetail(
        ep.id, trial.id, ep.attempt, ep.status, bool(ep.counted), ep.abort_reason, trial.campaign_id,
        cname, pname, pversion, code, ep.policy_checksum, task.key, task.instruction, task.category,
        task.difficulty, trial.scene_seed, robot, station, ep.started_at, ep.ended_at,
        ep.step_count, ep.late_steps, ep.terminated_by, _media(ep.media))


def episode_labels(s: Session, episode_id: int) -> list[LabelRow]:
    rows = s.scalars(select(Label).where(Label.episode_id == episode_id)
                     .order_by(Label.source, Label.evaluator))
    return [LabelRow(r.source, r.evaluator, r.success, r.progress, r.failure_mode, r.notes,
                     r.version, r.updated_at) for r in rows]


def events(s: Session, *, episode_id: int | None = None, campaign_id: int | None = None,
           kinds: Sequence[str] | None = None, safety: bool = False,
           limit: int = 100) -> list[EventRow]:
    """Audit events, newest first, filtered by episode, campaign, kinds or safety relevance."""
    stmt = select(Event)
    if episode_id is not None:
        stmt = stmt.where(Event.episode_id == episode_id)
    if campaign_id is not None:
        stmt = stmt.where(Event.campaign_id == campaign_id)
    if kinds:
        stmt = stmt.where(Event.kind.in_(list(kinds)))
    if safety:
        stmt = stmt.where(or_(*(Event.kind.like(p) for p in SAFETY_KIND_PATTERNS)))
    return [EventRow(e.id, e.at, e.kind, e.actor, e.campaign_id, e.robot_id, e.episode_id,
                     dict(e.payload or {}))
            for e in s.scalars(stmt.order_by(Event.id.desc()).limit(limit))]


def recent_episodes(s: Session, limit: int = 50) -> list[tuple[int, str, str, str]]:
    """(episode id, campaign, task, status) of the newest episodes."""
    rows = s.execute(
        select(Episode.id, Campaign.name, Task.key, Episode.status)
        .join(Trial, Trial.id == Episode.trial_id).join(Campaign, Campaign.id == Trial.campaign_id)
        .join(Task, Task.id == Trial.task_id).order_by(Episode.id.desc()).limit(limit))
    return [tuple(r) for r in rows]  # type: ignore[misc]


# --- results extras --------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterOptions:
    robots: tuple[str, ...]
    stations: tuple[str, ...]
    evaluators: tuple[str, ...]
    first: datetime | None
    last: datetime | None


def _episode_scope(stmt: Select, campaign_ids: Sequence[int], robots: Sequence[str] | None,
                   stations: Sequence[str] | None, since: datetime | None,
                   until: datetime | None) -> Select:
    """The report's episode filters (counted episodes of the campaigns; queries._outcome_filters)."""
    stmt = stmt.where(Episode.counted, Trial.campaign_id.in_(list(campaign_ids)))
    if robots:
        stmt = stmt.where(Robot.name.in_(list(robots)))
    if stations:
        stmt = stmt.where(Robot.station.in_(list(stations)))
    if since is not None:
        stmt = stmt.where(Episode.ended_at >= since)
    if until is not None:
        stmt = stmt.where(Episode.ended_at < until)
    return stmt


def filter_options(s: Session, campaign_ids: Sequence[int]) -> FilterOptions:
    ids = list(campaign_ids)
    robots = s.execute(
        select(Robot.name, Robot.station).where(Robot.id.in_(
            select(Episode.robot_id).join(Trial, Trial.id == Episode.trial_id)
            .where(Trial.campaign_id.in_(ids)).distinct()))).all()
    evaluators = s.scalars(select(Label.evaluator).where(Label.source == "human").distinct())
    first, last = s.execute(
        select(func.min(Episode.ended_at), func.max(Episode.ended_at))
        .join(Trial, Trial.id == Episode.trial_id)
        .where(Trial.campaign_id.in_(ids), Episode.counted)).one()
    return FilterOptions(tuple(sorted({r[0] for r in robots})), tuple(sorted({r[1] for r in robots})),
                         tuple(sorted(evaluators)), first, last)


@dataclass(frozen=True)
class HumanSimCount:
    policy: str
    blind_code: str
    human_success: bool  # the human majority (ties left out)
    sim_success: bool
    n: int


def human_vs_sim(
    s: Session, campaign_ids: Sequence[int], *, robots: Sequence[str] | None = None,
    stations: Sequence[str] | None = None, since: datetime | None = None,
    until: datetime | None = None,
) -> list[HumanSimCount]:
    """Episodes with both a resolved human outcome and a sim label, counted per policy."""
    hy = func.sum(case(((Label.source == "human") & Label.success, 1), else_=0))
    hn = func.sum(case(((Label.source == "human") & ~Label.success, 1), else_=0))
    sim = func.max(case(((Label.source == "sim") & Label.success, 1),
                        (Label.source == "sim", 0), else_=None))
    inner = (select(Episode.id.label("e"), Policy.name.label("p"), CampaignPolicy.blind_code.label("c"),
                    hy.label("hy"), hn.label("hn"), sim.label("sim"))
             .select_from(Episode).join(Trial, Trial.id == Episode.trial_id)
             .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
             .join(Policy, Policy.id == CampaignPolicy.policy_id)
             .outerjoin(Robot, Robot.id == Episode.robot_id)
             .join(Label, Label.episode_id == Episode.id)
             .group_by(Episode.id, Policy.name, CampaignPolicy.blind_code))
    sub = _episode_scope(inner, campaign_ids, robots, stations, since, until).subquery()
    human = case((sub.c.hy > sub.c.hn, 1), else_=0)
    rows = s.execute(select(sub.c.p, sub.c.c, human, sub.c.sim, func.count())
                     .where(sub.c.hy != sub.c.hn, sub.c.sim.is_not(None))
                     .group_by(sub.c.p, sub.c.c, human, sub.c.sim))
    return [HumanSimCount(p, c, bool(h), bool(sm), int(n)) for p, c, h, sm, n in rows]


def registered_policies(s: Session) -> list[tuple[str, str, str]]:
    """(name, version, kind) of every registered policy, newest version first per name."""
    rows = s.execute(select(Policy.name, Policy.version, Policy.kind)
                     .order_by(Policy.name, Policy.created_at.desc(), Policy.id.desc()))
    return [tuple(r) for r in rows]  # type: ignore[misc]


# --- fleet, operator prompts, e-stop --------------------------------------------------------


@dataclass(frozen=True)
class RobotRow:
    id: int
    name: str
    endpoint: str
    station: str
    status: str
    last_heartbeat: datetime | None
    capabilities: dict[str, Any]
    current_episode: int | None


def fleet(s: Session) -> list[RobotRow]:
    running = dict(s.execute(select(Episode.robot_id, func.max(Episode.id))
                             .where(Episode.status == EpisodeStatus.RUNNING).group_by(Episode.robot_id)).all())
    return [RobotRow(r.id, r.name, r.endpoint, r.station, r.status, r.last_heartbeat,
                     dict(r.capabilities or {}), running.get(r.id))
            for r in s.scalars(select(Robot).order_by(Robot.station, Robot.name))]


@dataclass(frozen=True)
class OperatorPrompt:
    event_id: int
    at: datetime
    robot: str
    robot_id: int | None
    instructions: str
    campaign_id: int | None
    episode_id: int | None
    payload: dict[str, Any]


def _same_robot(a: Event, robot_id: int | None, robot: str) -> bool:
    if robot_id is not None and a.robot_id is not None:
        return a.robot_id == robot_id
    return str((a.payload or {}).get("robot", "")) == robot


def pending_operator_prompts(s: Session, limit: int = 200) -> list[OperatorPrompt]:
    """The newest scene-setup prompt per robot that no later operator_confirmed answers."""
    prompts = list(s.scalars(select(Event).where(Event.kind == SETUP_REQUIRED)
                             .order_by(Event.id.desc()).limit(limit)))
    if not prompts:
        return []
    confirms = list(s.scalars(select(Event).where(Event.kind == SETUP_CONFIRMED,
                                                  Event.id > min(p.id for p in prompts))))
    out: list[OperatorPrompt] = []
    seen: set[str] = set()
    for p in prompts:  # newest first
        pay = dict(p.payload or {})
        robot = str(pay.get("robot") or f"robot #{p.robot_id}")
        if robot in seen:
            continue
        seen.add(robot)
        if any(c.id > p.id and _same_robot(c, p.robot_id, robot) for c in confirms):
            continue
        out.append(OperatorPrompt(p.id, p.at, robot, p.robot_id, str(pay.get("instructions") or ""),
                                  p.campaign_id, p.episode_id, pay))
    return out


def confirm_operator_setup(s: Session, prompt_event_id: int, *, actor: str) -> int:
    """Answer a scene-setup prompt: write operator_confirmed for its robot (the orchestrator
    waits for it). Refuses a prompt that is unknown or already answered."""
    prompt = s.get(Event, prompt_event_id)
    if prompt is None or prompt.kind != SETUP_REQUIRED:
        raise BrowseError(f"no scene-setup prompt #{prompt_event_id}: reload the page")
    pay = dict(prompt.payload or {})
    robot = str(pay.get("robot") or "")
    later = s.scalars(select(Event).where(Event.kind == SETUP_CONFIRMED, Event.id > prompt.id))
    for c in later:
        if _same_robot(c, prompt.robot_id, robot):
            raise BrowseError(f"the scene on {robot or 'this robot'} was already confirmed by "
                              f"{c.actor} at {c.at:%H:%M:%S}: nothing to do")
    extra = {k: pay[k] for k in ("trial_id", "trial", "episode", "episode_id") if k in pay}
    ev = Event(kind=SETUP_CONFIRMED, actor=actor, robot_id=prompt.robot_id,
               episode_id=prompt.episode_id, campaign_id=prompt.campaign_id,
               payload={"robot": robot, "prompt_event_id": prompt.id, **extra})
    s.add(ev)
    s.flush()
    return ev.id


def request_estop(s: Session, target: str, *, actor: str, reason: str = "") -> int:
    """Record an e-stop request for one robot (by name) or "all"; returns the event id."""
    robot_id = None
    if target != "all":
        robot_id = s.scalar(select(Robot.id).where(Robot.name == target))
        if robot_id is None:
            raise BrowseError(f"no robot named {target!r}: the Fleet page lists the robots")
    ev = Event(kind=ESTOP_REQUESTED, actor=actor, robot_id=robot_id,
               payload={"robot": target, "reason": reason or "dashboard e-stop"})
    s.add(ev)
    s.flush()
    return ev.id

