"""Writing protocols, policies and campaigns (with their planned trials) into the store.

Each function runs inside the caller's write transaction: a campaign and all its trials land
together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.store.models import (
    Campaign,
    CampaignPolicy,
    Event,
    Policy,
    Protocol,
    Task,
    Trial,
)

if TYPE_CHECKING:
    from protocols.loader import LoadedProtocol

CAMPAIGN_STATUSES = ("pending", "running", "paused", "done", "cancelled")


class CampaignError(ValueError):
    """Bad campaign input (unknown policy, duplicate name, ...): the message says what to do."""


@dataclass(frozen=True)
class PolicySpec:
    name: str
    kind: str
    version: str = "1"
    checkpoint_uri: str | None = None
    config: dict[str, Any] | None = None
    weights_checksum: str | None = None


def upsert_protocol(s: Session, loaded: LoadedProtocol) -> Protocol:
    """Store a protocol's full source and its tasks once per (name, version, checksum)."""
    proto = loaded.protocol
    row = s.scalar(
        select(Protocol).where(
            Protocol.name == proto.name,
            Protocol.version == str(proto.version),
            Protocol.checksum == loaded.checksum,
        )
    )
    if row is not None:
        return row
    row = Protocol(
        name=proto.name,
        version=str(proto.version),
        source_text=loaded.source_text,
        checksum=loaded.checksum,
    )
    s.add(row)
    s.flush()
    for task in proto.tasks:
        s.add(
            Task(
                protocol_id=row.id,
                key=task.key,
                instruction=task.instruction,
                skill=str(task.skill),
                split=str(task.split),
                category=str(task.category),
                difficulty=str(task.difficulty) if task.difficulty else None,
                scene=task.scene.model_dump(mode="json"),
                station_needs=list(task.scene.station_needs),
                max_steps=task.max_steps or proto.default_max_steps,
                control_hz=task.control_hz or proto.default_control_hz,
                success_criterion=str(task.success.criterion),
            )
        )
    s.flush()
    return row


def register_policy(s: Session, spec: PolicySpec) -> Policy:
    """Register a policy version; the same name+version with other weights is refused."""
    row = s.scalar(select(Policy).where(Policy.name == spec.name, Policy.version == spec.version))
    if row is not None:
        if (
            spec.weights_checksum
            and row.weights_checksum
            and row.weights_checksum != spec.weights_checksum
        ):
            raise CampaignError(
                f"policy {spec.name!r} version {spec.version!r} is already registered with "
                f"weights checksum {row.weights_checksum[:12]}..., not "
                f"{spec.weights_checksum[:12]}...: register it under a new --version"
            )
        row.kind = spec.kind
        row.checkpoint_uri = spec.checkpoint_uri
        row.config = spec.config or {}
        row.weights_checksum = spec.weights_checksum or row.weights_checksum
        return row
    row = Policy(
        name=spec.name,
        version=spec.version,
        kind=spec.kind,
        checkpoint_uri=spec.checkpoint_uri,
        config=spec.config or {},
        weights_checksum=spec.weights_checksum,
    )
    s.add(row)
    s.flush()
    return row


def find_policy(s: Session, name: str) -> Policy:
    """The newest registered version of a policy name ('name' or 'name@version')."""
    base, _, version = name.partition("@")
    stmt = select(Policy).where(Policy.name == base)
    if version:
        stmt = stmt.where(Policy.version == version)
    row = s.scalar(stmt.order_by(Policy.created_at.desc(), Policy.id.desc()).limit(1))
    if row is None:
        known = ", ".join(sorted(s.scalars(select(Policy.name).distinct()))) or "none"
        raise CampaignError(
            f"policy {name!r} is not registered (known: {known}): "
            "run `evalfleet policy register` first"
        )
    return row


def create_campaign(
    s: Session,
    *,
    name: str,
    loaded: LoadedProtocol,
    policy_names: Sequence[str],
    trials_per_task: int,
    seed: int,
    priority: int = 0,
    created_by: str | None = None,
) -> Campaign:
    """Plan a campaign (pure planning) and write it with all its trials in one transaction."""
    from protocols.planning import plan_campaign

    if s.scalar(select(func.count()).select_from(Campaign).where(Campaign.name == name)):
        raise CampaignError(f"campaign {name!r} already exists: choose another --name")
    policies = [find_policy(s, p) for p in policy_names]
    plan = plan_campaign(loaded.protocol, [p.name for p in policies], trials_per_task, seed)
    proto_row = upsert_protocol(s, loaded)
    campaign = Campaign(
        name=name,
        protocol_id=proto_row.id,
        status="pending",
        priority=priority,
        seed=seed,
        trials_per_task=trials_per_task,
        created_by=created_by,
    )
    s.add(campaign)
    s.flush()
    cp_by_name: dict[str, CampaignPolicy] = {}
    for position, pol in enumerate(policies):
        cp = CampaignPolicy(
            campaign_id=campaign.id,
            policy_id=pol.id,
            blind_code=plan.blind_codes[pol.name],
            position=position,
        )
        s.add(cp)
        cp_by_name[pol.name] = cp
    s.flush()
    task_ids = {
        k: v for k, v in s.execute(select(Task.key, Task.id).where(Task.protocol_id == proto_row.id))
    }
    s.execute(
        Trial.__table__.insert(),
        [
            {
                "campaign_id": campaign.id,
                "task_id": task_ids[t.task_key],
                "campaign_policy_id": cp_by_name[t.policy].id,
                "trial_index": t.trial_index,
                "scene_seed": t.scene_seed,
                "plan_order": t.order,
                "status": "pending",
                "attempts": 0,
            }
            for t in plan.trials
        ],
    )
    log_event(
        s,
        "campaign_created",
        actor=created_by or "cli",
        campaign_id=campaign.id,
        trials=len(plan.trials),
        policies=list(policy_names),
        seed=seed,
    )
    return campaign


def get_campaign(s: Session, name_or_id: str | int) -> Campaign:
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        row = s.get(Campaign, int(name_or_id))
        if row is None:
            row = s.scalar(select(Campaign).where(Campaign.name == str(name_or_id)))
    else:
        row = s.scalar(select(Campaign).where(Campaign.name == name_or_id))
    if row is None:
        raise CampaignError(
            f"no campaign {name_or_id!r}: `evalfleet campaign list` shows the campaigns"
        )
    return row


def set_campaign_status(
    s: Session, name_or_id: str | int, status: str, *, actor: str = "cli"
) -> Campaign:
    if status not in CAMPAIGN_STATUSES:
        raise CampaignError(f"unknown campaign status {status!r}: one of {CAMPAIGN_STATUSES}")
    campaign = get_campaign(s, name_or_id)
    old = campaign.status
    if old in ("done", "cancelled") and status in ("running", "pending", "paused"):
        raise CampaignError(f"campaign {campaign.name!r} is {old}; it cannot become {status}")
    campaign.status = status
    if status == "cancelled":
        s.execute(
            Trial.__table__.update()
            .where(Trial.campaign_id == campaign.id, Trial.status == "pending")
            .values(status="cancelled")
        )
    log_event(s, f"campaign_{status}", actor=actor, campaign_id=campaign.id, previous=old)
    return campaign


def set_campaign_priority(
    s: Session, name_or_id: str | int, priority: int, *, actor: str = "cli"
) -> Campaign:
    campaign = get_campaign(s, name_or_id)
    log_event(
        s,
        "campaign_priority",
        actor=actor,
        campaign_id=campaign.id,
        previous=campaign.priority,
        priority=priority,
    )
    campaign.priority = priority
    return campaign


def log_event(
    s: Session,
    kind: str,
    *,
    actor: str = "system",
    campaign_id: int | None = None,
    robot_id: int | None = None,
    episode_id: int | None = None,
    **payload: Any,
) -> None:
    s.add(
        Event(
            kind=kind,
            actor=actor,
            campaign_id=campaign_id,
            robot_id=robot_id,
            episode_id=episode_id,
            payload=payload,
        )
    )
