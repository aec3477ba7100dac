"""Human labels, bound to what the evaluator saw, with optimistic concurrency and a history.

- Bound to the screen: an interactive save carries the episode id and the per-render token of
  the page it was given on (`LabelInput.render_token`); the caller passes what it has on screen
  (`OnScreen`), and a save whose token or episode is not that one is refused (LabelRefused) and
  writes nothing. So a key pressed while the page was changing never lands on an episode the
  evaluator did not see.
- Optimistic concurrency: two sessions saving over the same label get a clear LabelConflict
  instead of a silent overwrite; different evaluators never block each other.
- History: every version of every human label is a row of label_versions (saves and undos);
  labels holds the current one (the analyst views read only labels). Undo of an evaluator's last
  label is a new version that restores the one before, or retracts the label, audited.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from orchestrator.store.campaigns import log_event
from orchestrator.store.db import Store
from orchestrator.store.models import Episode, Label, LabelVersion, utcnow
from orchestrator.store.states import EpisodeStatus, EventKind


class LabelConflict(RuntimeError):
    """Someone saved this label since you loaded it. Reload and decide again."""


class LabelError(ValueError):
    pass


class LabelRefused(LabelError):
    """The save is not for the episode on screen: nothing was saved."""


@dataclass(frozen=True)
class OnScreen:
    """What one page render showed: a fresh random token bound to one episode."""

    token: str
    episode_id: int | None  # None: no episode on screen (the queue is done; only undo applies)


@dataclass(frozen=True)
class LabelInput:
    episode_id: int
    evaluator: str
    success: bool
    progress: float | None = None
    failure_mode: str | None = None
    notes: str | None = None
    expected_version: int | None = None  # None = "I saw no label of mine on this episode"
    render_token: str | None = None  # the token of the page render the label was given on


@dataclass(frozen=True)
class LastLabel:
    """An evaluator's most recent save that is still the current version of its label."""

    episode_id: int
    version: int
    success: bool


@dataclass(frozen=True)
class UndoInput:
    evaluator: str
    expected: LastLabel | None = None  # the last label the page offered to undo (None: any)
    episode_id: int | None = None  # the episode on screen when undo was asked for
    render_token: str | None = None


@dataclass(frozen=True)
class Undone:
    episode_id: int
    version: int  # the label's new version (the undo itself)
    undid_version: int
    success: bool | None  # the restored outcome; None = the label was retracted


@dataclass(frozen=True)
class VersionRow:
    version: int
    action: str
    success: bool | None
    render_token: str | None


def new_render_token() -> str:
    return secrets.token_hex(16)  # hex: usable in widget keys and CSS class names


def check_on_screen(episode_id: int | None, token: str | None, screen: OnScreen | None) -> None:
    """Refuse (LabelRefused) an action whose render token is not the one on screen, or whose
    episode is not the one that render showed. Pure: the page and the store both call it."""
    what = f"episode {episode_id}" if episode_id is not None else "an episode"
    if token is None:
        raise LabelRefused(f"the action for {what} carries no render token: it did not come "
                           "from an episode on screen; nothing was saved")
    if screen is None:
        raise LabelRefused(f"the action for {what} came while the page was changing episode "
                           "(nothing is on screen yet); nothing was saved: look at the episode "
                           "shown now and press again")
    now = ("no episode" if screen.episode_id is None else f"episode {screen.episode_id}")
    if token != screen.token:
        raise LabelRefused(f"the action for {what} was given on a page that is no longer on "
                           f"screen; {now} is shown now and nothing was saved: look at it and "
                           "press again")
    if episode_id != screen.episode_id:
        raise LabelRefused(f"the action names {what} but the page showed {now}; nothing was "
                           "saved")


def _validate(inp: LabelInput) -> None:
    if not inp.evaluator.strip():
        raise LabelError("label needs an evaluator name (who is labeling?)")
    if inp.progress is not None and not 0.0 <= inp.progress <= 1.0:
        raise LabelError(f"label progress {inp.progress} is outside 0..1")


def _history_max(s: Session, episode_id: int, evaluator: str) -> int:
    top = s.scalar(select(func.max(LabelVersion.version)).where(
        LabelVersion.episode_id == episode_id, LabelVersion.source == "human",
        LabelVersion.evaluator == evaluator))
    return int(top or 0)


def _record(s: Session, episode_id: int, evaluator: str, version: int, action: str,
            content: Label | LabelVersion | None, token: str | None) -> None:
    s.add(LabelVersion(
        episode_id=episode_id, source="human", evaluator=evaluator, version=version,
        action=action, success=content.success if content else None,
        progress=content.progress if content else None,
        failure_mode=content.failure_mode if content else None,
        notes=content.notes if content else None, render_token=token))


def _current(s: Session, episode_id: int, evaluator: str) -> Label | None:
    return s.scalar(select(Label).where(
        Label.episode_id == episode_id, Label.source == "human", Label.evaluator == evaluator))


def save_label_in(s: Session, inp: LabelInput, screen: OnScreen | None = None) -> Label:
    """Save one human label. With `screen` (an interactive save) the input's render token and
    episode must be the ones on screen, else LabelRefused and nothing is written."""
    _validate(inp)
    if screen is not None:
        check_on_screen(inp.episode_id, inp.render_token, screen)
    ep = s.get(Episode, inp.episode_id)
    if ep is None:
        raise LabelError(f"episode {inp.episode_id} does not exist")
    if ep.status != EpisodeStatus.RECORDED:
        raise LabelError(f"episode {inp.episode_id} is {ep.status}; only recorded ones are labeled")
    existing = _current(s, inp.episode_id, inp.evaluator)
    if existing is None:
        if inp.expected_version is not None:
            raise LabelConflict(
                f"label of {inp.evaluator} on episode {inp.episode_id} was deleted meanwhile"
            )
        label = Label(
            episode_id=inp.episode_id,
            source="human",
            evaluator=inp.evaluator,
            success=inp.success,
            progress=inp.progress,
            failure_mode=inp.failure_mode,
            notes=inp.notes,
            # after an undo retracted it, the label's history goes on where it stopped
            version=_history_max(s, inp.episode_id, inp.evaluator) + 1,
        )
        s.add(label)
    else:
        if inp.expected_version != existing.version:
            raise LabelConflict(
                f"{inp.evaluator}'s label on episode {inp.episode_id} changed since you loaded it "
                f"(now version {existing.version}, you had "
                f"{inp.expected_version if inp.expected_version is not None else 'none'}): "
                "reload the episode and save again"
            )
        label = existing
        label.success = inp.success
        label.progress = inp.progress
        label.failure_mode = inp.failure_mode
        label.notes = inp.notes
        label.updated_at = utcnow()
        label.version = existing.version + 1
    s.flush()
    _record(s, inp.episode_id, inp.evaluator, label.version, "saved", label, inp.render_token)
    s.flush()
    log_event(
        s,
        EventKind.LABEL_SAVED,
        actor=inp.evaluator,
        episode_id=inp.episode_id,
        success=inp.success,
        version=label.version,
    )
    return label


def _conflict(who: str, episode: str) -> LabelConflict:
    return LabelConflict(f"{who}'s label on {episode} was changed by someone else at the same "
                         "moment: reload the episode and try again")


def save_label(store: Store, inp: LabelInput, screen: OnScreen | None = None) -> int:
    """Save one human label in its own transaction; returns the label's new version."""
    try:
        with store.write() as s:
            label = save_label_in(s, inp, screen)
            return label.version
    except (StaleDataError, IntegrityError) as e:
        raise _conflict(inp.evaluator, f"episode {inp.episode_id}") from e


def last_label(s: Session, evaluator: str) -> LastLabel | None:
    """The evaluator's most recent save that is still its label's current version (what undo
    would take back), or None."""
    lv = LabelVersion
    row = s.execute(
        select(lv.episode_id, lv.version, lv.success)
        .join(Label, and_(Label.episode_id == lv.episode_id, Label.source == lv.source,
                          Label.evaluator == lv.evaluator, Label.version == lv.version))
        .where(lv.evaluator == evaluator, lv.source == "human", lv.action == "saved")
        .order_by(lv.id.desc()).limit(1)
    ).first()
    return None if row is None else LastLabel(int(row[0]), int(row[1]), bool(row[2]))


def undo_last_label_in(s: Session, inp: UndoInput, screen: OnScreen | None = None) -> Undone:
    """Take back the evaluator's last label as a new version: restore the version before it,
    or retract the label (no row in labels) when there was none. Audited (label_undone)."""
    if screen is not None:
        check_on_screen(inp.episode_id, inp.render_token, screen)
    last = last_label(s, inp.evaluator)
    if last is None:
        raise LabelError(f"{inp.evaluator} has no label to undo")
    if inp.expected is not None and (last.episode_id, last.version) != (
            inp.expected.episode_id, inp.expected.version):
        raise LabelConflict(
            f"{inp.evaluator}'s last label is now episode {last.episode_id} version "
            f"{last.version}, not the episode {inp.expected.episode_id} version "
            f"{inp.expected.version} you were offered to undo: nothing was undone; look again")
    label = _current(s, last.episode_id, inp.evaluator)
    assert label is not None  # last_label joins on it
    before = s.scalar(select(LabelVersion).where(
        LabelVersion.episode_id == last.episode_id, LabelVersion.source == "human",
        LabelVersion.evaluator == inp.evaluator, LabelVersion.version == last.version - 1))
    if before is None and last.version > 1:
        raise LabelError(f"cannot undo episode {last.episode_id}: its version "
                         f"{last.version - 1} predates the label history")
    new_version = last.version + 1
    if before is None or before.success is None:
        s.delete(label)  # retracted: the analyst views see no label from this evaluator
        restored = None
        s.flush()
        _record(s, last.episode_id, inp.evaluator, new_version, "undone", None, inp.render_token)
    else:
        label.success = before.success
        label.progress = before.progress
        label.failure_mode = before.failure_mode
        label.notes = before.notes
        label.updated_at = utcnow()
        label.version = new_version
        restored = before.success
        s.flush()
        _record(s, last.episode_id, inp.evaluator, new_version, "undone", before,
                inp.render_token)
    s.flush()
    log_event(s, EventKind.LABEL_UNDONE, actor=inp.evaluator, episode_id=last.episode_id,
              version=new_version, undid_version=last.version,
              restored_version=None if restored is None else last.version - 1,
              success=restored)
    return Undone(last.episode_id, new_version, last.version, restored)


def undo_last_label(store: Store, inp: UndoInput, screen: OnScreen | None = None) -> Undone:
    """undo_last_label_in in its own transaction."""
    try:
        with store.write() as s:
            return undo_last_label_in(s, inp, screen)
    except (StaleDataError, IntegrityError) as e:
        raise _conflict(inp.evaluator, "their last label") from e


def label_history(s: Session, episode_id: int, evaluator: str) -> list[VersionRow]:
    """Every version of one evaluator's label on one episode, oldest first."""
    rows = s.execute(select(LabelVersion.version, LabelVersion.action, LabelVersion.success,
                            LabelVersion.render_token).where(
        LabelVersion.episode_id == episode_id, LabelVersion.source == "human",
        LabelVersion.evaluator == evaluator).order_by(LabelVersion.version)).all()
    return [VersionRow(int(v), str(a), ok, tok) for v, a, ok, tok in rows]
