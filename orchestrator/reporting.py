"""The per-category report from the store: what `evalfleet report` prints and the dashboard's
Results page shows (both call build_report_for_ids, so their numbers are the same).

The store gives block patterns aggregated in SQL (queries.block_pattern_counts) and each
campaign's design (policies, codes, planned trials and blocks); protocols.report_model does
the statistics. Policies are keyed by policy id, never by blind code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from orchestrator.store.campaigns import get_campaign
from orchestrator.store.db import Store
from orchestrator.store.queries import (
    BlockPatternCount,
    CampaignPolicyPlan,
    block_pattern_counts,
    campaign_policy_plans,
)
from protocols.report_model import (
    BlockCount,
    CampaignDesign,
    CampaignPolicy,
    Report,
    build_report,
)


@dataclass(frozen=True)
class ReportFilters:
    robots: tuple[str, ...] = ()
    stations: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    source: str | None = None  # "human" | "sim": only outcomes resolved from that source
    evaluator: str | None = None  # only this evaluator's own human labels decide


def designs_from(plans: Sequence[CampaignPolicyPlan],
                 campaign_ids: Sequence[int]) -> list[CampaignDesign]:
    """The campaigns' designs, in the given order. A plan runs every policy once per block
    (protocols.planning), so a campaign's planned blocks are its policies' planned trials."""
    by_campaign: dict[int, list[CampaignPolicyPlan]] = {}
    for p in plans:
        by_campaign.setdefault(p.campaign_id, []).append(p)
    out = []
    for cid in campaign_ids:
        mine = sorted(by_campaign.get(cid, []), key=lambda p: p.position)
        if not mine:
            continue
        out.append(CampaignDesign(
            cid, mine[0].campaign, max(p.planned for p in mine),
            tuple(CampaignPolicy(p.policy_id, p.policy, p.version, p.blind_code, p.position,
                                 p.planned) for p in mine)))
    return out


def block_counts(patterns: Sequence[BlockPatternCount],
                 designs: Sequence[CampaignDesign]) -> list[BlockCount]:
    """Decode the SQL bit masks into (policy id, outcome) per block pattern."""
    policies = {d.campaign_id: d.policies for d in designs}
    out = []
    for p in patterns:
        outcomes = []
        for cp in policies[p.campaign_id]:
            bit = 1 << cp.position
            if not p.present & bit:
                continue
            outcome = ("success" if p.success & bit else "failure" if p.failure & bit
                       else "disputed" if p.disputed & bit else "unlabeled")
            outcomes.append((cp.policy_id, outcome))
        out.append(BlockCount(p.campaign_id, p.task_key, p.category, p.difficulty,
                              tuple(outcomes), p.n))
    return out


def build_report_for_ids(
    store: Store,
    campaign_ids: Sequence[int],
    *,
    test: str = "mcnemar",
    blind: bool = False,
    filters: ReportFilters | None = None,
    title: str = "",
) -> Report:
    f = filters or ReportFilters()
    ids = list(dict.fromkeys(int(c) for c in campaign_ids))
    with store.read() as s:
        plans = campaign_policy_plans(s, ids)
        patterns = block_pattern_counts(
            s, ids, robots=f.robots or None, stations=f.stations or None, since=f.since,
            until=f.until, source=f.source, evaluator=f.evaluator)
    designs = designs_from(plans, ids)
    return build_report(block_counts(patterns, designs), designs, test=test, blind=blind,
                        title=title)


def build_campaign_report(store: Store, campaigns: Sequence[str], *, test: str = "mcnemar",
                          blind: bool = False) -> Report:
    with store.read() as s:
        rows = [get_campaign(s, c) for c in campaigns]
        ids = list(dict.fromkeys(c.id for c in rows))
        title = ", ".join(dict.fromkeys(f"#{c.id}" if blind else c.name for c in rows))
    return build_report_for_ids(store, ids, test=test, blind=blind, title=title)
