"""The results store's tables (SQLAlchemy 2.x typed ORM). Only Alembic changes the schema.

See docs/schema.md for every table, the analyst views and example queries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from orchestrator.store.states import (
    CampaignStatus,
    EpisodeStatus,
    QuestionKind,
    QuestionState,
    RobotStatus,
    TrialStatus,
    check_values,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


TS = DateTime(timezone=True)


class Robot(Base):
    __tablename__ = "robots"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    endpoint: Mapped[str] = mapped_column(String(300))
    station: Mapped[str] = mapped_column(String(100), default="default")
    capabilities: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default=RobotStatus.UNKNOWN)  # RobotStatus
    last_heartbeat: Mapped[datetime | None] = mapped_column(TS)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    # the orchestrator driving this arm (one at a time), until its lease runs out
    lease_holder: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(TS)


class Policy(Base):
    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(50), default="1")
    kind: Mapped[str] = mapped_column(String(50))
    checkpoint_uri: Mapped[str | None] = mapped_column(String(500))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    weights_checksum: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class Protocol(Base):
    __tablename__ = "protocols"
    __table_args__ = (UniqueConstraint("name", "version", "checksum"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(50))
    source_text: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("protocol_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    protocol_id: Mapped[int] = mapped_column(ForeignKey("protocols.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(100))
    instruction: Mapped[str] = mapped_column(Text)
    skill: Mapped[str] = mapped_column(String(50))
    split: Mapped[str] = mapped_column(String(20))
    category: Mapped[str] = mapped_column(String(50))
    difficulty: Mapped[str | None] = mapped_column(String(10))
    scene: Mapped[dict[str, Any]] = mapped_column(default=dict)
    station_needs: Mapped[list[Any]] = mapped_column(default=list)
    max_steps: Mapped[int] = mapped_column(Integer)
    control_hz: Mapped[float] = mapped_column(Float)
    success_criterion: Mapped[str] = mapped_column(String(50))


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(check_values(CampaignStatus), name="status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    protocol_id: Mapped[int] = mapped_column(ForeignKey("protocols.id"))
    status: Mapped[str] = mapped_column(String(20), default=CampaignStatus.PENDING)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    seed: Mapped[int] = mapped_column(BigInteger)
    trials_per_task: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow, onupdate=utcnow)
    # migration 0012: the share of auto-labelled episodes humans audit (a random sample with
    # this known inclusion probability in every policy x category stratum); NULL: no audit
    # sampling, humans label every episode as before. Fixed at creation.
    audit_rate: Mapped[float | None] = mapped_column(Float)


class CampaignPolicy(Base):
    __tablename__ = "campaign_policies"
    __table_args__ = (
        UniqueConstraint("campaign_id", "policy_id"),
        UniqueConstraint("campaign_id", "blind_code"),
        # store-wide: a code never names two policies (migration 0004; an index for SQLite)
        Index("uq_campaign_policies_blind_code", "blind_code", unique=True),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id"))
    blind_code: Mapped[str] = mapped_column(String(20))  # random per campaign (secrets)
    position: Mapped[int] = mapped_column(Integer, default=0)  # column order in reports


class Trial(Base):
    """One planned (task, policy, trial index, scene seed): the durable work queue."""

    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("campaign_id", "task_id", "campaign_policy_id", "trial_index"),
        CheckConstraint(check_values(TrialStatus), name="status"),
        Index("ix_trials_queue", "status", "campaign_id", "plan_order"),
        Index("ix_trials_lease_expires_at", "lease_expires_at"),
        Index("ix_trials_blocks", "campaign_id", "task_id", "trial_index", "campaign_policy_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    campaign_policy_id: Mapped[int] = mapped_column(ForeignKey("campaign_policies.id"))
    trial_index: Mapped[int] = mapped_column(Integer)
    scene_seed: Mapped[int] = mapped_column(BigInteger)
    plan_order: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=TrialStatus.PENDING)
    lease_holder: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(TS)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # attempts when last re-queued (0: never): only later attempts' aborts count to give it up
    requeued_at_attempt: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class Episode(Base):
    """One attempt at a trial. A trial counts once: its single episode with counted = true."""

    __tablename__ = "episodes"
    __table_args__ = (
        CheckConstraint(check_values(EpisodeStatus), name="status"),
        # A trial can never have two counted episodes (partial unique index, SQLite and PostgreSQL).
        Index(
            "uq_episodes_counted_trial",
            "trial_id",
            unique=True,
            sqlite_where=text("counted"),
            postgresql_where=text("counted"),
        ),
        Index("ix_episodes_trial_id", "trial_id"),
        Index("ix_episodes_status_ended", "status", "ended_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    robot_id: Mapped[int | None] = mapped_column(ForeignKey("robots.id"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20), default=EpisodeStatus.RUNNING)
    abort_reason: Mapped[str | None] = mapped_column(Text)
    abort_cause: Mapped[str | None] = mapped_column(String(30))  # orchestrator.faults.AbortCause
    counted: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(TS)
    step_count: Mapped[int] = mapped_column(Integer, default=0)
    late_steps: Mapped[int] = mapped_column(Integer, default=0)
    terminated_by: Mapped[str | None] = mapped_column(String(30))  # TerminationReason
    policy_checksum: Mapped[str | None] = mapped_column(String(80))
    media: Mapped[list[Any]] = mapped_column(default=list)  # [{camera, uri, sha256, bytes, frames}]
    worker_instance: Mapped[str | None] = mapped_column(String(64))  # the policy worker's (0011)


class Step(Base):
    __tablename__ = "steps"
    episode_id: Mapped[int] = mapped_column(
        ForeignKey("episodes.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    terminate: Mapped[bool] = mapped_column(Boolean, default=False)
    # RT-2's ee_delta columns: the applied action when the space is ee_delta[7], NULL for
    # any other space (migration 0008; `action` holds every space's full vector)
    dx: Mapped[float | None] = mapped_column(Float)
    dy: Mapped[float | None] = mapped_column(Float)
    dz: Mapped[float | None] = mapped_column(Float)
    droll: Mapped[float | None] = mapped_column(Float)
    dpitch: Mapped[float | None] = mapped_column(Float)
    dyaw: Mapped[float | None] = mapped_column(Float)
    gripper: Mapped[float | None] = mapped_column(Float)
    tokens: Mapped[str | None] = mapped_column(String(100))  # RT-2 text form "1 128 91 ..."
    proprio: Mapped[list[Any]] = mapped_column(default=list)
    obs_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    obs_monotonic_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    obs_wall_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    command_wall_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    obs_age_ms: Mapped[float] = mapped_column(Float, default=0.0)
    inference_ms: Mapped[float] = mapped_column(Float, default=0.0)
    orchestration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    command_ms: Mapped[float] = mapped_column(Float, default=0.0)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    clipped: Mapped[bool] = mapped_column(Boolean, default=False)
    plan: Mapped[str | None] = mapped_column(Text)
    # migration 0008 (action chunks, declared spaces)
    action: Mapped[list[Any]] = mapped_column(server_default=text("'[]'"))  # applied values
    action_space: Mapped[str] = mapped_column(String(40), server_default=text("'ee_delta[7]'"))
    chunk_id: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    chunk_index: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    chunk_age_ms: Mapped[float] = mapped_column(Float, server_default=text("0"))


#: labels.source (migration 0012): an `auto` label always names its detector's checksum
LABEL_SOURCE_CHECK = ("source IN ('human','sim') OR "
                      "(source = 'auto' AND detector_checksum IS NOT NULL)")


class Detector(Base):
    """A registered success detector (migration 0012): like a policy, immutable once
    registered; its checksum covers kind + config (+ weights), and every auto label keeps it."""

    __tablename__ = "detectors"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(50), default="1")
    kind: Mapped[str] = mapped_column(String(50))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checksum: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class CampaignQuestion(Base):
    """A question a campaign declared at creation (migration 0012; protocols.sequential): the
    declaration is fixed; state .. updated_at are the anytime-valid test's current standing,
    rewritten by the orchestrator as outcomes resolve. A decision is sticky."""

    __tablename__ = "campaign_questions"
    __table_args__ = (
        UniqueConstraint("campaign_id", "position"),
        CheckConstraint(check_values(QuestionState, "state"), name="state"),
        CheckConstraint(check_values(QuestionKind, "kind"), name="kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))  # QuestionKind
    policy_a_id: Mapped[int] = mapped_column(ForeignKey("campaign_policies.id"))
    policy_b_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_policies.id"))
    category: Mapped[str | None] = mapped_column(String(50))  # NULL: every task of the campaign
    threshold: Mapped[float | None] = mapped_column(Float)  # threshold questions only
    alpha: Mapped[float] = mapped_column(Float)
    power: Mapped[float] = mapped_column(Float)
    min_effect: Mapped[float] = mapped_column(Float)
    cap: Mapped[int] = mapped_column(Integer)  # trials (pair: blocks) at most
    two_sided: Mapped[bool] = mapped_column(Boolean)
    discordance: Mapped[float] = mapped_column(Float)
    fixed_n: Mapped[int] = mapped_column(Integer)  # the fixed design's n at the same errors
    # the test's standing
    state: Mapped[str] = mapped_column(String(20), default=QuestionState.RUNNING)
    outcomes: Mapped[int] = mapped_column(Integer, default=0)  # resolved outcomes used
    late: Mapped[int] = mapped_column(Integer, default=0)  # resolved after the decision
    e_value: Mapped[float] = mapped_column(Float, default=1.0)  # the deciding e-process's
    decided_after: Mapped[int | None] = mapped_column(Integer)  # outcomes at the decision
    decided_at: Mapped[datetime | None] = mapped_column(TS)
    trials_saved: Mapped[int] = mapped_column(Integer, default=0)  # trials not leased for it
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class Label(Base):
    """An outcome label: from a human evaluator or from the simulator. Many per episode."""

    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("episode_id", "source", "evaluator"),
        CheckConstraint(LABEL_SOURCE_CHECK, name="source"),
        CheckConstraint("progress IS NULL OR (progress >= 0 AND progress <= 1)", name="progress"),
        Index("ix_labels_episode_id", "episode_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(10))
    evaluator: Mapped[str] = mapped_column(String(100))
    success: Mapped[bool] = mapped_column(Boolean)
    progress: Mapped[float | None] = mapped_column(Float)
    failure_mode: Mapped[str | None] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)  # optimistic concurrency
    # migration 0012: an `auto` label's detector (evaluator = the detector's name) and the
    # checksum of the detector that produced it; NULL for human and sim labels
    detector_id: Mapped[int | None] = mapped_column(Integer)  # detectors.id (no declared FK)
    detector_checksum: Mapped[str | None] = mapped_column(String(80))

    # orchestrator.store.labels sets each new version itself (it continues the label's history in
    # label_versions, also after a retraction); SQLAlchemy still checks the old one on UPDATE.
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}


class LabelVersion(Base):
    """Every version of every human label (migration 0003): saves and undos, never edited.

    The labels table holds the current version; this one the history undo restores from.
    success NULL = no label at that version (an undo retracted it).
    """

    __tablename__ = "label_versions"
    __table_args__ = (
        UniqueConstraint("episode_id", "source", "evaluator", "version"),
        CheckConstraint("action IN ('saved','undone')", name="action"),
        CheckConstraint("source IN ('human','sim')", name="source"),
        Index("ix_label_versions_evaluator_id", "evaluator", "id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(10))
    evaluator: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(10))  # saved | undone
    success: Mapped[bool | None] = mapped_column(Boolean)
    progress: Mapped[float | None] = mapped_column(Float)
    failure_mode: Mapped[str | None] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    render_token: Mapped[str | None] = mapped_column(String(64))  # the page render it was given on
    at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class Event(Base):
    """Audit log: leases, aborts, operator confirmations, e-stops, campaign changes."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_campaign_id_at", "campaign_id", "at"),
        Index("ix_events_robot_id_at", "robot_id", "at"),
        Index("ix_events_episode_id", "episode_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    kind: Mapped[str] = mapped_column(String(50))
    actor: Mapped[str] = mapped_column(String(100), default="system")
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    robot_id: Mapped[int | None] = mapped_column(ForeignKey("robots.id", ondelete="SET NULL"))
    episode_id: Mapped[int | None] = mapped_column(ForeignKey("episodes.id", ondelete="SET NULL"))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
