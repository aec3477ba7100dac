"""Writing protocols, policies and campaigns (with their planned trials) into the store.

Each function runs inside the caller's write transaction: a campaign and all its trials land
together or not at all.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.exc import IntegrityError
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
from orchestrator.store.states import CampaignStatus, EventKind, TrialStatus

if TYPE_CHECKING:
    from protocols.loader import LoadedProtocol
    from protocols.questions import QuestionSpec

TRIALS = cast(Table, Trial.__table__)  # Core statements on the trials table (typed)
# what a person may set (incomplete is reached only by the queue running dry)
CAMPAIGN_STATUSES = tuple(c for c in CampaignStatus if c is not CampaignStatus.INCOMPLETE)


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


def register_policy(
    s: Session, spec: PolicySpec, *, force: bool = False, actor: str = "system"
) -> Policy:
    """Register a policy version, or confirm it is registered unchanged (a no-op).

    A registered name + version is immutable: a different spec under it raises
    policies.registration.PolicyChangeRefused (see orchestrator/store/policies.py)."""
    from orchestrator.store.policies import register

    row = s.get(Policy, register(s, spec, force=force, actor=actor).policy_id)
    assert row is not None
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
    choose: Callable[[str], str] = secrets.choice,
    audit_rate: float | None = None,
    questions: Sequence[QuestionSpec] = (),
) -> Campaign:
    """Plan a campaign (pure planning) and write it with all its trials in one transaction.

    questions: the sequential questions it declares (protocols.questions.parse_spec), stored
    in campaign_questions (orchestrator.store.questions.add_questions) in this transaction.

    audit_rate (0 < r <= 1): humans audit a random sample of this share of the episodes
    (protocols.audit); None: they label every episode. Fixed from then on.

    Blind codes are drawn here with a CSPRNG (`choose`; tests may pass a seeded one), fresh
    per campaign and unique in the whole store (unique constraint on blind_code; a clash with
    a campaign created at the same moment is redrawn).
    """
    from protocols.planning import plan_campaign

    if s.scalar(select(func.count()).select_from(Campaign).where(Campaign.name == name)):
        raise CampaignError(f"campaign {name!r} already exists: choose another --name")
    if audit_rate is not None:
        from protocols.audit import check_audit_rate

        try:
            audit_rate = check_audit_rate(audit_rate)
        except ValueError as e:
            raise CampaignError(str(e)) from None
    policies = [find_policy(s, p) for p in policy_names]
    names = [p.name for p in policies]
    codes = allocate_blind_codes(s, names, choose=choose)
    plan = plan_campaign(loaded.protocol, names, trials_per_task, seed, blind_codes=codes)
    proto_row = upsert_protocol(s, loaded)
    campaign = Campaign(
        name=name,
        protocol_id=proto_row.id,
        status=CampaignStatus.PENDING,
        priority=priority,
        seed=seed,
        trials_per_task=trials_per_task,
        created_by=created_by,
        audit_rate=audit_rate,
    )
    s.add(campaign)
    s.flush()
    cp_by_name = _add_campaign_policies(s, campaign.id, policies, plan.blind_codes, choose)
    task_ids = {
        k: v for k, v in s.execute(select(Task.key, Task.id).where(Task.protocol_id == proto_row.id))
    }
    s.execute(
        TRIALS.insert(),
        [
            {
                "campaign_id": campaign.id,
                "task_id": task_ids[t.task_key],
                "campaign_policy_id": cp_by_name[t.policy].id,
                "trial_index": t.trial_index,
                "scene_seed": t.scene_seed,
                "plan_order": t.order,
                "status": TrialStatus.PENDING,
                "attempts": 0,
            }
            for t in plan.trials
        ],
    )
    if questions:
        from orchestrator.store.questions import add_questions

        named = {**cp_by_name, **{g: cp_by_name[p.name] for g, p in zip(policy_names, policies)}}
        add_questions(s, campaign.id, loaded, named, questions, trials_per_task)
    log_event(
        s,
        EventKind.CAMPAIGN_CREATED,
        actor=created_by or "cli",
        campaign_id=campaign.id,
        trials=len(plan.trials),
        policies=list(policy_names),
        seed=seed,
        audit_rate=audit_rate,
    )
    return campaign


BLIND_CODE_ATTEMPTS = 20


def taken_blind_codes(s: Session, codes: Collection[str]) -> set[str]:
    """Which of these codes some campaign in the store already uses."""
    if not codes:
        return set()
    return set(s.scalars(select(CampaignPolicy.blind_code).where(
        CampaignPolicy.blind_code.in_(sorted(codes)))))


def allocate_blind_codes(
    s: Session, names: Sequence[str], *, choose: Callable[[str], str] = secrets.choice,
    avoid: Collection[str] = (),
) -> dict[str, str]:
    """Fresh random blind codes for these policies that no campaign in the store uses yet."""
    from protocols.planning import draw_blind_codes

    avoided = set(avoid)
    for _ in range(BLIND_CODE_ATTEMPTS):
        codes = draw_blind_codes(names, choose, avoid=avoided)
        clash = taken_blind_codes(s, codes.values())
        if not clash:
            return codes
        avoided |= clash
    raise CampaignError(
        f"could not draw {len(names)} free blind codes in {BLIND_CODE_ATTEMPTS} attempts: "
        "the code space is nearly used up or the code source repeats itself"
    )


def _add_campaign_policies(
    s: Session, campaign_id: int, policies: Sequence[Policy], codes: Mapping[str, str],
    choose: Callable[[str], str],
) -> dict[str, CampaignPolicy]:
    """Insert the campaign's policies with their codes; a code that another transaction took
    meanwhile (the unique constraint fires) is redrawn, inside a savepoint."""
    avoided: set[str] = set()
    for _ in range(BLIND_CODE_ATTEMPTS):
        rows = {
            pol.name: CampaignPolicy(campaign_id=campaign_id, policy_id=pol.id,
                                     blind_code=codes[pol.name], position=position)
            for position, pol in enumerate(policies)
        }
        try:
            with s.begin_nested():
                s.add_all(rows.values())
                s.flush()
            return rows
        except IntegrityError:
            for row in rows.values():
                if row in s:
                    s.expunge(row)
            clash = taken_blind_codes(s, codes.values())
            if not clash:  # some other constraint: not ours to retry
                raise
            avoided |= clash
            codes = allocate_blind_codes(s, list(rows), choose=choose, avoid=avoided)
    raise CampaignError(
        f"could not store free blind codes in {BLIND_CODE_ATTEMPTS} attempts: "
        "campaigns are being created too fast; try again"
    )


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
        allowed = [c.value for c in CAMPAIGN_STATUSES]
        raise CampaignError(f"unknown campaign status {status!r}: one of {allowed}")
    new = CampaignStatus(status)
    reopen = (CampaignStatus.RUNNING, CampaignStatus.PENDING, CampaignStatus.PAUSED)
    campaign = get_campaign(s, name_or_id)
    old = campaign.status
    if old == CampaignStatus.INCOMPLETE and new in reopen:
        raise CampaignError(  # nothing is left in its queue: resuming would change nothing
            f"campaign {campaign.name!r} is incomplete (trials given up or cancelled): "
            f"`evalfleet campaign requeue {campaign.name}` re-queues them")
    if old in (CampaignStatus.DONE, CampaignStatus.CANCELLED) and new in reopen:
        raise CampaignError(f"campaign {campaign.name!r} is {old}; it cannot become {new}")
    campaign.status = new
    if new is CampaignStatus.CANCELLED:
        s.execute(
            TRIALS.update()
            .where(Trial.campaign_id == campaign.id, Trial.status == TrialStatus.PENDING)
            .values(status=TrialStatus.CANCELLED)
        )
    log_event(s, EventKind.campaign(new), actor=actor, campaign_id=campaign.id, previous=old)
    return campaign


def set_campaign_priority(
    s: Session, name_or_id: str | int, priority: int, *, actor: str = "cli"
) -> Campaign:
    campaign = get_campaign(s, name_or_id)
    log_event(
        s,
        EventKind.CAMPAIGN_PRIORITY,
        actor=actor,
        campaign_id=campaign.id,
        previous=campaign.priority,
        priority=priority,
    )
    campaign.priority = priority
    return campaign


def log_event(
    s: Session,
    kind: EventKind,
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
