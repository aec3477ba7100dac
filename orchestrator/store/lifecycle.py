"""A campaign's lifecycle once its queue runs dry: done, or incomplete, and the way back.

A trial that used up its attempt budget is `given_up`; `cancelled` means a person cancelled
the campaign; `not_needed` means the campaign's declared questions were decided before it ran
(orchestrator.store.questions). A campaign whose trials are all closed is `done` only when
every planned trial has its counted episode or is not needed; with any trial given up or
cancelled it is `incomplete`, and
`evalfleet campaign requeue` brings those trials back with a fresh attempt budget (their
aborted episodes stay for the audit).

The rules (what a campaign becomes, how it is described) are pure functions over TrialTally;
the store functions below only read the counts and write the outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, case, func, select, update
from sqlalchemy.orm import Session

from orchestrator.store.campaigns import CampaignError, get_campaign, log_event
from orchestrator.store.models import (
    Campaign,
    CampaignPolicy,
    Episode,
    Policy,
    Task,
    Trial,
)
from orchestrator.store.states import CampaignStatus, EpisodeStatus, EventKind, TrialStatus

TRIAL_STATUSES: tuple[TrialStatus, ...] = tuple(TrialStatus)
REQUEUEABLE = (TrialStatus.GIVEN_UP, TrialStatus.CANCELLED)
# campaigns the runner serves (queue.ACTIVE_CAMPAIGN)
ACTIVE = (CampaignStatus.PENDING, CampaignStatus.RUNNING)
# requeue puts these back to pending
REOPENABLE = (CampaignStatus.DONE, CampaignStatus.INCOMPLETE, CampaignStatus.CANCELLED)
EXIT_INCOMPLETE = 3  # `campaign run` exit code when trials are left given up or cancelled


# --- pure -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialTally:
    """How many of a campaign's planned trials are in each status."""

    pending: int = 0
    leased: int = 0
    done: int = 0
    given_up: int = 0
    cancelled: int = 0
    # a declared question was decided before it ran (orchestrator.store.questions): closed,
    # never missing
    not_needed: int = 0

    @property
    def planned(self) -> int:
        return (self.pending + self.leased + self.done + self.given_up + self.cancelled
                + self.not_needed)

    @property
    def open(self) -> int:
        return self.pending + self.leased

    @property
    def missing(self) -> int:
        """Planned trials that will not be counted unless re-queued."""
        return self.given_up + self.cancelled

    @classmethod
    def of(cls, counts: dict[str, int]) -> TrialTally:
        unknown = set(counts) - set(TRIAL_STATUSES)
        if unknown:
            raise ValueError(f"unknown trial status {sorted(unknown)}")
        return cls(**{k: int(v) for k, v in counts.items()})


def settled_status(tally: TrialTally) -> CampaignStatus | None:
    """What an active campaign becomes: None while trials are open, else done or incomplete."""
    if tally.open:
        return None
    return CampaignStatus.INCOMPLETE if tally.missing else CampaignStatus.DONE


def missing_text(tally: TrialTally) -> str:
    """'3 given up', '2 given up, 1 cancelled' or ''."""
    parts = [f"{n} {what}" for n, what in ((tally.given_up, "given up"),
                                            (tally.cancelled, "cancelled")) if n]
    return ", ".join(parts)


def progress_text(status: str, tally: TrialTally) -> str:
    """`campaign list`'s cell: 'incomplete 57/60 (3 given up)', 'done 60/60', 'running 4/60',
    'done 40/60 (20 not needed)'."""
    notes = [m for m in (missing_text(tally),
                         f"{tally.not_needed} not needed" if tally.not_needed else "") if m]
    return f"{status} {tally.done}/{tally.planned}" + (f" ({', '.join(notes)})" if notes else "")


def shorten_reason(reason: str, width: int) -> str:
    """An abort reason in at most `width` characters, keeping its head: the arm, the error
    code and the arm's own message come first ("arm ur5-1 prepare failed: DRIVER_ERROR: gripper
    stuck (bridge at tcp://... refused reset)"), so the trailing "(where it came from)" is
    shortened first (to "(…)"), and only then the reason is cut from its end."""
    if len(reason) <= width:
        return reason
    if reason.endswith(")"):
        at = reason.rfind(" (")
        head = reason[:at].rstrip() if at > 0 else ""
        if head and "(" not in reason[at + 2:] and len(head) + 4 <= width:
            return head + " (…)"
        if head and "(" not in reason[at + 2:]:
            reason = head
    return reason if len(reason) <= width else reason[: width - 1] + "…"


def reasons_text(reasons: Iterable[str], limit: int = 3, width: int = 200) -> str:
    """Distinct abort reasons, most frequent first, each shortened to `width` (shorten_reason:
    the arm, the bridge's error code and the arm's message come first in a reason and are
    kept; where it came from, the endpoint, goes first)."""
    counted = Counter(" ".join(r.split()) for r in reasons if r)
    if not counted:
        return "no abort reason recorded"
    out = []
    for reason, n in counted.most_common(limit):
        out.append(shorten_reason(reason, width) + (f" (x{n})" if n > 1 else ""))
    more = len(counted) - limit
    return "; ".join(out) + (f"; and {more} other reason(s)" if more > 0 else "")


@dataclass(frozen=True)
class MissingTrial:
    """A given-up or cancelled trial, with the reason its last attempt aborted."""

    trial_id: int
    status: str
    task_key: str
    policy: str
    blind_code: str
    trial_index: int
    attempts: int
    last_reason: str | None


@dataclass(frozen=True)
class CampaignState:
    campaign_id: int
    name: str
    status: str
    tally: TrialTally
    missing: tuple[MissingTrial, ...]


def incomplete_message(state: CampaignState) -> str:
    """The one paragraph `campaign run` ends with when trials are missing."""
    t = state.tally
    reasons = reasons_text(m.last_reason or "" for m in state.missing
                           if m.status == TrialStatus.GIVEN_UP)
    what = []
    if t.given_up:
        what.append(f"{t.given_up} of {t.planned} trials given up (last reasons: {reasons})")
    if t.cancelled:
        what.append(f"{t.cancelled} of {t.planned} trials cancelled")
    flag = "" if t.given_up else " --status cancelled"
    return (f"campaign {state.name} incomplete: {'; '.join(what)}; "
            f"`evalfleet campaign requeue {state.name}{flag}` re-queues them")


@dataclass(frozen=True)
class RequeueResult:
    campaign_id: int
    name: str
    trial_ids: tuple[int, ...]
    previous_status: str
    status: str


def requeue_status(campaign_status: str) -> str:
    """The campaign's status once trials are back in its queue (paused stays paused)."""
    return CampaignStatus.PENDING if campaign_status in REOPENABLE else campaign_status


# --- store ------------------------------------------------------------------------------


def trial_tallies(s: Session, campaign_ids: Sequence[int] | None = None) -> dict[int, TrialTally]:
    stmt = select(Trial.campaign_id, Trial.status, func.count()).group_by(
        Trial.campaign_id, Trial.status
    )
    if campaign_ids is not None:
        stmt = stmt.where(Trial.campaign_id.in_(list(campaign_ids)))
    raw: dict[int, dict[str, int]] = {}
    for cid, status, n in s.execute(stmt):
        raw.setdefault(cid, {})[status] = n
    ids = campaign_ids if campaign_ids is not None else list(raw)
    return {cid: TrialTally.of(raw.get(cid, {})) for cid in ids}


def missing_trials(s: Session, campaign_id: int) -> list[MissingTrial]:
    """Given-up and cancelled trials of a campaign, in plan order, with their last abort."""
    last_ep = (
        select(Episode.trial_id, func.max(Episode.id).label("eid"))
        .where(Episode.status == EpisodeStatus.ABORTED)
        .group_by(Episode.trial_id)
        .subquery()
    )
    rows = s.execute(
        select(Trial.id, Trial.status, Task.key, Policy.name, CampaignPolicy.blind_code,
               Trial.trial_index, Trial.attempts, Episode.abort_reason)
        .join(Task, Task.id == Trial.task_id)
        .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
        .join(Policy, Policy.id == CampaignPolicy.policy_id)
        .outerjoin(last_ep, last_ep.c.trial_id == Trial.id)
        .outerjoin(Episode, Episode.id == last_ep.c.eid)
        .where(Trial.campaign_id == campaign_id, Trial.status.in_(REQUEUEABLE))
        .order_by(Trial.plan_order)
    )
    return [MissingTrial(*r) for r in rows]


def campaign_state(s: Session, name_or_id: str | int) -> CampaignState:
    c = get_campaign(s, name_or_id)
    tally = trial_tallies(s, [c.id])[c.id]
    missing = tuple(missing_trials(s, c.id)) if tally.missing else ()
    return CampaignState(c.id, c.name, c.status, tally, missing)


def settle_campaigns(s: Session) -> list[tuple[int, CampaignStatus]]:
    """Close active campaigns whose queue is empty: done, or incomplete (audited)."""
    active = list(s.scalars(select(Campaign).where(Campaign.status.in_(ACTIVE))))
    tallies = trial_tallies(s, [c.id for c in active])
    out = []
    for c in active:
        tally = tallies[c.id]
        status = settled_status(tally)
        if status is None:
            continue
        c.status = status
        log_event(s, EventKind.campaign(status), campaign_id=c.id, planned=tally.planned,
                  done=tally.done, given_up=tally.given_up, cancelled=tally.cancelled,
                  not_needed=tally.not_needed)
        out.append((c.id, status))
    return out


def requeue_trials(
    s: Session,
    name_or_id: str | int,
    *,
    statuses: Sequence[str] = (TrialStatus.GIVEN_UP,),
    trial_ids: Sequence[int] | None = None,
    actor: str = "cli",
) -> RequeueResult:
    """Put a campaign's given-up (and, if asked, cancelled) trials back in its queue, each with
    a fresh attempt budget, and reopen the campaign. Earlier episodes are kept, and so is the
    attempt count (episodes keep unique attempt numbers): requeued_at_attempt marks where the
    new budget starts (queue.abort_episode counts only later attempts' aborts). Raises
    CampaignError (nothing changed) when there is nothing to re-queue or an id is not one of
    the campaign's trials in those statuses."""
    if TrialStatus.NOT_NEEDED in statuses:
        raise CampaignError(
            "--status not_needed: those trials were left out because a declared question was "
            "decided, and a decision is final; create a new campaign to run them")
    bad = sorted(set(statuses) - set(REQUEUEABLE))
    if bad or not statuses:
        raise CampaignError(f"--status {', '.join(bad) or '(none)'}: one of {', '.join(REQUEUEABLE)}")
    c = get_campaign(s, name_or_id)
    if c.status == CampaignStatus.CANCELLED and TrialStatus.CANCELLED not in statuses:
        raise CampaignError(
            f"campaign {c.name} was cancelled: `evalfleet campaign requeue {c.name} "
            "--status cancelled` re-queues its cancelled trials and reopens it")
    stmt = select(Trial.id, Trial.status, Trial.attempts).where(Trial.campaign_id == c.id)
    if trial_ids is not None:
        stmt = stmt.where(Trial.id.in_(list(trial_ids)))
    rows = {tid: (status, attempts) for tid, status, attempts in s.execute(stmt)}
    if trial_ids is not None:
        wrong = [t for t in trial_ids if t not in rows or rows[t][0] not in statuses]
        if wrong:
            shown = ", ".join(
                f"{t} ({rows[t][0]})" if t in rows else f"{t} (not in {c.name})" for t in wrong)
            raise CampaignError(
                f"cannot re-queue trial(s) {shown}: only {' or '.join(statuses)} trials of "
                f"{c.name} can; `evalfleet campaign show {c.name}` lists them")
    chosen = sorted(t for t, (status, _) in rows.items() if status in statuses)
    if not chosen:
        raise CampaignError(
            f"campaign {c.name} has no {' or '.join(statuses)} trials to re-queue")
    res = cast("CursorResult[Any]", s.execute(  # an UPDATE: a cursor result
        update(Trial)
        .where(Trial.id.in_(chosen), Trial.status.in_(list(statuses)))
        .values(status=TrialStatus.PENDING, requeued_at_attempt=Trial.attempts, lease_holder=None,
                lease_expires_at=None)
        .execution_options(synchronize_session=False)
    ))
    if res.rowcount != len(chosen):  # pragma: no cover - the write transaction holds them
        raise CampaignError(f"campaign {c.name}: trials changed while re-queuing; try again")
    previous = c.status
    c.status = requeue_status(previous)
    log_event(s, EventKind.TRIALS_REQUEUED, actor=actor, campaign_id=c.id, trials=chosen,
              statuses=list(statuses), previous_status=previous, status=c.status,
              attempts={str(t): rows[t][1] for t in chosen})
    return RequeueResult(c.id, c.name, tuple(chosen), previous, c.status)


def status_counts_by_policy(s: Session, campaign_id: int) -> list[tuple[str, str, dict[str, int]]]:
    """(policy, blind code, {trial status: n}) per policy, in report order."""
    rows = s.execute(
        select(Policy.name, CampaignPolicy.blind_code, CampaignPolicy.position,
               *[func.sum(case((Trial.status == st, 1), else_=0)) for st in TRIAL_STATUSES])
        .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
        .join(Policy, Policy.id == CampaignPolicy.policy_id)
        .where(Trial.campaign_id == campaign_id)
        .group_by(Policy.name, CampaignPolicy.blind_code, CampaignPolicy.position)
        .order_by(CampaignPolicy.position)
    )
    return [(r[0], r[1], {st: int(n or 0) for st, n in zip(TRIAL_STATUSES, r[3:])}) for r in rows]
