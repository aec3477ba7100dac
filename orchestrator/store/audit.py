"""The human audit of campaigns with an audit rate, and the input of the report's PPI section
(protocols.audit draws the sample, protocols.report_ppi does the statistics). Each function
runs in the caller's session.

A campaign's audit sample: its counted, recorded episodes whose trial protocols.audit.drawn
picks (a keyed hash of the campaign seed and the trial id below campaigns.audit_rate). The
draw is computed here in Python (SQLite has no keyed hash) and handed to SQL as a literal
list of trial ids. Campaigns without an audit rate have no sample: humans label all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, bindparam, case, false, func, or_, select
from sqlalchemy.orm import Session

from orchestrator.store.campaigns import CampaignError, get_campaign
from orchestrator.store.models import Campaign, CampaignPolicy, Episode, Label, Policy, Task, Trial
from orchestrator.store.states import EpisodeStatus, LabelSource
from protocols.audit import drawn_ids
from protocols.report_ppi import (
    AuditCampaign,
    AuditEpisode,
    AuditPolicy,
    PpiReport,
    build_ppi_report,
)

__all__ = ["AuditProgress", "AuditScope", "audit_condition", "audit_progress", "audit_scope",
           "build_ppi", "detectors_with_labels", "ppi_episodes"]


@dataclass(frozen=True)
class AuditScope:
    """The audited campaigns (with a rate) among those asked for, and their drawn trials."""

    rates: tuple[tuple[int, float], ...]  # (campaign id, audit rate)
    trial_ids: frozenset[int]

    @property
    def campaign_ids(self) -> tuple[int, ...]:
        return tuple(c for c, _ in self.rates)


@dataclass(frozen=True)
class AuditProgress:
    """How far the humans are through one campaign's audit sample."""

    campaign_id: int
    audit_rate: float
    sampled: int  # counted, recorded episodes of drawn trials
    labelled: int  # of them with at least one human label

    @property
    def text(self) -> str:
        return (f"audit: {self.labelled} of {self.sampled} sampled episodes labelled; "
                f"rate {self.audit_rate:.0%}")


def audit_scope(s: Session, campaign_ids: Sequence[int] | None = None) -> AuditScope:
    """The campaigns with an audit rate (among campaign_ids; None: all) and their drawn
    trial ids."""
    stmt = select(Campaign.id, Campaign.seed, Campaign.audit_rate).where(
        Campaign.audit_rate.is_not(None)).order_by(Campaign.id)
    if campaign_ids:
        stmt = stmt.where(Campaign.id.in_(list(campaign_ids)))
    camps = s.execute(stmt).all()
    if not camps:
        return AuditScope((), frozenset())
    trials: dict[int, list[int]] = {}
    for tid, cid in s.execute(select(Trial.id, Trial.campaign_id).where(
            Trial.campaign_id.in_([c for c, _, _ in camps]))):
        trials.setdefault(int(cid), []).append(int(tid))
    rates = tuple((int(c), float(r or 0.0)) for c, _, r in camps)  # r is not NULL here
    drawn: set[int] = set()
    for (cid, rate), (_, seed, _) in zip(rates, camps, strict=True):
        drawn |= drawn_ids(int(seed), trials.get(cid, ()), rate)
    return AuditScope(rates, frozenset(drawn))


def _drawn_in(scope: AuditScope) -> ColumnElement[bool]:
    if not scope.trial_ids:
        return false()
    return Trial.id.in_(bindparam("audit_trial_ids", sorted(scope.trial_ids), expanding=True,
                                  literal_execute=True))  # inline ints: no bind-param limit


def audit_condition(s: Session, campaign_ids: Sequence[int] | None = None
                    ) -> ColumnElement[bool] | None:
    """A WHERE condition on Trial for the human label queue: an audited campaign's episode
    only when its trial is drawn; other campaigns unchanged. None when no campaign in scope
    has an audit rate."""
    scope = audit_scope(s, campaign_ids)
    if not scope.rates:
        return None
    return or_(Trial.campaign_id.not_in(list(scope.campaign_ids)), _drawn_in(scope))


def audit_progress(s: Session, campaign_ids: Sequence[int] | None = None
                   ) -> list[AuditProgress]:
    """Per audited campaign: sampled episodes and how many have a human label."""
    scope = audit_scope(s, campaign_ids)
    if not scope.rates:
        return []
    labelled = (select(Label.id).where(Label.episode_id == Episode.id,
                                       Label.source == LabelSource.HUMAN).exists())
    rows = {int(c): (int(n), int(k or 0)) for c, n, k in s.execute(
        select(Trial.campaign_id, func.count(), func.sum(case((labelled, 1), else_=0)))
        .select_from(Episode).join(Trial, Trial.id == Episode.trial_id)
        .where(Episode.counted, Episode.status == EpisodeStatus.RECORDED,
               Trial.campaign_id.in_(list(scope.campaign_ids)), _drawn_in(scope))
        .group_by(Trial.campaign_id))}
    return [AuditProgress(cid, rate, *rows.get(cid, (0, 0))) for cid, rate in scope.rates]


def detectors_with_labels(s: Session, campaign_ids: Sequence[int]) -> list[str]:
    """Names of the detectors with auto labels on counted episodes of these campaigns."""
    if not campaign_ids:
        return []
    return sorted(s.scalars(
        select(Label.evaluator).join(Episode, Episode.id == Label.episode_id)
        .join(Trial, Trial.id == Episode.trial_id)
        .where(Label.source == LabelSource.AUTO, Episode.counted,
               Trial.campaign_id.in_(list(campaign_ids))).distinct()))


@dataclass(frozen=True)
class PpiInput:
    campaigns: tuple[AuditCampaign, ...]
    policies: tuple[AuditPolicy, ...]
    episodes: tuple[AuditEpisode, ...]
    checksums: tuple[str, ...]  # distinct checksums of the detector's labels


def ppi_episodes(s: Session, campaign_ids: Sequence[int], detector: str) -> PpiInput:
    """Every counted episode of the campaigns with its stratum, audit draw, human votes and
    the detector's label (auto labels of that name only; never another source)."""
    ids = list(dict.fromkeys(int(c) for c in campaign_ids))
    camps = {int(c): (name, int(seed), rate) for c, name, seed, rate in s.execute(
        select(Campaign.id, Campaign.name, Campaign.seed, Campaign.audit_rate)
        .where(Campaign.id.in_(ids)))}
    campaigns = tuple(AuditCampaign(c, camps[c][0], camps[c][2]) for c in ids if c in camps)
    policies = tuple(AuditPolicy(int(c), int(p), n, v, code, int(pos)) for c, p, n, v, code, pos
                     in s.execute(select(CampaignPolicy.campaign_id, CampaignPolicy.policy_id,
                                         Policy.name, Policy.version, CampaignPolicy.blind_code,
                                         CampaignPolicy.position)
                                  .join(Policy, Policy.id == CampaignPolicy.policy_id)
                                  .where(CampaignPolicy.campaign_id.in_(ids))))
    human = (select(Label.episode_id.label("e"),
                    func.sum(case((Label.success, 1), else_=0)).label("hy"),
                    func.sum(case((Label.success, 0), else_=1)).label("hn"))
             .where(Label.source == LabelSource.HUMAN).group_by(Label.episode_id).subquery())
    auto = (select(Label.episode_id.label("e"), Label.success.label("ok"),
                   Label.detector_checksum.label("sum"))
            .where(Label.source == LabelSource.AUTO, Label.evaluator == detector).subquery())
    rows = s.execute(
        select(Trial.campaign_id, Trial.id, CampaignPolicy.policy_id, Task.category,
               human.c.hy, human.c.hn, auto.c.ok, auto.c.sum)
        .select_from(Episode).join(Trial, Trial.id == Episode.trial_id)
        .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
        .join(Task, Task.id == Trial.task_id)
        .outerjoin(human, human.c.e == Episode.id).outerjoin(auto, auto.c.e == Episode.id)
        .where(Episode.counted, Trial.campaign_id.in_(ids)).order_by(Episode.id)).all()
    by_campaign: dict[int, list[int]] = {}
    for r in rows:
        by_campaign.setdefault(int(r[0]), []).append(int(r[1]))
    drawn: set[int] = set()
    for cid, tids in by_campaign.items():
        _, seed, rate = camps[cid]
        if rate is not None:
            drawn |= drawn_ids(seed, tids, rate)
    episodes = tuple(AuditEpisode(int(c), int(p), str(cat), int(t) in drawn, int(hy or 0),
                                  int(hn or 0), None if ok is None else bool(ok))
                     for c, t, p, cat, hy, hn, ok, _ in rows)
    checksums = tuple(sorted({str(r[7]) for r in rows if r[7] is not None}))
    return PpiInput(campaigns, policies, episodes, checksums)


def build_ppi(s: Session, campaigns: Sequence[str | int], detector: str, *,
              blind: bool = False, confidence: float = 0.95) -> PpiReport:
    """The PPI section for campaigns (names or ids) and a detector name. CampaignError when
    a campaign is unknown or the detector has no label on them; ValueError (one line) when a
    campaign has no audit rate."""
    rows = [get_campaign(s, c) for c in campaigns]
    ids = list(dict.fromkeys(c.id for c in rows))
    if detector not in detectors_with_labels(s, ids):
        known = ", ".join(detectors_with_labels(s, ids)) or "none"
        raise CampaignError(f"--detector {detector!r}: no auto labels of that detector on these "
                            f"campaigns (detectors with labels: {known}); run it first")
    data = ppi_episodes(s, ids, detector)
    return build_ppi_report(data.episodes, data.campaigns, data.policies, detector=detector,
                            blind=blind, confidence=confidence, checksums=data.checksums)
