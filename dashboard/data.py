"""Store access for every page: one engine per process and database (st.cache_resource),
cached reads (st.cache_data with a ttl, keyed by the database URL) and the writes, which clear
the caches they make stale. Pages call only this module (and protocols.stats).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import streamlit as st

from dashboard.visibility import Action, Viewer, check
from orchestrator.config import get_settings
from orchestrator.reporting import ReportFilters, build_report_for_ids
from orchestrator.store import audit, browse, queries
from orchestrator.store.audit import AuditProgress
from orchestrator.store.campaigns import (
    create_campaign as _create_campaign,
)
from orchestrator.store.campaigns import (
    set_campaign_priority,
    set_campaign_status,
)
from orchestrator.store.db import Store
from orchestrator.store.labels import LabelInput, LastLabel, OnScreen, UndoInput, Undone, last_label
from orchestrator.store.labels import save_label as _save_label
from orchestrator.store.labels import undo_last_label as _undo_last_label
from orchestrator.store.lifecycle import RequeueResult, TrialTally, requeue_trials, trial_tallies
from protocols.report import Report
from protocols.report_ppi import PpiReport

SHORT_TTL = 3  # queues, fleet, prompts: several people work at once
REPORT_TTL = 60


@dataclass(frozen=True)
class ReportQuery:
    campaign_ids: tuple[int, ...]
    test: str = "mcnemar"
    blind: bool = False
    filters: ReportFilters = field(default_factory=ReportFilters)
    evaluator: str | None = None  # only this evaluator's labels decide (browse-side filter)


def database_url() -> str:
    return get_settings().resolved_database_url


def media_dir() -> Path:
    return get_settings().media_dir


@st.cache_resource(show_spinner=False, on_release=lambda s: s.close())
def _store_for(url: str) -> Store:
    return Store.open(url)


def store() -> Store:
    """The process-wide store (one engine and pool, shared by every session)."""
    return _store_for(database_url())


def clear_caches() -> None:
    st.cache_data.clear()


# --- campaigns and results --------------------------------------------------------------------


@st.cache_data(ttl=SHORT_TTL, show_spinner=False)
def _campaigns(url: str) -> list[queries.CampaignSummary]:
    with _store_for(url).read() as s:
        return queries.list_campaigns(s)


def campaigns() -> list[queries.CampaignSummary]:
    return _campaigns(database_url())


@st.cache_data(ttl=SHORT_TTL, show_spinner=False)
def _progress(url: str, campaign_id: int) -> list[tuple[str, str | None, int, int]]:
    with _store_for(url).read() as s:
        return queries.progress_by_category(s, campaign_id)


def progress(campaign_id: int) -> list[tuple[str, str | None, int, int]]:
    return _progress(database_url(), campaign_id)


@st.cache_data(ttl=REPORT_TTL, show_spinner=False)
def _report(url: str, q: ReportQuery) -> Report:
    # the very function `evalfleet report` uses; an evaluator filter is one of its filters
    filters = replace(q.filters, evaluator=q.evaluator,
                      source=None if q.evaluator else q.filters.source)
    return build_report_for_ids(_store_for(url), q.campaign_ids, test=q.test, blind=q.blind,
                                filters=filters)


def report(q: ReportQuery) -> Report:
    return _report(database_url(), q)


@st.cache_data(ttl=REPORT_TTL, show_spinner=False)
def _filter_options(url: str, ids: tuple[int, ...]) -> browse.FilterOptions:
    with _store_for(url).read() as s:
        return browse.filter_options(s, ids)


def filter_options(ids: tuple[int, ...]) -> browse.FilterOptions:
    return _filter_options(database_url(), ids)


@st.cache_data(ttl=REPORT_TTL, show_spinner=False)
def _human_vs_sim(url: str, ids: tuple[int, ...], f: ReportFilters) -> list[browse.HumanSimCount]:
    with _store_for(url).read() as s:
        return browse.human_vs_sim(s, ids, robots=f.robots, stations=f.stations, since=f.since,
                                   until=f.until)


def human_vs_sim(ids: tuple[int, ...], f: ReportFilters) -> list[browse.HumanSimCount]:
    return _human_vs_sim(database_url(), ids, f)


@st.cache_data(ttl=SHORT_TTL, show_spinner=False)
def _policies(url: str) -> list[tuple[str, str, str]]:
    with _store_for(url).read() as s:
        return browse.registered_policies(s)


def policies() -> list[tuple[str, str, str]]:
    return _policies(database_url())


def create_campaign(*, name: str, protocol: str, policy_names: list[str], trials: int, seed: int,
                    priority: int, viewer: Viewer) -> int:
    """Plan and queue a campaign; raises CampaignError / ProtocolError with a clear message,
    NotAllowed (dashboard.visibility) unless the viewer is staff."""
    from protocols.loader import load_protocol, resolve_protocol_path

    check(viewer, Action.CREATE_CAMPAIGN)
    loaded = load_protocol(resolve_protocol_path(protocol))
    with store().write() as s:
        c = _create_campaign(s, name=name, loaded=loaded, policy_names=policy_names,
                             trials_per_task=trials, seed=seed, priority=priority,
                             created_by=viewer.actor)
        cid = c.id
    clear_caches()
    return cid


STATUS_ACTIONS = {"paused": Action.PAUSE, "cancelled": Action.CANCEL}  # else: resume


def set_status(campaign_id: int, status: str, viewer: Viewer) -> None:
    """Pause / resume / cancel (staff only: NotAllowed otherwise; CampaignError from the
    store)."""
    check(viewer, STATUS_ACTIONS.get(status, Action.RESUME))
    with store().write() as s:
        set_campaign_status(s, campaign_id, status, actor=viewer.actor)
    clear_caches()


def set_priority(campaign_id: int, priority: int, viewer: Viewer) -> None:
    check(viewer, Action.SET_PRIORITY)
    with store().write() as s:
        set_campaign_priority(s, campaign_id, priority, actor=viewer.actor)
    clear_caches()


def requeue_given_up(campaign_id: int, viewer: Viewer) -> RequeueResult:
    """Re-queue an incomplete campaign's given-up trials (orchestrator.store.lifecycle; staff
    only; audited as `trials_requeued` with the viewer as actor)."""
    check(viewer, Action.REQUEUE)
    with store().write() as s:
        result = requeue_trials(s, campaign_id, statuses=("given_up",), actor=viewer.actor)
    clear_caches()
    return result


@st.cache_data(ttl=SHORT_TTL, show_spinner=False)
def _tallies(url: str) -> dict[int, TrialTally]:
    with _store_for(url).read() as s:
        return trial_tallies(s)


def tally(campaign_id: int) -> TrialTally:
    """How many of the campaign's trials are pending / leased / done / given up / cancelled."""
    return _tallies(database_url()).get(campaign_id, TrialTally())


# --- labeling ---------------------------------------------------------------------------------


@st.cache_data(ttl=SHORT_TTL, show_spinner=False)
def _label_queue(url: str, evaluator: str, ids: tuple[int, ...], max_labels: int | None
                 ) -> tuple[list[browse.QueueItem], int]:
    with _store_for(url).read() as s:
        return browse.label_queue(s, evaluator=evaluator, campaign_ids=ids or None,
                                  max_human_labels=max_labels)


def label_queue(evaluator: str, ids: tuple[int, ...] = (), max_labels: int | None = None
                ) -> tuple[list[browse.QueueItem], int]:
    return _label_queue(database_url(), evaluator, ids, max_labels)


@st.cache_data(ttl=SHORT_TTL, show_spinner=False)
def _audit_progress(url: str, ids: tuple[int, ...]) -> list[AuditProgress]:
    with _store_for(url).read() as s:
        return audit.audit_progress(s, ids or None)


def audit_progress(ids: tuple[int, ...] = ()) -> list[AuditProgress]:
    """Per campaign with an audit rate: its sample and how much of it humans labelled."""
    return _audit_progress(database_url(), ids)


@st.cache_data(ttl=REPORT_TTL, show_spinner=False)
def _detectors(url: str, ids: tuple[int, ...]) -> list[str]:
    with _store_for(url).read() as s:
        return audit.detectors_with_labels(s, ids)


def detectors(ids: tuple[int, ...]) -> list[str]:
    """Detectors with auto labels on these campaigns (the Results page's PPI selector)."""
    return _detectors(database_url(), ids)


@st.cache_data(ttl=REPORT_TTL, show_spinner=False)
def _ppi_report(url: str, ids: tuple[int, ...], detector: str, blind: bool) -> PpiReport:
    with _store_for(url).read() as s:
        return audit.build_ppi(s, list(ids), detector, blind=blind)


def ppi_report(ids: tuple[int, ...], detector: str, blind: bool) -> PpiReport:
    """The PPI section (orchestrator.store.audit.build_ppi, as `report --detector`);
    ValueError / CampaignError with a one-line reason."""
    return _ppi_report(database_url(), ids, detector, blind)


def blind_episode(episode_id: int, evaluator: str) -> browse.BlindEpisode:
    with store().read() as s:  # never cached: the label version must be fresh
        return browse.blind_episode(s, episode_id, evaluator=evaluator)


@st.cache_data(ttl=REPORT_TTL, show_spinner=False)
def _steps(url: str, episode_id: int, columns: tuple[str, ...] | None) -> browse.StepTable:
    with _store_for(url).read() as s:
        return browse.step_table(s, episode_id, columns)


def steps(episode_id: int, columns: tuple[str, ...] | None = None) -> browse.StepTable:
    return _steps(database_url(), episode_id, columns)


@st.cache_data(ttl=SHORT_TTL, show_spinner=False)
def _votes(url: str, ids: tuple[int, ...]) -> list[browse.Vote]:
    with _store_for(url).read() as s:
        return browse.human_votes(s, ids or None)


def votes(ids: tuple[int, ...] = ()) -> list[browse.Vote]:
    return _votes(database_url(), ids)


@st.cache_data(ttl=SHORT_TTL, show_spinner=False)
def _disagreements(url: str, ids: tuple[int, ...]) -> list[browse.Disagreement]:
    with _store_for(url).read() as s:
        return browse.disagreements(s, ids or None)


def disagreements(ids: tuple[int, ...] = ()) -> list[browse.Disagreement]:
    return _disagreements(database_url(), ids)


def _label_changed() -> None:
    # The queue must drop the episode now; agreement lists may lag by their short ttl (their
    # 100k-episode recount would otherwise follow every single save).
    for fn in (_label_queue, _report, _human_vs_sim, _audit_progress, _ppi_report):
        fn.clear()


def save_label(inp: LabelInput, screen: OnScreen | None = None) -> int:
    """Save through orchestrator.store.labels (LabelConflict on a stale version, LabelRefused
    when `screen` is given and the input's render token / episode are not the ones on it)."""
    version = _save_label(store(), inp, screen)
    _label_changed()
    return version


def undo_label(inp: UndoInput, screen: OnScreen | None = None) -> Undone:
    """Undo the evaluator's last label as a new version (orchestrator.store.labels)."""
    done = _undo_last_label(store(), inp, screen)
    _label_changed()
    return done


def last_label_of(evaluator: str) -> LastLabel | None:
    with store().read() as s:  # never cached: undo must offer the label as it is now
        return last_label(s, evaluator)


# --- episodes, fleet, operators -----------------------------------------------------------------


def episode(episode_id: int) -> browse.EpisodeDetail:
    with store().read() as s:
        return browse.episode_detail(s, episode_id)


def episode_robot(episode_id: int) -> str | None:
    """The arm an episode ran on (for its declared action names; not blinding: the video shows
    the arm)."""
    try:
        return episode(episode_id).robot
    except browse.BrowseError:
        return None


def episode_labels(episode_id: int) -> list[browse.LabelRow]:
    with store().read() as s:
        return browse.episode_labels(s, episode_id)


def events(**kw: object) -> list[browse.EventRow]:
    with store().read() as s:
        return browse.events(s, **kw)  # type: ignore[arg-type]


def recent_episodes(limit: int = 50) -> list[tuple[int, str, str, str]]:
    with store().read() as s:
        return browse.recent_episodes(s, limit)


@st.cache_data(ttl=SHORT_TTL, show_spinner=False)
def _fleet(url: str) -> list[browse.RobotRow]:
    with _store_for(url).read() as s:
        return browse.fleet(s)


def fleet() -> list[browse.RobotRow]:
    return _fleet(database_url())


def operator_prompts() -> list[browse.OperatorPrompt]:
    with store().read() as s:
        return browse.pending_operator_prompts(s)


def confirm_setup(prompt_event_id: int, viewer: Viewer) -> int:
    check(viewer, Action.CONFIRM_SCENE)
    with store().write() as s:
        return browse.confirm_operator_setup(s, prompt_event_id, actor=viewer.actor)


def request_estop(target: str, actor: str) -> int:
    with store().write() as s:
        return browse.request_estop(s, target, actor=actor)


def media_bytes(uri: str) -> bytes:
    """An episode video's bytes; raises FileNotFoundError naming the file and what to check."""
    base = media_dir().resolve()
    path = (base / uri).resolve()
    if base not in path.parents:
        raise FileNotFoundError(f"media path {uri!r} points outside the media dir {base}")
    if not path.is_file():
        raise FileNotFoundError(
            f"video {path} is missing: is EVALFLEET_HOME the orchestrator's data dir?")
    return path.read_bytes()
