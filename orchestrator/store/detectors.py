"""Registered success detectors and their auto labels in the store.

- Registry: a detector (name + version) is immutable like a policy: registering the same
  name + version again with the same checksum is a no-op, with another checksum it is refused
  (register a new --version). Audited as `detector_registered`.
- Auto labels: one per (episode, detector name): source `auto`, evaluator = the detector's
  name, detector_id, detector_checksum, success, progress NULL, notes = its score. An episode
  that already has an auto label of that name is skipped (whatever its checksum: a label is
  never changed). Human and sim labels are never read here, nor touched.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from orchestrator.store.campaigns import log_event
from orchestrator.store.models import Campaign, Detector, Episode, Label, Task, Trial
from orchestrator.store.states import CampaignStatus, EpisodeStatus, EventKind, LabelSource

SETTLED = (CampaignStatus.DONE, CampaignStatus.INCOMPLETE, CampaignStatus.CANCELLED)


class DetectorChangeRefused(ValueError):
    """A registration that would change an existing detector; the message is one line."""


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    version: str
    kind: str  # orchestrator.detectors.DetectorKind
    config: dict[str, Any]  # {"options": {...}, "weights_sha256": str | None}
    checksum: str


@dataclass(frozen=True)
class DetectorRow:
    id: int
    name: str
    version: str
    kind: str
    config: dict[str, Any]
    checksum: str
    created_at: datetime
    labels: int = 0  # auto labels it wrote


@dataclass(frozen=True)
class RegisteredDetector:
    detector_id: int
    created: bool  # False: the same spec was already there


def _row(d: Detector, labels: int = 0) -> DetectorRow:
    return DetectorRow(d.id, d.name, d.version, d.kind, dict(d.config or {}), d.checksum,
                       d.created_at, labels)


def register_detector(s: Session, spec: DetectorSpec, *, actor: str = "cli") -> RegisteredDetector:
    """Add `spec`, or confirm it is there unchanged; DetectorChangeRefused otherwise."""

    def find() -> Detector | None:
        return s.scalar(select(Detector).where(Detector.name == spec.name,
                                               Detector.version == spec.version))

    row = find()
    if row is None:
        try:
            with s.begin_nested():  # a concurrent registration of the same name + version
                row = Detector(name=spec.name, version=spec.version, kind=spec.kind,
                               config=spec.config, checksum=spec.checksum)
                s.add(row)
                s.flush()
        except IntegrityError:
            row = find()
            if row is None:  # pragma: no cover - another constraint failed
                raise
        else:
            log_event(s, EventKind.DETECTOR_REGISTERED, actor=actor, detector_id=row.id,
                      name=row.name, version=row.version, detector_kind=row.kind,
                      config=row.config, checksum=row.checksum)
            return RegisteredDetector(row.id, True)
    if row.checksum != spec.checksum:
        raise DetectorChangeRefused(
            f"detector {spec.name!r} version {spec.version!r} is registered with another "
            f"spec (checksum {row.checksum[:12]}, kind {row.kind}; now {spec.checksum[:12]}, "
            f"kind {spec.kind}): a detector never changes under its labels; register it "
            "under a new --version")
    return RegisteredDetector(row.id, False)


def list_detectors(s: Session, name: str | None = None) -> list[DetectorRow]:
    counts = (select(Label.detector_id, func.count(Label.id).label("n"))
              .where(Label.source == LabelSource.AUTO).group_by(Label.detector_id).subquery())
    stmt = (select(Detector, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.detector_id == Detector.id)
            .order_by(Detector.name, Detector.created_at, Detector.id))
    if name is not None:
        stmt = stmt.where(Detector.name == name)
    return [_row(d, int(n)) for d, n in s.execute(stmt)]


def find_detector(s: Session, name: str, version: str | None = None) -> DetectorRow:
    """A registered detector (the newest version when `version` is None); LookupError (one
    line) when there is none."""
    rows = list_detectors(s, name)
    if version is not None:
        picked = [r for r in rows if r.version == version]
        if not picked and rows:
            raise LookupError(f"detector {name!r} has no version {version!r} (versions: "
                              f"{', '.join(r.version for r in rows)})")
        rows = picked
    if not rows:
        raise LookupError(f"detector {name!r} is not registered: `evalfleet detector register "
                          f"{name} --kind sim|vlm|remote` first (`evalfleet detector list`)")
    return rows[-1]


# -- episodes to label, labels written ---------------------------------------------------------


@dataclass(frozen=True)
class PendingEpisode:
    episode_id: int
    instruction: str
    task_key: str
    media: tuple[tuple[str, str], ...]  # (camera, uri relative to the media dir), recorded order
    sim_success: bool | None


def _has_auto_label(name: str) -> Any:
    return exists().where(Label.episode_id == Episode.id, Label.source == LabelSource.AUTO,
                          Label.evaluator == name)


def _unlabelled(campaign_id: int, name: str) -> list[Any]:
    return [Trial.campaign_id == campaign_id, Episode.counted,
            Episode.status == EpisodeStatus.RECORDED, ~_has_auto_label(name)]


def count_unlabelled(s: Session, campaign_id: int, detector_name: str) -> int:
    """Counted, recorded episodes of the campaign without an auto label of this name."""
    return int(s.scalar(select(func.count(Episode.id))
                        .join(Trial, Trial.id == Episode.trial_id)
                        .where(*_unlabelled(campaign_id, detector_name))) or 0)


def unlabelled_episodes(s: Session, campaign_id: int, detector_name: str, *, limit: int,
                        after_id: int = 0, exclude: Collection[int] = ()) -> list[PendingEpisode]:
    """Up to `limit` such episodes with id > after_id (not in `exclude`), in id order. Only
    the instruction, the task and the media: never which policy ran."""
    sim = aliased(Label)
    stmt = (select(Episode.id, Task.instruction, Task.key, Episode.media, sim.success)
            .join(Trial, Trial.id == Episode.trial_id)
            .join(Task, Task.id == Trial.task_id)
            .outerjoin(sim, and_(sim.episode_id == Episode.id, sim.source == LabelSource.SIM))
            .where(*_unlabelled(campaign_id, detector_name), Episode.id > after_id)
            .order_by(Episode.id).limit(limit))
    if exclude:
        stmt = stmt.where(Episode.id.not_in(list(exclude)))
    out: dict[int, PendingEpisode] = {}
    for eid, instruction, key, media, sim_success in s.execute(stmt):
        if eid in out:  # pragma: no cover - one sim label per episode (unique evaluator)
            continue
        cams = tuple((str(m.get("camera")), str(m.get("uri"))) for m in (media or [])
                     if isinstance(m, dict) and m.get("uri"))
        out[eid] = PendingEpisode(eid, instruction, key, cams,
                                  None if sim_success is None else bool(sim_success))
    return list(out.values())


@dataclass(frozen=True)
class AutoLabel:
    episode_id: int
    success: bool
    score: float
    detail: str = ""


@dataclass(frozen=True)
class Saved:
    written: int
    skipped: int  # the episode already had an auto label of this detector name


def save_auto_labels(s: Session, detector: DetectorRow, campaign_id: int | None,
                     labels: Sequence[AutoLabel], *, actor: str = "detector") -> Saved:
    """Write one batch inside the caller's transaction; one `auto_labels_saved` event."""
    written = skipped = 0
    for lab in labels:
        held = s.scalar(select(Label.id).where(
            Label.episode_id == lab.episode_id, Label.source == LabelSource.AUTO,
            Label.evaluator == detector.name))
        if held is not None:
            skipped += 1
            continue
        notes = f"score={lab.score:.4f}" + (f" {lab.detail}" if lab.detail else "")
        try:
            with s.begin_nested():  # another `detect` of the same detector got there first
                s.add(Label(episode_id=lab.episode_id, source=LabelSource.AUTO,
                            evaluator=detector.name, success=lab.success, progress=None,
                            notes=notes[:1000], detector_id=detector.id,
                            detector_checksum=detector.checksum))
                s.flush()
        except IntegrityError:
            skipped += 1
            continue
        written += 1
    if written:
        log_event(s, EventKind.AUTO_LABELS_SAVED, actor=actor, campaign_id=campaign_id,
                  detector=detector.name, detector_id=detector.id, version=detector.version,
                  checksum=detector.checksum, count=written)
    return Saved(written, skipped)


def campaign_settled(s: Session, campaign_id: int) -> bool:
    """Whether the campaign will record no more episodes (done, incomplete or cancelled)."""
    status = s.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    return status in SETTLED
