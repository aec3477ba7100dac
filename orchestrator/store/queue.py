"""The durable trial queue and the episode lifecycle.

Leases expire: a trial leased by an orchestrator that died returns to the queue once its lease
runs out. A trial counts once: completing an episode marks it counted only while the caller
still holds the trial's lease, and a partial unique index makes a second counted episode
impossible even if that check were bypassed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from orchestrator.faults import TRIAL_CAUSES, AbortCause, counts_against_trial, should_give_up
from orchestrator.scheduler import TrialCandidate  # pure; queue builds them
from orchestrator.step_record import StepRecord
from orchestrator.store.campaigns import log_event
from orchestrator.store.models import (
    Campaign,
    CampaignPolicy,
    Episode,
    Label,
    Policy,
    Step,
    Task,
    Trial,
    utcnow,
)
from orchestrator.store.states import (
    CampaignStatus,
    EpisodeStatus,
    EventKind,
    LabelSource,
    TrialStatus,
)

ACTIVE_CAMPAIGN = (CampaignStatus.PENDING, CampaignStatus.RUNNING)


@dataclass(frozen=True)
class LeasedTrial:
    trial_id: int
    campaign_id: int
    campaign_name: str
    task_key: str
    instruction: str
    skill: str
    category: str
    difficulty: str | None
    scene: dict[str, Any]
    scene_seed: int
    max_steps: int
    control_hz: float
    policy_name: str
    policy_id: int
    policy_kind: str
    policy_config: dict[str, Any]
    blind_code: str
    attempts: int


def scene_key(scene: dict[str, Any]) -> str:
    setup = {
        k: scene.get(k)
        for k in ("objects", "distractors", "background", "environment", "target", "destination")
    }
    return hashlib.sha1(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:12]


def reclaim_expired_leases(s: Session, now: datetime | None = None) -> int:
    """Return trials whose lease ran out to the queue; abort their still-running episodes."""
    now = now or utcnow()
    expired = list(
        s.scalars(
            select(Trial.id).where(Trial.status == TrialStatus.LEASED, Trial.lease_expires_at < now)
        )
    )
    if not expired:
        return 0
    s.execute(
        update(Episode)
        .where(Episode.trial_id.in_(expired), Episode.status == EpisodeStatus.RUNNING)
        .values(
            status=EpisodeStatus.ABORTED,
            ended_at=now,
            abort_reason="lease expired: the orchestrator holding it stopped or lost contact",
            abort_cause=AbortCause.LEASE_EXPIRED.value,
        )
    )
    s.execute(
        update(Trial)
        .where(Trial.id.in_(expired), Trial.status == TrialStatus.LEASED)
        .values(status=TrialStatus.PENDING, lease_holder=None, lease_expires_at=None)
    )
    for tid in expired:
        log_event(s, EventKind.LEASE_EXPIRED, trial_id=tid)
    return len(expired)


def pending_candidates(
    s: Session, *, limit: int = 500, campaign_ids: Sequence[int] | None = None
) -> list[TrialCandidate]:
    """Pending trials of active campaigns, by priority, then campaign age, then plan order."""
    stmt = (
        select(
            Trial.id,
            Trial.campaign_id,
            Campaign.priority,
            Campaign.created_at,
            Trial.plan_order,
            Task.key,
            Task.station_needs,
            Task.scene,
            Policy.name,
            Policy.id,
        )
        .join(Campaign, Campaign.id == Trial.campaign_id)
        .join(Task, Task.id == Trial.task_id)
        .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
        .join(Policy, Policy.id == CampaignPolicy.policy_id)
        .where(Trial.status == TrialStatus.PENDING, Campaign.status.in_(ACTIVE_CAMPAIGN))
        .order_by(Campaign.priority.desc(), Campaign.created_at, Campaign.id, Trial.plan_order)
        .limit(limit)
    )
    if campaign_ids is not None:
        stmt = stmt.where(Trial.campaign_id.in_(list(campaign_ids)))
    if s.bind is not None and s.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=Trial, skip_locked=True)
    return [
        TrialCandidate(
            trial_id=r[0],
            campaign_id=r[1],
            campaign_priority=r[2],
            campaign_created_ns=int(r[3].timestamp() * 1e9),
            plan_order=r[4],
            task_key=r[5],
            station_needs=tuple(r[6] or ()),
            scene_key=scene_key(r[7] or {}),
            policy_name=r[8],
            policy_id=r[9],
        )
        for r in s.execute(stmt)
    ]


def lease_trials(
    s: Session, trial_ids: Iterable[int], *, holder: str, lease_s: float, now: datetime | None = None
) -> list[LeasedTrial]:
    """Lease the given pending trials to holder; trials taken meanwhile are skipped."""
    now = now or utcnow()
    leased: list[LeasedTrial] = []
    for tid in trial_ids:
        res = s.execute(
            update(Trial)
            .where(Trial.id == tid, Trial.status == TrialStatus.PENDING)
            .values(
                status=TrialStatus.LEASED,
                lease_holder=holder,
                lease_expires_at=now + timedelta(seconds=lease_s),
            )
        )
        if _rowcount(res) == 1:
            leased.append(_leased_trial(s, tid))
    return leased


def _leased_trial(s: Session, trial_id: int) -> LeasedTrial:
    row = s.execute(
        select(Trial, Task, Campaign, CampaignPolicy, Policy)
        .join(Task, Task.id == Trial.task_id)
        .join(Campaign, Campaign.id == Trial.campaign_id)
        .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
        .join(Policy, Policy.id == CampaignPolicy.policy_id)
        .where(Trial.id == trial_id)
    ).one()
    trial, task, campaign, cp, policy = row
    return LeasedTrial(
        trial_id=trial.id,
        campaign_id=campaign.id,
        campaign_name=campaign.name,
        task_key=task.key,
        instruction=task.instruction,
        skill=task.skill,
        category=task.category,
        difficulty=task.difficulty,
        scene=dict(task.scene),
        scene_seed=trial.scene_seed,
        max_steps=task.max_steps,
        control_hz=task.control_hz,
        policy_name=policy.name,
        policy_id=policy.id,
        policy_kind=policy.kind,
        policy_config=dict(policy.config or {}),
        blind_code=cp.blind_code,
        attempts=trial.attempts,
    )


def _rowcount(res: Any) -> int:
    """Rows an UPDATE matched (its result is a CursorResult)."""
    return int(cast("CursorResult[Any]", res).rowcount or 0)


def renew_lease(
    s: Session, trial_id: int, *, holder: str, lease_s: float, now: datetime | None = None
) -> bool:
    now = now or utcnow()
    res = s.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.status == TrialStatus.LEASED, Trial.lease_holder == holder)
        .values(lease_expires_at=now + timedelta(seconds=lease_s))
    )
    return _rowcount(res) == 1


def start_episode(
    s: Session,
    trial_id: int,
    *,
    holder: str,
    robot_id: int | None,
    policy_checksum: str | None = None,
) -> int:
    trial = s.get(Trial, trial_id)
    if trial is None or trial.status != TrialStatus.LEASED or trial.lease_holder != holder:
        raise LeaseLostError(f"trial {trial_id} is no longer leased to {holder}")
    trial.attempts += 1
    ep = Episode(
        trial_id=trial_id,
        robot_id=robot_id,
        attempt=trial.attempts,
        status=EpisodeStatus.RUNNING,
        policy_checksum=policy_checksum,
    )
    s.add(ep)
    s.flush()
    log_event(s, EventKind.EPISODE_STARTED, robot_id=robot_id, episode_id=ep.id, trial_id=trial_id)
    return ep.id


class LeaseLostError(RuntimeError):
    pass


STEP_COLUMNS: tuple[str, ...] = tuple(c.name for c in Step.__table__.columns)
_JSON_COLUMNS = {"proprio", "action"}
# add_step_rows only (fixtures, sample data, benchmarks: RT-2 ee_delta rows); the episode loop's
# StepRecords set every column (add_steps)
_STEP_DEFAULTS: dict[str, Any] = {
    "terminate": False, "tokens": None, "proprio": [], "obs_seq": 0, "obs_monotonic_ns": 0,
    "obs_wall_ns": 0, "command_wall_ns": 0, "obs_age_ms": 0.0, "inference_ms": 0.0,
    "orchestration_ms": 0.0, "command_ms": 0.0, "late": False, "clipped": False, "plan": None,
    "action_space": "ee_delta[7]", "chunk_index": 0, "chunk_age_ms": 0.0,
}
_EE = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


def _step_tuples(rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    out = []
    for r in rows:
        vals = []
        for col in STEP_COLUMNS:
            if col in r:
                v = r[col]
            elif col == "action":  # an RT-2 row: its vector is dx .. gripper
                v = [r.get(c) for c in _EE]
            elif col == "chunk_id":  # one query per step: every step its own chunk
                v = r["idx"]
            else:
                v = _STEP_DEFAULTS.get(col)
            if col in _JSON_COLUMNS:
                v = json.dumps(v)
            vals.append(v)
        out.append(tuple(vals))
    return out


def add_steps(s: Session, episode_id: int, steps: Sequence[StepRecord]) -> int:
    """Store an episode's StepRecords (every column set by the episode loop)."""
    return add_step_rows(s, [{**st.column_values(), "episode_id": episode_id} for st in steps])


def add_step_rows(s: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Batched step insert of column dicts (RT-2 ee_delta rows may leave out the columns of
    migration 0008): COPY on PostgreSQL, one DBAPI executemany on SQLite.

    Both bypass per-row ORM work (measured in benchmarks/store.py against the ORM path).
    """
    if not rows:
        return 0
    tuples = _step_tuples(rows)
    conn = s.connection()
    dialect = conn.dialect.name
    cols = ", ".join(STEP_COLUMNS)
    raw: Any = conn.connection.dbapi_connection  # sqlite3 or psycopg, used directly
    dbapi = conn.dialect.loaded_dbapi
    sql = ""
    try:
        if dialect == "postgresql":
            sql = f"COPY steps ({cols}) FROM STDIN"
            with raw.cursor() as cur, cur.copy(sql) as copy:
                for t in tuples:
                    copy.write_row(t)
        elif dialect == "sqlite":
            marks = ", ".join("?" for _ in STEP_COLUMNS)
            sql = f"INSERT INTO steps ({cols}) VALUES ({marks})"
            cur = raw.cursor()
            try:
                cur.executemany(sql, tuples)
            finally:
                cur.close()
        else:  # any other SQLAlchemy dialect: portable executemany
            s.execute(insert(Step), list(rows))
    except dbapi.Error as e:
        # The raw DBAPI path bypasses SQLAlchemy's error handling: wrap the driver's error
        # as SQLAlchemy would (OperationalError for a lost connection, IntegrityError, ...)
        # and invalidate a dead connection, so callers (Store.retrying) treat it alike.
        lost = conn.dialect.is_disconnect(e, raw, None)
        if lost:
            conn.invalidate(e)
        raise sa_exc.DBAPIError.instance(sql, None, e, dbapi.Error, connection_invalidated=lost,
                                         dialect=conn.dialect) from e
    return len(rows)


def complete_episode(
    s: Session,
    episode_id: int,
    *,
    holder: str,
    step_count: int,
    late_steps: int,
    terminated_by: str,
    media: list[dict[str, Any]],
    sim_success: bool | None,
    policy_checksum: str | None = None,
    worker_instance: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Mark an episode recorded (its media is durable) and count it if the lease is still ours.

    Returns whether the episode was counted for its trial.
    """
    now = now or utcnow()
    ep = s.get(Episode, episode_id)
    if ep is None:
        raise LookupError(f"episode {episode_id} does not exist")
    trial = s.get(Trial, ep.trial_id)
    assert trial is not None
    ours = trial.status == TrialStatus.LEASED and trial.lease_holder == holder
    ep.status = EpisodeStatus.RECORDED
    ep.ended_at = now
    ep.step_count = step_count
    ep.late_steps = late_steps
    ep.terminated_by = terminated_by
    ep.media = media
    if policy_checksum is not None:  # the weights that ran (the worker's metadata)
        ep.policy_checksum = policy_checksum
    if worker_instance is not None:  # the policy worker instance that answered
        ep.worker_instance = worker_instance
    ep.counted = ours
    if ours:
        trial.status = TrialStatus.DONE
        trial.lease_holder = None
        trial.lease_expires_at = None
    else:
        log_event(s, EventKind.EPISODE_NOT_COUNTED, episode_id=episode_id, reason="lease lost")
    if sim_success is not None:
        s.add(
            Label(
                episode_id=episode_id,
                source=LabelSource.SIM,
                evaluator="sim",
                success=sim_success,
                progress=1.0 if sim_success else None,
            )
        )
    s.flush()
    return ours


MAX_ATTEMPTS = 5  # aborts attributable to a trial (orchestrator.faults) before it is given up


def abort_episode(
    s: Session,
    episode_id: int,
    *,
    holder: str,
    reason: str,
    cause: AbortCause = AbortCause.UNKNOWN,
    requeue: bool = True,
    max_attempts: int = MAX_ATTEMPTS,
    step_count: int = 0,
    late_steps: int = 0,
    media: list[dict[str, Any]] | None = None,
    worker_instance: str | None = None,
    policy_checksum: str | None = None,
    now: datetime | None = None,
) -> None:
    """Close an episode as aborted (kept for the audit, with its cause, and with the steps and
    media it has up to the abort: the caller adds its steps) and put its trial back in the
    queue. Only aborts the trial caused (faults.counts_against_trial) count towards giving it
    up; an infrastructure fault re-queues it as it was. An aborted episode is never counted."""
    now = now or utcnow()
    ep = s.get(Episode, episode_id)
    if ep is None:
        raise LookupError(f"episode {episode_id} does not exist")
    if ep.status == EpisodeStatus.RUNNING:
        ep.status = EpisodeStatus.ABORTED
        ep.abort_reason = reason
        ep.abort_cause = cause.value
        ep.ended_at = now
        ep.step_count = step_count
        ep.late_steps = late_steps
        ep.media = list(media or [])
        ep.worker_instance = worker_instance
        if policy_checksum is not None:  # the policy that ran up to the abort
            ep.policy_checksum = policy_checksum
    trial = s.get(Trial, ep.trial_id)
    if requeue and trial is not None and counts_against_trial(cause):
        s.flush()
        own = s.scalar(
            select(func.count()).select_from(Episode).where(
                Episode.trial_id == trial.id, Episode.status == EpisodeStatus.ABORTED,
                Episode.abort_cause.in_([c.value for c in TRIAL_CAUSES]),
                Episode.attempt > trial.requeued_at_attempt,  # this budget (lifecycle.requeue)
            )
        ) or 0
        if should_give_up(own, max_attempts):
            requeue = False
            if trial.status == TrialStatus.LEASED and trial.lease_holder == holder:
                trial.status, trial.lease_holder, trial.lease_expires_at = TrialStatus.GIVEN_UP, None, None
                log_event(s, EventKind.TRIAL_GAVE_UP, campaign_id=trial.campaign_id,
                          episode_id=episode_id, trial_id=trial.id,
                          attempts=trial.attempts, own_aborts=own, cause=cause.value,
                          reason=reason)
    if requeue:
        s.execute(
            update(Trial)
            .where(
                and_(Trial.id == ep.trial_id, Trial.status == TrialStatus.LEASED, Trial.lease_holder == holder)
            )
            .values(status=TrialStatus.PENDING, lease_holder=None, lease_expires_at=None)
        )
    log_event(s, EventKind.EPISODE_ABORTED, robot_id=ep.robot_id, episode_id=episode_id, reason=reason,
              cause=cause.value)


def finish_campaigns_if_done(s: Session) -> list[int]:
    """Close active campaigns with no pending or leased trial: done when every trial counted,
    incomplete when some were given up or cancelled (orchestrator.store.lifecycle)."""
    from orchestrator.store.lifecycle import settle_campaigns

    return [cid for cid, _ in settle_campaigns(s)]
