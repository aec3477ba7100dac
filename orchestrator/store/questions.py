"""A campaign's declared questions in the store: declared at creation, re-evaluated as outcomes
resolve, and the trials a decided question no longer needs taken out of the queue.

The statistics and every rule are pure (protocols.questions, protocols.sequential); this module
reads the outcomes and writes the standing. Outcomes are resolved as the report resolves them
(v_episode_outcomes: human labels override the simulator's, the majority decides, a tie is
disputed); auto labels (success detectors) are never used for stopping. Each function runs in
the caller's transaction, except evaluate_campaign given a Store (one write transaction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, and_, case, func, select, update
from sqlalchemy.orm import Session

from orchestrator.store.campaigns import CampaignError, log_event
from orchestrator.store.models import (
    Campaign,
    CampaignPolicy,
    CampaignQuestion,
    Episode,
    Label,
    Policy,
    Task,
    Trial,
    utcnow,
)
from orchestrator.store.states import (
    CampaignStatus,
    EventKind,
    LabelSource,
    QuestionKind,
    QuestionState,
    TrialStatus,
)
from protocols import sequential as seq
from protocols.questions import (
    QuestionSpec,
    ResolvedOutcome,
    Scope,
    StoredStanding,
    late_count,
    not_needed,
    ordered_outcomes,
    resolved_success,
    scope_cap,
    standing,
)
from protocols.report_questions import QuestionLine

if TYPE_CHECKING:
    from orchestrator.store.db import Store
    from protocols.loader import LoadedProtocol

# campaigns whose questions the runner keeps evaluating
EVALUATED = (CampaignStatus.PENDING, CampaignStatus.RUNNING, CampaignStatus.PAUSED)


@dataclass(frozen=True)
class QuestionStanding:
    """Where one question stands after an evaluation."""

    question_id: int
    position: int
    state: QuestionState
    outcomes: int  # outcomes the test used
    late: int  # resolved after the decision
    e_value: float  # futility e-value for no_difference, else the efficacy e-value
    decided_after: int | None
    trials_saved: int  # trials it made not needed (never leased)

    @property
    def decided(self) -> bool:
        return self.state is not QuestionState.RUNNING


# --- declaring -------------------------------------------------------------------------------


def add_questions(
    s: Session,
    campaign_id: int,
    loaded: LoadedProtocol,
    policies: Mapping[str, CampaignPolicy],
    specs: Sequence[QuestionSpec],
    trials_per_task: int,
) -> list[CampaignQuestion]:
    """Store a new campaign's questions (create_campaign's transaction). `policies` maps every
    way a policy was named (as given to --policy, and its registered name) to its campaign
    policy. CampaignError (one line) for a policy not in the campaign, a category none of the
    protocol's tasks has, or rates protocols.sequential refuses."""
    counts: dict[str, int] = {}
    for task in loaded.protocol.tasks:
        counts[str(task.category)] = counts.get(str(task.category), 0) + 1
    rows = []
    for position, spec in enumerate(specs):
        where = f"question {position + 1} ({spec.kind.value}:{spec.policy_a}"
        where += f",{spec.policy_b})" if spec.policy_b else f"@{spec.threshold})"
        names = [spec.policy_a] + ([spec.policy_b] if spec.policy_b else [])
        for name in names:
            if name not in policies:
                known = ", ".join(sorted(policies))
                raise CampaignError(f"{where}: policy {name!r} is not one of the campaign's "
                                    f"--policy ({known})")
        if spec.category is not None and spec.category not in counts:
            raise CampaignError(
                f"{where}: category={spec.category!r} is not a category of protocol "
                f"{loaded.protocol.name}'s tasks (its categories: {', '.join(sorted(counts))}); "
                "leave category out for every task")
        tasks = counts[spec.category] if spec.category else sum(counts.values())
        try:
            question = spec.question(scope_cap(spec.cap, tasks * trials_per_task))
            fixed = seq.fixed_n(question)
        except ValueError as e:
            raise CampaignError(f"{where}: {e}") from None
        a = policies[spec.policy_a]
        b = policies[spec.policy_b] if spec.policy_b else None
        if b is not None and a.id == b.id:
            raise CampaignError(f"{where}: both sides name the same policy")
        row = CampaignQuestion(
            campaign_id=campaign_id, position=position, kind=QuestionKind(spec.kind.value),
            policy_a_id=a.id, policy_b_id=b.id if b is not None else None,
            category=spec.category, threshold=question.threshold, alpha=question.alpha,
            power=question.power, min_effect=question.min_effect, cap=question.cap,
            two_sided=question.two_sided, discordance=question.discordance, fixed_n=fixed,
            state=QuestionState.RUNNING, outcomes=0, late=0, e_value=1.0, trials_saved=0)
        s.add(row)
        rows.append(row)
    s.flush()
    return rows


def question_of(row: CampaignQuestion) -> seq.Question:
    """The stored declaration as protocols.sequential's Question."""
    return seq.Question(seq.QuestionKind(row.kind), alpha=row.alpha, power=row.power,
                        min_effect=row.min_effect, cap=row.cap, threshold=row.threshold,
                        two_sided=row.two_sided, discordance=row.discordance)


# --- evaluating ------------------------------------------------------------------------------


def resolved_outcomes(s: Session, campaign_id: int,
                      policies: Sequence[int]) -> list[tuple[str, ResolvedOutcome]]:
    """(task category, outcome) of every counted episode of these campaign policies whose
    outcome is resolved (success or failure by the report's rule), with when it resolved."""
    human = Label.source == LabelSource.HUMAN
    sim = Label.source == LabelSource.SIM
    votes = (
        select(
            Label.episode_id,
            func.sum(case((and_(human, Label.success), 1), else_=0)).label("hy"),
            func.sum(case((and_(human, ~Label.success), 1), else_=0)).label("hn"),
            func.sum(case((and_(sim, Label.success), 1), else_=0)).label("sy"),
            func.sum(case((and_(sim, ~Label.success), 1), else_=0)).label("sn"),
            func.min(case((human, Label.created_at))).label("human_at"),  # its first
        )
        .join(Episode, Episode.id == Label.episode_id)
        .join(Trial, Trial.id == Episode.trial_id)
        .where(Label.source.in_((LabelSource.HUMAN, LabelSource.SIM)),  # never auto labels
               Trial.campaign_id == campaign_id, Episode.counted,
               Trial.campaign_policy_id.in_(list(policies)))
        .group_by(Label.episode_id)
        .subquery()
    )
    rows = s.execute(
        select(Episode.id, Trial.campaign_policy_id, Trial.task_id, Trial.trial_index,
               Task.category, Episode.ended_at, Episode.started_at, votes.c.hy, votes.c.hn,
               votes.c.sy, votes.c.sn, votes.c.human_at)
        .join(Trial, Trial.id == Episode.trial_id)
        .join(Task, Task.id == Trial.task_id)
        .join(votes, votes.c.episode_id == Episode.id)
        .where(Trial.campaign_id == campaign_id, Episode.counted,
               Trial.campaign_policy_id.in_(list(policies)))
    )
    out = []
    for eid, cp, task, index, category, ended, started, hy, hn, sy, sn, human_at in rows:
        hy, hn, sy, sn = (int(v or 0) for v in (hy, hn, sy, sn))
        success = resolved_success(hy, hn, sy, sn)
        if success is None:
            continue
        at = ended or started
        if hy + hn > 0 and human_at is not None:
            at = _as_datetime(human_at)
        out.append((category, ResolvedOutcome(eid, cp, task, index, success, at)))
    return out


def _as_datetime(value: Any) -> datetime:
    """MIN() over a CASE may come back as text on SQLite; a datetime on PostgreSQL."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a campaign's questions: where each stands, and the trials it made
    not needed just now (the runner's progress shrinks by them)."""

    standings: tuple[QuestionStanding, ...]
    marked_not_needed: tuple[int, ...] = ()


def evaluate(s: Session, campaign_id: int) -> Evaluation:
    """evaluate_campaign, in the caller's session, also returning the trials marked now."""
    rows = list(s.scalars(select(CampaignQuestion)
                          .where(CampaignQuestion.campaign_id == campaign_id)
                          .order_by(CampaignQuestion.position)))
    if not rows:
        return Evaluation(())
    pols = sorted({r.policy_a_id for r in rows} | {r.policy_b_id for r in rows
                                                   if r.policy_b_id is not None})
    outcomes = resolved_outcomes(s, campaign_id, pols)
    now = utcnow()
    for row in rows:
        mine = [o for cat, o in outcomes if row.category is None or cat == row.category]
        fed = ordered_outcomes(seq.QuestionKind(row.kind), row.policy_a_id, row.policy_b_id,
                               mine)
        stored = StoredStanding(seq.Decision(row.state), row.outcomes, row.decided_after)
        new = standing(question_of(row), stored, fed)
        if new is None:  # decided: sticky, only its late outcomes grow
            late = late_count(stored, len(fed))
            if late != row.late:
                row.late, row.updated_at = late, now
            continue
        if not new.newly_decided:
            if (new.outcomes, new.e_value) != (row.outcomes, row.e_value):
                row.outcomes, row.e_value, row.updated_at = new.outcomes, new.e_value, now
            continue
        res = s.execute(  # decided once, even with two orchestrators evaluating at once
            update(CampaignQuestion)
            .where(CampaignQuestion.id == row.id,
                   CampaignQuestion.state == QuestionState.RUNNING)
            .values(state=QuestionState(new.state.value), outcomes=new.outcomes,
                    late=new.late, e_value=new.e_value, decided_after=new.decided_after,
                    decided_at=now, updated_at=now)
            .execution_options(synchronize_session="fetch"))
        if cast("CursorResult[Any]", res).rowcount == 1:
            log_event(s, EventKind.QUESTION_DECIDED, campaign_id=campaign_id,
                      question_id=row.id, position=row.position, state=new.state.value,
                      e_value=new.e_value, outcomes=new.outcomes, fixed_n=row.fixed_n)
    s.flush()
    marked = mark_not_needed(s, campaign_id, rows)
    return Evaluation(tuple(QuestionStanding(r.id, r.position, QuestionState(r.state),
                                             r.outcomes, r.late, r.e_value, r.decided_after,
                                             r.trials_saved) for r in rows), marked)


def evaluate_campaign(store_or_session: Store | Session,
                      campaign_id: int) -> tuple[QuestionStanding, ...]:
    """Re-evaluate every question of a campaign on its resolved outcomes, persist the
    standings (a decision is sticky and logged once), and mark the pending trials that only
    decided questions cover not needed. Given a Store, in one write transaction."""
    if isinstance(store_or_session, Session):
        return evaluate(store_or_session, campaign_id).standings
    with store_or_session.write() as s:
        return evaluate(s, campaign_id).standings


def mark_not_needed(s: Session, campaign_id: int,
                    rows: Sequence[CampaignQuestion] | None = None) -> tuple[int, ...]:
    """Pending (never leased) trials whose every covering question is decided become
    not_needed; each counts in the trials_saved of the covering question decided last. Trials
    no question covers are the fixed plan and still run; leased ones finish and count (one
    that aborts back to pending is taken out at the next evaluation)."""
    if rows is None:
        rows = list(s.scalars(select(CampaignQuestion)
                              .where(CampaignQuestion.campaign_id == campaign_id)))
    if not rows or all(r.state == QuestionState.RUNNING for r in rows):
        return ()
    scopes = [Scope(r.id, frozenset(p for p in (r.policy_a_id, r.policy_b_id) if p is not None),
                    r.category, r.state == QuestionState.RUNNING,
                    r.decided_at.timestamp() if r.decided_at is not None else 0.0)
              for r in rows]
    pending = s.execute(
        select(Trial.id, Trial.campaign_policy_id, Task.category)
        .join(Task, Task.id == Trial.task_id)
        .where(Trial.campaign_id == campaign_id, Trial.status == TrialStatus.PENDING)
    )
    by_question: dict[int, list[int]] = {}
    for tid, cp, category in pending:
        qid = not_needed(scopes, cp, category)
        if qid is not None:
            by_question.setdefault(qid, []).append(tid)
    taken: dict[int, list[int]] = {}
    for qid, ids in by_question.items():
        got = s.scalars(  # a trial leased meanwhile stays leased
            update(Trial).where(Trial.id.in_(ids), Trial.status == TrialStatus.PENDING)
            .values(status=TrialStatus.NOT_NEEDED).returning(Trial.id)
            .execution_options(synchronize_session=False)).all()
        if got:
            taken[qid] = sorted(got)
            s.execute(update(CampaignQuestion).where(CampaignQuestion.id == qid)
                      .values(trials_saved=CampaignQuestion.trials_saved + len(got))
                      .execution_options(synchronize_session="fetch"))
    if not taken:
        return ()
    ids = sorted(t for got in taken.values() for t in got)
    log_event(s, EventKind.TRIALS_NOT_NEEDED, campaign_id=campaign_id, trials=ids,
              questions={str(q): len(t) for q, t in sorted(taken.items())})
    return tuple(ids)


def campaigns_to_evaluate(s: Session, campaign_ids: Sequence[int] | None = None) -> list[int]:
    """Campaigns still running (pending, running, paused) that declared questions: the
    runner evaluates these as outcomes and human labels arrive."""
    stmt = (select(CampaignQuestion.campaign_id).distinct()
            .join(Campaign, Campaign.id == CampaignQuestion.campaign_id)
            .where(Campaign.status.in_(EVALUATED)))
    if campaign_ids is not None:
        stmt = stmt.where(CampaignQuestion.campaign_id.in_(list(campaign_ids)))
    return sorted(int(c) for c in s.scalars(stmt))


# --- reading (report, campaign show, dashboard) ---------------------------------------------


def question_lines(s: Session, campaign_ids: Sequence[int]) -> list[QuestionLine]:
    """Every question of these campaigns with its standing, in campaign and position order."""
    if not campaign_ids:
        return []
    names = {cp.id: (name, cp.blind_code) for cp, name in s.execute(
        select(CampaignPolicy, Policy.name).join(Policy, Policy.id == CampaignPolicy.policy_id)
        .where(CampaignPolicy.campaign_id.in_(list(campaign_ids))))}
    campaigns = {c: name for c, name in s.execute(
        select(Campaign.id, Campaign.name).where(Campaign.id.in_(list(campaign_ids))))}
    rows = s.scalars(select(CampaignQuestion)
                     .where(CampaignQuestion.campaign_id.in_(list(campaign_ids))))
    order = {c: i for i, c in enumerate(campaign_ids)}
    out = []
    for r in sorted(rows, key=lambda r: (order.get(r.campaign_id, 0), r.position)):
        a, code_a = names[r.policy_a_id]
        b, code_b = names[r.policy_b_id] if r.policy_b_id is not None else (None, None)
        out.append(QuestionLine(
            campaign_id=r.campaign_id, campaign=campaigns[r.campaign_id], position=r.position,
            question=question_of(r), policy_a=a, code_a=code_a, policy_b=b, code_b=code_b,
            category=r.category, fixed_n=r.fixed_n, state=seq.Decision(r.state),
            outcomes=r.outcomes, late=r.late, e_value=r.e_value,
            decided_after=r.decided_after, not_needed=r.trials_saved))
    return out
