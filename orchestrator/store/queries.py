"""Read-side queries for the CLI, the dashboard and reports. Pages never touch the ORM directly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select, text
from sqlalchemy.orm import Session

from orchestrator.store.models import (
    Campaign,
    CampaignPolicy,
    Episode,
    Policy,
    Protocol,
    Task,
    Trial,
)
from orchestrator.store.states import TrialStatus


@dataclass(frozen=True)
class CampaignSummary:
    id: int
    name: str
    status: str
    priority: int
    protocol: str
    protocol_version: str
    seed: int
    trials_per_task: int
    policies: tuple[str, ...]
    blind_codes: tuple[str, ...]
    trials: int
    done: int
    pending: int
    leased: int
    cancelled: int
    created_at: datetime
    not_needed: int = 0  # left out: the campaign's declared questions were decided


@dataclass(frozen=True)
class EpisodeOutcome:
    """One counted episode with its resolved outcome (a row of the v_episode_outcomes view)."""

    episode_id: int
    campaign_id: int
    policy: str
    blind_code: str
    task_key: str
    category: str
    difficulty: str | None
    outcome: str  # success | failure | disputed | unlabeled
    outcome_source: str | None  # human | sim | None
    robot: str | None
    station: str | None
    ended_at: datetime | None
    progress: float | None


def list_campaigns(s: Session, ids: Sequence[int] | None = None) -> list[CampaignSummary]:
    counts = {
            row[0]: row[1:]
            for row in s.execute(
                select(
                    Trial.campaign_id,
                    func.count(),
                    func.sum(case((Trial.status == TrialStatus.DONE, 1), else_=0)),
                    func.sum(case((Trial.status == TrialStatus.PENDING, 1), else_=0)),
                    func.sum(case((Trial.status == TrialStatus.LEASED, 1), else_=0)),
                    func.sum(case((Trial.status == TrialStatus.CANCELLED, 1), else_=0)),
                    func.sum(case((Trial.status == TrialStatus.NOT_NEEDED, 1), else_=0)),
                ).group_by(Trial.campaign_id)
            )
    }
    stmt = (
        select(Campaign, Protocol.name, Protocol.version)
        .join(Protocol, Protocol.id == Campaign.protocol_id)
        .order_by(Campaign.priority.desc(), Campaign.created_at, Campaign.id)
    )
    if ids is not None:
        stmt = stmt.where(Campaign.id.in_(list(ids)))
    out: list[CampaignSummary] = []
    for campaign, pname, pversion in s.execute(stmt):
        pols = s.execute(
            select(Policy.name, CampaignPolicy.blind_code)
            .join(CampaignPolicy, CampaignPolicy.policy_id == Policy.id)
            .where(CampaignPolicy.campaign_id == campaign.id)
            .order_by(CampaignPolicy.position)
        ).all()
        total, done, pending, leased, cancelled, not_needed = counts.get(
            campaign.id, (0, 0, 0, 0, 0, 0))
        out.append(
            CampaignSummary(
                id=campaign.id,
                name=campaign.name,
                status=campaign.status,
                priority=campaign.priority,
                protocol=pname,
                protocol_version=pversion,
                seed=campaign.seed,
                trials_per_task=campaign.trials_per_task,
                policies=tuple(p[0] for p in pols),
                blind_codes=tuple(p[1] for p in pols),
                trials=int(total or 0),
                done=int(done or 0),
                pending=int(pending or 0),
                leased=int(leased or 0),
                cancelled=int(cancelled or 0),
                created_at=campaign.created_at,
                not_needed=int(not_needed or 0),
            )
        )
    return out


def _outcome_filters(
    campaign_ids: Sequence[int],
    robots: Sequence[str] | None,
    stations: Sequence[str] | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[str, dict[str, object]]:
    where = ["campaign_id IN (" + ",".join(str(int(c)) for c in campaign_ids) + ")"]
    params: dict[str, object] = {}
    if robots:
        where.append("robot IN (" + ",".join(f":r{i}" for i in range(len(robots))) + ")")
        params.update({f"r{i}": r for i, r in enumerate(robots)})
    if stations:
        where.append("station IN (" + ",".join(f":s{i}" for i in range(len(stations))) + ")")
        params.update({f"s{i}": st for i, st in enumerate(stations)})
    if since is not None:
        where.append("ended_at >= :since")
        params["since"] = since
    if until is not None:
        where.append("ended_at < :until")
        params["until"] = until
    return " AND ".join(where), params


def episode_outcomes(
    s: Session,
    campaign_ids: Sequence[int],
    *,
    robots: Sequence[str] | None = None,
    stations: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[EpisodeOutcome]:
    """Counted episodes of the campaigns with their resolved outcome, from v_episode_outcomes."""
    if not campaign_ids:
        return []
    where, params = _outcome_filters(campaign_ids, robots, stations, since, until)
    sql = (
        "SELECT episode_id, campaign_id, policy, blind_code, task_key, category, difficulty, "
        "outcome, outcome_source, robot, station, ended_at, progress "
        f"FROM v_episode_outcomes WHERE {where} ORDER BY episode_id"
    )
    return [EpisodeOutcome(*row) for row in s.execute(text(sql), params)]


def progress_by_category(s: Session, campaign_id: int) -> list[tuple[str, str | None, int, int]]:
    """(category, difficulty, trials done, trials total) for one campaign; cancelled and
    not-needed trials are not in the total."""
    rows = s.execute(
        select(
            Task.category,
            Task.difficulty,
            func.sum(case((Trial.status == TrialStatus.DONE, 1), else_=0)),
            func.count(),
        )
        .join(Task, Task.id == Trial.task_id)
        .where(Trial.campaign_id == campaign_id,
               Trial.status.not_in((TrialStatus.CANCELLED, TrialStatus.NOT_NEEDED)))
        .group_by(Task.category, Task.difficulty)
    )
    return [(r[0], r[1], int(r[2] or 0), int(r[3])) for r in rows]


def episode_counts(s: Session, campaign_id: int) -> dict[str, int]:
    rows = s.execute(
        select(Episode.status, func.count())
        .join(Trial, Trial.id == Episode.trial_id)
        .where(Trial.campaign_id == campaign_id)
        .group_by(Episode.status)
    )
    return {status: int(n) for status, n in rows}


# --- the report: block patterns and the campaigns' design --------------------------------------


@dataclass(frozen=True)
class BlockPatternCount:
    """How many blocks (campaign, task, trial index) of one task ended with one pattern.

    Masks have bit `position` set for each campaign policy (campaign_policies.position):
    present = a counted episode exists; success / failure / disputed = its outcome
    (present and none of the three = unlabeled). A trial has at most one counted episode
    (partial unique index), so each bit is set at most once per block.
    """

    campaign_id: int
    task_key: str
    category: str
    difficulty: str | None
    present: int
    success: int
    failure: int
    disputed: int
    n: int


def block_pattern_counts(
    s: Session,
    campaign_ids: Sequence[int],
    *,
    robots: Sequence[str] | None = None,
    stations: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    source: str | None = None,
    evaluator: str | None = None,
) -> list[BlockPatternCount]:
    """The report's input, aggregated in SQL: one row per campaign, task and block pattern
    (a few hundred rows for 100k episodes).

    Outcomes are v_episode_outcomes' (human overrides sim, majority, ties disputed; the same
    CASE, checked against the view in tests/integration/test_report_campaigns.py); with
    `source`, only outcomes decided by that source; with `evaluator`, that evaluator's own
    human label decides and episodes they did not label are 'unlabeled'.

    Written against the tables, not the view: the labels are aggregated first (one streaming
    pass in index order), the campaign's trials are read in ix_trials_blocks order, so the
    blocks group without a sort (benchmarks/store.py: 100k episodes in BENCHMARKS.md).
    """
    if not campaign_ids:
        return []
    ids = ",".join(str(int(c)) for c in campaign_ids)
    where = [f"t.campaign_id IN ({ids})", "e.counted"]
    params: dict[str, object] = {}
    if robots:
        where.append("r.name IN (" + ",".join(f":r{i}" for i in range(len(robots))) + ")")
        params.update({f"r{i}": r for i, r in enumerate(robots)})
    if stations:
        where.append("r.station IN (" + ",".join(f":s{i}" for i in range(len(stations))) + ")")
        params.update({f"s{i}": st for i, st in enumerate(stations)})
    if since is not None:
        where.append("e.ended_at >= :since")
        params["since"] = since
    if until is not None:
        where.append("e.ended_at < :until")
        params["until"] = until
    if evaluator is not None:
        votes = _EVALUATOR_VOTES
        params["evaluator"] = evaluator
    else:
        votes = _ALL_VOTES
    outer = ""
    if source is not None:
        outer = "WHERE outcome_source = :source"
        params["source"] = source
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SET LOCAL work_mem = '32MB'"))  # hash-aggregate in memory (see above)
    sql = f"""
WITH v AS ({votes}),
o AS (
    SELECT t.campaign_id AS campaign_id, t.task_id AS task_id, t.trial_index AS trial_index,
           (1 << cp.position) AS bit,
           CASE WHEN COALESCE(v.hy, 0) + COALESCE(v.hn, 0) > 0 THEN
                    CASE WHEN v.hy > v.hn THEN 'success' WHEN v.hn > v.hy THEN 'failure'
                         ELSE 'disputed' END
                WHEN COALESCE(v.sy, 0) + COALESCE(v.sn, 0) > 0 THEN
                    CASE WHEN v.sy > v.sn THEN 'success' WHEN v.sn > v.sy THEN 'failure'
                         ELSE 'disputed' END
                ELSE 'unlabeled' END AS outcome,
           CASE WHEN COALESCE(v.hy, 0) + COALESCE(v.hn, 0) > 0 THEN 'human'
                WHEN COALESCE(v.sy, 0) + COALESCE(v.sn, 0) > 0 THEN 'sim' END AS outcome_source
    FROM trials t
    JOIN episodes e ON e.trial_id = t.id
    JOIN campaign_policies cp ON cp.id = t.campaign_policy_id
    LEFT JOIN robots r ON r.id = e.robot_id
    LEFT JOIN v ON v.episode_id = e.id
    WHERE {" AND ".join(where)}
),
b AS (
    SELECT campaign_id, task_id, SUM(bit) AS present,
           SUM(CASE WHEN outcome = 'success' THEN bit ELSE 0 END) AS success,
           SUM(CASE WHEN outcome = 'failure' THEN bit ELSE 0 END) AS failure,
           SUM(CASE WHEN outcome = 'disputed' THEN bit ELSE 0 END) AS disputed
    FROM o {outer}
    GROUP BY campaign_id, task_id, trial_index
)
SELECT b.campaign_id, tk.key, tk.category, tk.difficulty, b.present, b.success, b.failure,
       b.disputed, COUNT(*)
FROM b JOIN tasks tk ON tk.id = b.task_id
GROUP BY b.campaign_id, tk.key, tk.category, tk.difficulty, b.present, b.success, b.failure,
         b.disputed
"""
    return [
        BlockPatternCount(int(c), k, cat, d, int(p), int(su), int(fa), int(di), int(n))
        for c, k, cat, d, p, su, fa, di, n in s.execute(text(sql), params)
    ]


#: Votes per episode, as v_episode_outcomes counts them (every label).
_ALL_VOTES = """
SELECT episode_id,
       SUM(CASE WHEN source = 'human' AND success THEN 1 ELSE 0 END) AS hy,
       SUM(CASE WHEN source = 'human' AND NOT success THEN 1 ELSE 0 END) AS hn,
       SUM(CASE WHEN source = 'sim' AND success THEN 1 ELSE 0 END) AS sy,
       SUM(CASE WHEN source = 'sim' AND NOT success THEN 1 ELSE 0 END) AS sn
FROM labels GROUP BY episode_id"""

#: One evaluator's own human label decides (no sim fallback).
_EVALUATOR_VOTES = """
SELECT episode_id,
       CASE WHEN success THEN 1 ELSE 0 END AS hy, CASE WHEN success THEN 0 ELSE 1 END AS hn,
       0 AS sy, 0 AS sn
FROM labels WHERE source = 'human' AND evaluator = :evaluator"""


@dataclass(frozen=True)
class CampaignPolicyPlan:
    campaign_id: int
    campaign: str
    policy_id: int
    policy: str
    version: str
    blind_code: str
    position: int
    planned: int  # trials planned for this policy (every status but not_needed)


def campaign_policy_plans(s: Session, campaign_ids: Sequence[int]) -> list[CampaignPolicyPlan]:
    """Each campaign's policies with their code, position and planned trials; trials a
    decided question made not needed (orchestrator.store.questions) are not planned any more,
    so they are not reported as lost."""
    if not campaign_ids:
        return []
    rows = s.execute(
        select(CampaignPolicy.campaign_id, Campaign.name, CampaignPolicy.policy_id, Policy.name,
               Policy.version, CampaignPolicy.blind_code, CampaignPolicy.position,
               func.count(Trial.id))
        .join(Campaign, Campaign.id == CampaignPolicy.campaign_id)
        .join(Policy, Policy.id == CampaignPolicy.policy_id)
        .outerjoin(Trial, (Trial.campaign_policy_id == CampaignPolicy.id)
                   & (Trial.status != TrialStatus.NOT_NEEDED))
        .where(CampaignPolicy.campaign_id.in_(list(campaign_ids)))
        .group_by(CampaignPolicy.campaign_id, Campaign.name, CampaignPolicy.policy_id,
                  Policy.name, Policy.version, CampaignPolicy.blind_code, CampaignPolicy.position)
        .order_by(CampaignPolicy.campaign_id, CampaignPolicy.position)
    )
    return [CampaignPolicyPlan(int(c), cn, int(p), pn, pv, code, int(pos), int(n))
            for c, cn, p, pn, pv, code, pos, n in rows]
