"""The background recorder hands frames to its encoder thread in batches (warm caches, half the
CPU per frame): every frame still lands in the video, a partial last batch included, and a
discarded recording leaves no file."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from orchestrator.recording import BATCH_STEPS, BackgroundRecorder


def _frames(i: int) -> dict[str, np.ndarray]:
    img = np.full((32, 48, 3), (i * 7) % 255, np.uint8)
    wrist = np.full((16, 16, 3), 200, np.uint8)
    return {"main": img, "wrist": wrist}


def _decoded(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_every_frame_is_encoded_with_a_partial_last_batch(tmp_path: Path) -> None:
    steps = 2 * BATCH_STEPS + 3
    rec = BackgroundRecorder(tmp_path, "camp", 7, fps=15.0)
    for i in range(steps):
        rec.add(_frames(i))
    files = {m.camera: m for m in rec.finish()}
    assert set(files) == {"main", "wrist"}
    for m in files.values():
        assert m.frames == steps and _decoded(tmp_path / m.uri) == steps


def test_fewer_steps_than_a_batch_are_encoded_too(tmp_path: Path) -> None:
    rec = BackgroundRecorder(tmp_path, "camp", 8, fps=15.0)
    for i in range(3):
        rec.add(_frames(i))
    (main, _wrist) = sorted(rec.finish(), key=lambda m: m.camera)
    assert main.frames == 3 and _decoded(tmp_path / main.uri) == 3


def test_a_discarded_recording_leaves_no_file(tmp_path: Path) -> None:
    rec = BackgroundRecorder(tmp_path, "camp", 9, fps=15.0)
    for i in range(BATCH_STEPS + 2):
        rec.add(_frames(i))
    rec.discard()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_writeable_frame_is_copied_before_it_waits_in_a_batch(tmp_path: Path) -> None:
    rec = BackgroundRecorder(tmp_path, "camp", 10, fps=15.0)
    buf = np.zeros((16, 16, 3), np.uint8)
    rec.add({"main": buf})
    buf[:] = 255  # the producer reuses its buffer before the batch is encoded
    rec.add({"main": np.zeros((16, 16, 3), np.uint8)})
    (m,) = rec.finish()
    with av.open(str(tmp_path / m.uri)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert first.mean() < 30  # the frame as it was when added, not the reused buffer
