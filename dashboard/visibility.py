"""Who may see what on the dashboard (pure: no Streamlit, no SQL; unit-tested).

Two roles. Staff (named in EVALFLEET_STAFF, or in an OIDC group listed in
EVALFLEET_STAFF_GROUPS) see everything. Everyone else is an evaluator and sees blind views only:

- policies by their blind code, never by name, version or weights checksum, on every page
  (also after labelling: codes are per campaign, so one revealed name would unblind every
  other episode of that policy in the campaign); campaigns by number and protocol, since
  campaign names are free text that often names the policies;
- the simulator's verdict and other evaluators' labels only once they have labelled that
  episode themselves (no anchoring), and then without the other evaluators' names;
- Results always blind; the Disagreements tab's votes without names (their own is "you");
- free text written by the system (abort reasons, event details) with every policy name
  replaced by "[policy]";
- the Agreement tab's evaluators anonymised ("you", "evaluator 1", ...).

Who may act: steering campaigns (create, pause, resume, cancel, priority, re-queue) and
confirming a scene are staff-only; an e-stop is everyone's (safety). The pages disable or hide
what a viewer may not do, and dashboard/data.py checks again (`check`) before it writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from orchestrator.store.states import CampaignStatus

REDACTED = "[policy]"
DEFAULT_STAFF_GROUPS = "evalfleet-staff"


class Role(StrEnum):
    STAFF = "staff"
    EVALUATOR = "evaluator"


@dataclass(frozen=True)
class StaffConfig:
    """Who is staff: user names / e-mails and OIDC groups (compared case-insensitively)."""

    names: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, names: str = "", groups: str = DEFAULT_STAFF_GROUPS) -> StaffConfig:
        """From comma-separated lists, e.g. EVALFLEET_STAFF="alice,bob@lab.example"."""
        def split(raw: str) -> frozenset[str]:
            return frozenset(p.strip().lower() for p in (raw or "").split(",") if p.strip())

        return cls(split(names), split(groups))


def role_of(user: str | None, groups: Iterable[str], staff: StaffConfig) -> Role:
    """Staff if the user is named in the staff list or is in a staff group; else evaluator
    (also nobody signed in: the least a viewer can be)."""
    if user is None or not user.strip():
        return Role.EVALUATOR
    if user.strip().lower() in staff.names:
        return Role.STAFF
    if {str(g).strip().lower() for g in groups} & staff.groups:
        return Role.STAFF
    return Role.EVALUATOR


def is_blind(role: Role) -> bool:
    return role is not Role.STAFF


@dataclass(frozen=True)
class EpisodeView:
    """What the Episode page may show one viewer about one episode."""

    policy_identity: bool  # policy name, version, weights checksum (else: the blind code)
    campaign_name: bool  # else: campaign number and protocol
    sim_verdict: bool  # sim labels and "ended by" (a sim success ends the episode)
    other_labels: bool  # labels by other evaluators
    evaluator_names: bool  # who gave those labels
    audit_events: bool  # the episode's audit log (it carries labels and policy names)


def episode_view(role: Role, labelled_by_viewer: bool) -> EpisodeView:
    if role is Role.STAFF:
        return EpisodeView(True, True, True, True, True, True)
    return EpisodeView(
        policy_identity=False,
        campaign_name=False,
        sim_verdict=labelled_by_viewer,
        other_labels=labelled_by_viewer,
        evaluator_names=False,
        audit_events=False,
    )


@dataclass(frozen=True)
class ResultsView:
    blind: bool
    can_unblind: bool  # whether the page offers the "Blind" toggle


def results_view(role: Role, blind_requested: bool | None = None) -> ResultsView:
    """Staff see names unless they ask for blind; evaluators are always blind."""
    if role is Role.STAFF:
        return ResultsView(blind=bool(blind_requested), can_unblind=True)
    return ResultsView(blind=True, can_unblind=False)


def campaign_title(role: Role, campaign_id: int, name: str, protocol: str) -> str:
    if role is Role.STAFF:
        return f"{name} (#{campaign_id})"
    return f"#{campaign_id} · {protocol}"


def policy_title(role: Role, name: str, code: str) -> str:
    return f"{name} ({code})" if role is Role.STAFF else code


def redact(text: str, policy_names: Iterable[str], role: Role) -> str:
    """For evaluators, every policy name in `text` (any case) becomes "[policy]"."""
    if role is Role.STAFF or not text:
        return text
    names = sorted({n for n in policy_names if n}, key=len, reverse=True)
    if not names:
        return text
    pattern = re.compile("|".join(re.escape(n) for n in names), re.IGNORECASE)
    return pattern.sub(REDACTED, text)


def vote_text(votes: Sequence[tuple[str, bool]], role: Role, viewer: str | None) -> str:
    """A disagreement's votes: "ann: ✓, bob: ✗" for staff; for evaluators without names,
    their own vote first as "you", the others as bare marks (in verdict order, not by name)."""
    def mark(ok: bool) -> str:
        return "✓" if ok else "✗"

    if role is Role.STAFF:
        return ", ".join(f"{who}: {mark(ok)}" for who, ok in votes)
    mine = [ok for who, ok in votes if viewer is not None and who == viewer]
    others = sorted((ok for who, ok in votes if viewer is None or who != viewer), reverse=True)
    return ", ".join([*(f"you: {mark(ok)}" for ok in mine), *(mark(ok) for ok in others)])


class LabelLike(Protocol):
    @property
    def source(self) -> str: ...

    @property
    def evaluator(self) -> str: ...


L = TypeVar("L", bound=LabelLike)


def visible_labels(labels: Sequence[L], view: EpisodeView, viewer: str | None
                   ) -> list[tuple[str, L]]:
    """The labels one viewer may see on an episode, each with how to name its author."""
    out: list[tuple[str, L]] = []
    for lab in labels:
        own = lab.source == "human" and viewer is not None and lab.evaluator == viewer
        if lab.source == "sim":
            if view.sim_verdict:
                out.append(("simulator", lab))
        elif own:
            out.append((lab.evaluator if view.evaluator_names else "you", lab))
        elif view.other_labels:
            out.append((lab.evaluator if view.evaluator_names else "another evaluator", lab))
    return out


def has_labelled(labels: Iterable[LabelLike], viewer: str | None) -> bool:
    return viewer is not None and any(
        lab.source == "human" and lab.evaluator == viewer for lab in labels)


# --- who may act ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """Who is acting on a page: their name (None: nobody signed in) and role."""

    name: str | None
    role: Role

    @property
    def actor(self) -> str:
        """The name the audit log records."""
        return self.name or "dashboard"


class Action(StrEnum):
    CREATE_CAMPAIGN = "create a campaign"
    PAUSE = "pause a campaign"
    RESUME = "resume a campaign"
    CANCEL = "cancel a campaign"
    SET_PRIORITY = "change a campaign's priority"
    REQUEUE = "re-queue trials"
    CONFIRM_SCENE = "confirm a scene"
    ESTOP = "e-stop an arm"


STAFF_ONLY = frozenset(Action) - {Action.ESTOP}  # an e-stop is everyone's: safety first
STEERING_CAPTION = ("Pausing, resuming, cancelling, re-queuing, priorities, new campaigns and "
                    "scene confirmations are for staff (EVALFLEET_STAFF or a staff group); "
                    "E-STOP on the Fleet page is for everyone.")


class NotAllowed(PermissionError):
    """A viewer tried an action their role does not have (nothing was changed)."""


def may(role: Role, action: Action) -> bool:
    return role is Role.STAFF or action not in STAFF_ONLY


def check(viewer: Viewer, action: Action) -> None:
    """Raise NotAllowed, one line naming who and what, unless the viewer may do `action`."""
    if not may(viewer.role, action):
        raise NotAllowed(f"Not allowed: {viewer.name or 'a viewer who is not signed in'} is an "
                         f"{viewer.role.value} and only staff may {action.value} "
                         "(EVALFLEET_STAFF or a staff group); nothing was changed.")


STAFF_ONLY_HELP = "Staff only (EVALFLEET_STAFF or a staff group)."


@dataclass(frozen=True)
class CampaignControls:
    """A campaign's buttons on the Campaigns page for one viewer: True = enabled."""

    pause: bool
    resume: bool
    requeue: str | None  # the re-queue button's label, shown instead of Resume; None: Resume
    requeue_enabled: bool
    cancel: bool
    priority: bool
    why: str | None  # the help on the controls a viewer may not use (None: staff)


def campaign_controls(role: Role, status: str, given_up: int) -> CampaignControls:
    """Staff steer, evaluators see every control disabled. An incomplete campaign with
    given-up trials offers "Re-queue N given-up trials" instead of Resume (the store refuses
    to resume an incomplete campaign: nothing is left in its queue)."""
    steer = may(role, Action.PAUSE)
    requeue = None
    if status == CampaignStatus.INCOMPLETE and given_up > 0:
        requeue = f"Re-queue {given_up} given-up trial{'s' if given_up != 1 else ''}"
    return CampaignControls(
        pause=steer and status in (CampaignStatus.PENDING, CampaignStatus.RUNNING),
        resume=steer and status == CampaignStatus.PAUSED,
        requeue=requeue,
        requeue_enabled=steer and requeue is not None,
        cancel=steer and status not in (CampaignStatus.DONE, CampaignStatus.CANCELLED),
        priority=steer,
        why=None if steer else STAFF_ONLY_HELP,
    )


def evaluator_aliases(names: Iterable[str], role: Role, viewer: str | None) -> dict[str, str]:
    """How to show evaluators to this viewer: staff see names; an evaluator sees "you" for
    themselves and "evaluator 1", "evaluator 2", ... for the others, numbered in the order
    given (skipping the viewer), so the same list gives the same numbers on every rerun."""
    unique = list(dict.fromkeys(names))
    if role is Role.STAFF:
        return {n: n for n in unique}
    out: dict[str, str] = {}
    for n in unique:
        if viewer is not None and n == viewer:
            out[n] = "you"
        else:
            out[n] = f"evaluator {sum(1 for v in out.values() if v != 'you') + 1}"
    return out
