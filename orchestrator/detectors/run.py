"""Labelling a campaign's recorded episodes with a detector, off the control loop.

    n = label_campaign(store, campaign_id, "sim-90")     # auto labels written

Batches of counted, recorded episodes without this detector's label are read (their final
frames from the media files when the detector looks), judged together and written in one
transaction each: a crash leaves whole batches, and the next run carries on where it stopped
(it selects what is still unlabelled). An episode that recorded no video of the camera the
detector needs is skipped (reported), never labelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.detectors.base import Detector, DetectorError, DetectorInput
from orchestrator.detectors.frames import last_frames, media_path
from orchestrator.store.db import Store
from orchestrator.store.detectors import (
    AutoLabel,
    DetectorRow,
    PendingEpisode,
    campaign_settled,
    count_unlabelled,
    find_detector,
    save_auto_labels,
    unlabelled_episodes,
)

MAX_FRAMES = 64  # the most final frames any kind reads


@dataclass(frozen=True)
class BatchDone:
    """What one batch did, for a progress display."""

    judged: int
    written: int
    skipped: int  # already labelled by this detector (a concurrent run)


@dataclass
class PassResult:
    written: int = 0
    judged: int = 0
    no_media: dict[int, str] = field(default_factory=dict)  # episode id -> why it was skipped


def frames_needed(row: DetectorRow) -> int:
    n = (row.config.get("options") or {}).get("frames", 1)
    return max(1, min(int(n), MAX_FRAMES))


def load_input(ep: PendingEpisode, detector: Detector, media_dir: Path,
               n_frames: int) -> DetectorInput:
    """The episode as the detector sees it: instruction, task, final frames, sim outcome."""
    frames = {}
    if detector.needs_frames:
        wanted = set(detector.cameras([camera for camera, _ in ep.media]))
        for camera, uri in ep.media:
            if camera in wanted:
                frames[camera] = last_frames(media_path(media_dir, uri), n_frames)
    return DetectorInput(ep.episode_id, ep.instruction, ep.task_key, frames, ep.sim_success)


def label_pass(store: Store, campaign_id: int, row: DetectorRow, detector: Detector, *,
               media_dir: Path, batch: int = 16, limit: int | None = None,
               exclude: frozenset[int] = frozenset(),
               on_batch: Callable[[BatchDone], None] | None = None,
               stop: Callable[[], bool] = lambda: False) -> PassResult:
    """One pass over what is unlabelled now, in episode id order. Returns what it did."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    out = PassResult()
    n_frames = frames_needed(row)
    after = 0
    while not stop():
        want = batch if limit is None else min(batch, limit - out.judged)
        if want <= 0:
            break
        with store.read() as s:
            pend = unlabelled_episodes(s, campaign_id, row.name, limit=want, after_id=after,
                                       exclude=exclude)
        if not pend:
            break
        after = pend[-1].episode_id
        inputs = []
        for ep in pend:
            recorded = [camera for camera, _ in ep.media]
            if detector.needs_frames and not detector.cameras(recorded):
                out.no_media[ep.episode_id] = (
                    f"no video of the camera it reads (recorded: {', '.join(recorded)})"
                    if recorded else "no video recorded")
                continue
            inputs.append(load_input(ep, detector, media_dir, n_frames))
        if not inputs:
            continue
        verdicts = detector.judge_batch(inputs)
        if len(verdicts) != len(inputs):
            raise DetectorError(f"detector {row.name!r} answered {len(verdicts)} verdicts for "
                                f"{len(inputs)} episodes")
        labels = [AutoLabel(x.episode_id, v.success, v.score, v.detail)
                  for x, v in zip(inputs, verdicts, strict=True)]
        with store.write() as s:
            saved = save_auto_labels(s, row, campaign_id, labels)
        out.written += saved.written
        out.judged += len(inputs)
        if on_batch is not None:
            on_batch(BatchDone(len(inputs), saved.written, saved.skipped))
    return out


def label_follow(store: Store, campaign_id: int, row: DetectorRow, detector: Detector, *,
                 media_dir: Path, batch: int = 16, limit: int | None = None,
                 follow: bool = False, wait: Callable[[], object] = lambda: None,
                 stop: Callable[[], bool] = lambda: False,
                 on_batch: Callable[[BatchDone], None] | None = None,
                 on_pass: Callable[[int], None] | None = None) -> PassResult:
    """Passes until nothing is left (`follow`: until a pass that began once the campaign was
    settled, so no episode recorded before the end is missed), at most `limit` judged. `wait()` runs between passes
    (the caller's poll interval, bounded: e.g. an Event's wait(timeout)); `stop()` ends it
    between batches; `on_pass(todo)` reports what is unlabelled before each pass."""
    total = PassResult()
    while not stop():
        with store.read() as s:
            settled = campaign_settled(s, campaign_id)
            todo = count_unlabelled(s, campaign_id, row.name) - len(total.no_media)
        left = None if limit is None else limit - total.judged
        if on_pass is not None:
            on_pass(todo if left is None else min(todo, left))
        res = label_pass(store, campaign_id, row, detector, media_dir=media_dir, batch=batch,
                         limit=left, exclude=frozenset(total.no_media), on_batch=on_batch,
                         stop=stop)
        total.written += res.written
        total.judged += res.judged
        total.no_media.update(res.no_media)
        if not follow or settled or (limit is not None and total.judged >= limit):
            break
        wait()
    return total


def label_campaign(store: Store, campaign_id: int, detector_name: str, batch: int = 16, *,
                   version: str | None = None, limit: int | None = None,
                   media_dir: Path | None = None, detector: Detector | None = None) -> int:
    """Label every counted, recorded episode of the campaign that has no label of this
    detector yet; returns the number of auto labels written."""
    if media_dir is None:
        from orchestrator.config import get_settings

        media_dir = get_settings().media_dir
    with store.read() as s:
        row = find_detector(s, detector_name, version)
    if detector is None:
        from orchestrator.detectors.build import build_detector

        detector = build_detector(row.name, row.kind, row.config, row.checksum)
    try:
        return label_pass(store, campaign_id, row, detector, media_dir=media_dir, batch=batch,
                          limit=limit).written
    finally:
        detector.close()
