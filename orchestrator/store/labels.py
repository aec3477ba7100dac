"""Human labels, with optimistic concurrency: two evaluators saving over the same label get a
clear LabelConflict instead of a silent overwrite; different evaluators never block each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from orchestrator.store.campaigns import log_event
from orchestrator.store.db import Store
from orchestrator.store.models import Episode, Label, utcnow


class LabelConflict(RuntimeError):
    """Someone saved this label since you loaded it. Reload and decide again."""


class LabelError(ValueError):
    pass


@dataclass(frozen=True)
class LabelInput:
    episode_id: int
    evaluator: str
    success: bool
    progress: float | None = None
    failure_mode: str | None = None
    notes: str | None = None
    expected_version: int | None = None  # None = "I saw no label of mine on this episode"


def _validate(inp: LabelInput) -> None:
    if not inp.evaluator.strip():
        raise LabelError("label needs an evaluator name (who is labeling?)")
    if inp.progress is not None and not 0.0 <= inp.progress <= 1.0:
        raise LabelError(f"label progress {inp.progress} is outside 0..1")


def save_label_in(s: Session, inp: LabelInput) -> Label:
    _validate(inp)
    ep = s.get(Episode, inp.episode_id)
    if ep is None:
        raise LabelError(f"episode {inp.episode_id} does not exist")
    if ep.status != "recorded":
        raise LabelError(f"episode {inp.episode_id} is {ep.status}; only recorded ones are labeled")
    existing = s.scalar(
        select(Label).where(
            Label.episode_id == inp.episode_id,
            Label.source == "human",
            Label.evaluator == inp.evaluator,
        )
    )
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
    s.flush()
    log_event(
        s,
        "label_saved",
        actor=inp.evaluator,
        episode_id=inp.episode_id,
        success=inp.success,
        version=label.version,
    )
    return label


def save_label(store: Store, inp: LabelInput) -> int:
    """Save one human label in its own transaction; returns the label's new version."""
    try:
        with store.write() as s:
            label = save_label_in(s, inp)
            return label.version
    except (StaleDataError, IntegrityError) as e:
        raise LabelConflict(
            f"{inp.evaluator}'s label on episode {inp.episode_id} was saved by someone else at "
            "the same moment: reload the episode and save again"
        ) from e
