"""The per-category report from the store: what `evalfleet report` prints and the dashboard's
Results page shows (both call build_report_for_ids, so their numbers are the same)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from orchestrator.store.campaigns import get_campaign
from orchestrator.store.db import Store
from orchestrator.store.queries import OutcomeCount, outcome_counts, policy_order
from protocols.report import OutcomeRow, PolicyColumn, Report, build_report


@dataclass(frozen=True)
class ReportFilters:
    robots: tuple[str, ...] = ()
    stations: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    source: str | None = None  # "human" | "sim": only outcomes resolved from that source


def outcome_rows(counts: Sequence[OutcomeCount], *, blind: bool = False) -> list[OutcomeRow]:
    """Resolved (success/failure) outcomes as report rows; disputed/unlabeled are left out.

    One shared row object per cell, repeated n times: cheap even for 100k episodes.
    """
    rows: list[OutcomeRow] = []
    for c in counts:
        if c.outcome not in ("success", "failure"):
            continue
        row = OutcomeRow(
            policy_code=c.blind_code,
            policy_name=c.blind_code if blind else c.policy,
            category=c.category,
            difficulty=c.difficulty,
            success=c.outcome == "success",
        )
        rows.extend([row] * c.n)
    return rows


def build_report_for_ids(
    store: Store,
    campaign_ids: Sequence[int],
    *,
    test: str = "fisher",
    blind: bool = False,
    filters: ReportFilters | None = None,
    title: str = "",
) -> Report:
    f = filters or ReportFilters()
    with store.read() as s:
        counts = outcome_counts(
            s,
            campaign_ids,
            robots=f.robots or None,
            stations=f.stations or None,
            since=f.since,
            until=f.until,
        )
        order = policy_order(s, campaign_ids)
    if f.source:
        counts = [c for c in counts if c.outcome_source == f.source]
    columns = [PolicyColumn(code=code, name=code if blind else name) for name, code in order]
    return build_report(outcome_rows(counts, blind=blind), test, columns, title=title)  # type: ignore[arg-type]


def build_campaign_report(store: Store, campaigns: Sequence[str], *, test: str = "fisher") -> Report:
    with store.read() as s:
        rows = [get_campaign(s, c) for c in campaigns]
        ids = [c.id for c in rows]
        title = ", ".join(c.name for c in rows)
    return build_report_for_ids(store, ids, test=test, title=title)
