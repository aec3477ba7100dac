"""Registered policies in the store: register (immutably), list and show.

The rules are pure (policies/registration.py); this module reads what they need (the row,
its usage) and writes what they decide, inside the caller's write transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.store.campaigns import PolicySpec, log_event
from orchestrator.store.models import Campaign, CampaignPolicy, Episode, Policy, Trial
from orchestrator.store.states import EventKind, TrialStatus
from policies.registration import (
    CanonicalSpec,
    Decision,
    PolicyUsage,
    canonical_spec,
    decide,
    normalize_config,
    spec_changes,
)


@dataclass(frozen=True)
class Registered:
    policy_id: int
    decision: Decision
    changes: tuple[str, ...] = ()  # what --force replaced


def _canonical(row: Policy) -> CanonicalSpec:
    return canonical_spec(row.kind, row.checkpoint_uri, row.config, row.weights_checksum)


def _spec_canonical(spec: PolicySpec) -> CanonicalSpec:
    return canonical_spec(spec.kind, spec.checkpoint_uri, spec.config, spec.weights_checksum)


def policy_usage(s: Session, policy_id: int) -> PolicyUsage:
    episodes = s.scalar(
        select(func.count(Episode.id))
        .join(Trial, Trial.id == Episode.trial_id)
        .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
        .where(CampaignPolicy.policy_id == policy_id)
    )
    leased = s.scalar(
        select(func.count(Trial.id))
        .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
        .where(CampaignPolicy.policy_id == policy_id, Trial.status == TrialStatus.LEASED)
    )
    campaigns = tuple(
        s.scalars(
            select(Campaign.name)
            .join(CampaignPolicy, CampaignPolicy.campaign_id == Campaign.id)
            .where(CampaignPolicy.policy_id == policy_id)
            .order_by(Campaign.id)
        )
    )
    return PolicyUsage(episodes=episodes or 0, leased_trials=leased or 0, campaigns=campaigns)


def _find(s: Session, name: str, version: str, *, lock: bool = False) -> Policy | None:
    stmt = select(Policy).where(Policy.name == name, Policy.version == version)
    if lock:
        stmt = stmt.with_for_update()
    return s.scalar(stmt)


def register(
    s: Session, spec: PolicySpec, *, force: bool = False, actor: str = "system"
) -> Registered:
    """Register `spec` under its name + version, or confirm it is already there unchanged.

    Raises PolicyChangeRefused (one line) for a different spec under an existing name +
    version, unless `force` and no episode has used it (then the row is replaced and the
    replacement is written to the audit log)."""
    new = _spec_canonical(spec)
    row = _find(s, spec.name, spec.version, lock=force)
    if row is None:
        try:
            with s.begin_nested():  # a concurrent registration of the same name + version
                row = Policy(
                    name=spec.name,
                    version=spec.version,
                    kind=spec.kind,
                    checkpoint_uri=spec.checkpoint_uri,
                    config=normalize_config(spec.kind, spec.config),
                    weights_checksum=spec.weights_checksum,
                )
                s.add(row)
                s.flush()
        except IntegrityError:
            row = _find(s, spec.name, spec.version)
            if row is None:  # pragma: no cover - the constraint that failed was another one
                raise
        else:
            log_event(s, EventKind.POLICY_REGISTERED, actor=actor, policy_id=row.id, name=row.name,
                      version=row.version, policy_kind=row.kind, config=row.config,
                      weights_checksum=row.weights_checksum)
            return Registered(row.id, Decision.CREATE)
    old = _canonical(row)
    usage = policy_usage(s, row.id) if spec_changes(old, new) else PolicyUsage()
    decision = decide(spec.name, spec.version, old, new, usage, force=force)
    if decision is not Decision.REPLACE:
        return Registered(row.id, decision)
    changes = spec_changes(old, new)
    before = _snapshot(row)
    row.kind = spec.kind
    row.checkpoint_uri = spec.checkpoint_uri
    row.config = normalize_config(spec.kind, spec.config)
    row.weights_checksum = spec.weights_checksum
    after = _snapshot(row)
    payload: dict[str, Any] = {
        "policy_id": row.id, "name": row.name, "version": row.version, "changes": list(changes),
        "before": before, "after": after, "campaigns": list(usage.campaigns),
    }
    ids: list[int | None] = list(s.scalars(
        select(CampaignPolicy.campaign_id).where(CampaignPolicy.policy_id == row.id)
    ))
    for cid in ids or [None]:  # one entry in each affected campaign's audit trail
        log_event(s, EventKind.POLICY_REPLACED, actor=actor, campaign_id=cid, **payload)
    s.flush()
    return Registered(row.id, decision, changes)


def _snapshot(row: Policy) -> dict[str, Any]:
    return {"kind": row.kind, "checkpoint_uri": row.checkpoint_uri, "config": row.config,
            "weights_checksum": row.weights_checksum}


# -- read side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySummary:
    id: int
    name: str
    version: str
    kind: str
    weights_checksum: str | None
    campaigns: int
    episodes: int
    created_at: datetime


@dataclass(frozen=True)
class PolicyDetail:
    summary: PolicySummary
    checkpoint_uri: str | None
    config: dict[str, Any]
    campaigns: tuple[str, ...]
    episode_checksums: tuple[str, ...]  # what the policy workers reported, distinct


def list_policies(s: Session, name: str | None = None) -> list[PolicySummary]:
    campaigns = (
        select(CampaignPolicy.policy_id, func.count(CampaignPolicy.campaign_id).label("n"))
        .group_by(CampaignPolicy.policy_id)
        .subquery()
    )
    episodes = (
        select(CampaignPolicy.policy_id, func.count(Episode.id).label("n"))
        .join(Trial, Trial.campaign_policy_id == CampaignPolicy.id)
        .join(Episode, Episode.trial_id == Trial.id)
        .group_by(CampaignPolicy.policy_id)
        .subquery()
    )
    stmt = (
        select(Policy, func.coalesce(campaigns.c.n, 0), func.coalesce(episodes.c.n, 0))
        .outerjoin(campaigns, campaigns.c.policy_id == Policy.id)
        .outerjoin(episodes, episodes.c.policy_id == Policy.id)
        .order_by(Policy.name, Policy.created_at, Policy.id)
    )
    if name is not None:
        stmt = stmt.where(Policy.name == name)
    return [
        PolicySummary(p.id, p.name, p.version, p.kind, p.weights_checksum, int(nc), int(ne),
                      p.created_at)
        for p, nc, ne in s.execute(stmt)
    ]


def policy_detail(s: Session, name: str, version: str | None = None) -> PolicyDetail | None:
    """One policy version (the newest registered when `version` is None)."""
    rows = list_policies(s, name)
    if version is not None:
        rows = [r for r in rows if r.version == version]
    if not rows:
        return None
    summary = rows[-1]
    row = s.get(Policy, summary.id)
    assert row is not None
    checksums = tuple(
        str(c) for c in s.scalars(
            select(Episode.policy_checksum).distinct()
            .join(Trial, Trial.id == Episode.trial_id)
            .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
            .where(CampaignPolicy.policy_id == row.id, Episode.policy_checksum.is_not(None))
        )
    )
    return PolicyDetail(
        summary=summary,
        checkpoint_uri=row.checkpoint_uri,
        config=dict(row.config or {}),
        campaigns=policy_usage(s, row.id).campaigns,
        episode_checksums=tuple(sorted(checksums)),
    )
