"""Episode media: one H.264 MP4 per episode and camera, written durably.

Frames are appended as they arrive; `finish()` closes the container, fsyncs, renames the
temporary file into place and returns its sha256. An episode becomes "recorded" in the store
only after every camera's file has been finished, so a crash never leaves a row pointing at
a half-written video (a leftover *.partial file is garbage that no row points to: safe to
delete). Several cameras: one file per camera (`EpisodeRecorder`), one media entry each.
An aborted episode finishes its recorder too: its video up to the abort is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
import numpy as np

PARTIAL_SUFFIX = ".partial"


class MediaWriteError(OSError):
    """An episode's media could not be written: names the path and what to check. An
    infrastructure fault (orchestrator.faults.AbortCause.MEDIA): the trial is re-queued
    without using an attempt, the arm waits until the folder is writable again."""

    def __init__(self, path: Path, error: BaseException) -> None:
        self.path = Path(path)
        detail = getattr(error, "strerror", None) or str(error) or error.__class__.__name__
        super().__init__(
            f"cannot write media file {self.path}: {detail}; check that {self.path.parent} "
            "is a writable folder with free space"
        )


@dataclass(frozen=True)
class MediaFile:
    camera: str
    uri: str  # path relative to the media dir
    sha256: str
    bytes: int
    frames: int
    fps: float

    def to_dict(self) -> dict:
        return {
            "camera": self.camera,
            "uri": self.uri,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "frames": self.frames,
            "fps": self.fps,
        }


class VideoWriter:
    """Streams RGB frames into an H.264 MP4 (browser-playable: yuv420p, faststart)."""

    def __init__(self, media_dir: Path, relpath: str, camera: str, fps: float) -> None:
        self.media_dir = media_dir
        self.relpath = relpath
        self.camera = camera
        self.fps = fps
        self.final = media_dir / relpath
        self.tmp = self.final.with_name(self.final.name + PARTIAL_SUFFIX)
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MediaWriteError(self.tmp, e) from e
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self.frames = 0

    def _open(self, height: int, width: int) -> None:
        try:
            self._container = av.open(
                str(self.tmp), mode="w", format="mp4", options={"movflags": "+faststart"}
            )
        except OSError as e:  # PyAV's errors are OSErrors (permission, no space, not a dir)
            raise MediaWriteError(self.tmp, e) from e
        rate = Fraction(self.fps).limit_denominator(1000)
        stream = self._container.add_stream("libx264", rate=rate)
        stream.width = width - width % 2
        stream.height = height - height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}
        # one encoder thread: frames of a few hundred pixels a side gain nothing from x264's
        # threads and pay for their hand-offs (0.6 -> 0.3 ms of CPU per 256x256 frame,
        # BENCHMARKS.md, "Fleet, chunked policies"); a node runs one encoder per camera anyway
        stream.thread_count = 1
        self._stream = stream

    def add(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"camera {self.camera}: frames must be HxWx3 uint8, got {frame.shape} {frame.dtype}"
            )
        if self._container is None:
            self._open(frame.shape[0], frame.shape[1])
        assert self._stream is not None and self._container is not None
        h, w = self._stream.height, self._stream.width
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
        try:
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
        except OSError as e:  # a write of the container failed (disk full, folder gone)
            raise MediaWriteError(self.tmp, e) from e
        self.frames += 1

    def finish(self) -> MediaFile:
        """Flush, fsync, rename into place, checksum. Idempotent only until it succeeds."""
        if self._container is None:
            raise ValueError(f"camera {self.camera}: no frames recorded, nothing to finish")
        assert self._stream is not None
        path = self.tmp
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            with self.tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            path = self.final
            os.replace(self.tmp, self.final)
            _fsync_dir(self.final.parent)
            # read back for the checksum: the folder may have gone in between (a media error
            # like any other, never an unknown fault counted against the trial)
            sha256, size = sha256_file(self.final), self.final.stat().st_size
        except OSError as e:
            raise MediaWriteError(path, e) from e
        return MediaFile(
            camera=self.camera,
            uri=self.relpath,
            sha256=sha256,
            bytes=size,
            frames=self.frames,
            fps=self.fps,
        )

    def discard(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):  # a broken encoder: the file goes anyway
                self._container.close()
            self._container = None
        try:
            self.tmp.unlink(missing_ok=True)
        except OSError:  # its folder is gone or unreadable: nothing points to the leftover
            pass


class EpisodeRecorder:
    """All cameras of one episode. A context manager: leaving without finish() discards."""

    def __init__(self, media_dir: Path, campaign: str, episode_id: int, fps: float) -> None:
        self.media_dir = media_dir
        self.prefix = f"{campaign_dir(campaign)}/episode-{episode_id:08d}"
        self.fps = fps
        self.writers: dict[str, VideoWriter] = {}
        self._finished = False

    def add(self, frames: dict[str, np.ndarray]) -> None:
        for camera, frame in frames.items():
            w = self.writers.get(camera)
            if w is None:
                w = self.writers[camera] = VideoWriter(
                    self.media_dir, f"{self.prefix}-{_safe(camera)}.mp4", camera, self.fps
                )
            w.add(frame)

    def finish(self) -> list[MediaFile]:
        files = [w.finish() for w in self.writers.values() if w.frames]
        self._finished = True
        return files

    def discard(self) -> None:
        for w in self.writers.values():
            w.discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._finished:
            self.discard()


#: steps handed to the encoder thread at once (per step: every camera's frame). x264 encoding
#: one frame every 66 ms finds its caches cold: 1.1 ms of CPU per 256x256 sim frame, 0.66 ms in
#: bursts of 8, 0.54 ms in bursts of 16 (BENCHMARKS.md, "Fleet, chunked policies"). 8, not 16:
#: longer bursts on a 2-core node delayed single-step policies' steps. (A niced encoder thread
#: was tried and dropped: a thread the OS runs last while it holds the GIL stalls the loops.)
BATCH_STEPS = 8
BATCH_BYTES = 32 << 20  # and never more frame bytes than this held back


class BackgroundRecorder:
    """Encodes frames on a thread so video encoding never delays a control step. Frames are
    handed over in batches of up to BATCH_STEPS steps (the encoder then runs in bursts, with
    warm caches); finish() and discard() flush the last partial batch."""

    def __init__(self, media_dir: Path, campaign: str, episode_id: int, fps: float) -> None:
        self.rec = EpisodeRecorder(media_dir, campaign, episode_id, fps)
        self.q: queue.Queue[list[dict[str, np.ndarray]] | None] = queue.Queue(maxsize=32)
        self.error: BaseException | None = None
        self._batch: list[dict[str, np.ndarray]] = []
        self._batch_bytes = 0
        self.t = threading.Thread(target=self._run, name=f"rec-{episode_id}", daemon=True)
        self.t.start()

    def _run(self) -> None:
        while (batch := self.q.get()) is not None:
            for frames in batch:
                if self.error is not None:
                    break
                try:
                    self.rec.add(frames)
                except BaseException as e:  # noqa: BLE001 - surfaced by finish()
                    self.error = e

    def add(self, frames: dict[str, np.ndarray]) -> None:
        # frames from the wire are read-only views of their own received buffers: kept as
        # they are; a writeable array might be reused by its producer, so it is copied
        self._batch.append({k: v if not v.flags.writeable else np.array(v, copy=True)
                            for k, v in frames.items()})
        self._batch_bytes += sum(v.nbytes for v in frames.values())
        if len(self._batch) >= BATCH_STEPS or self._batch_bytes >= BATCH_BYTES:
            self._hand_over(timeout=5)

    def _hand_over(self, timeout: float) -> None:
        if self._batch:
            self.q.put(self._batch, timeout=timeout)
            self._batch, self._batch_bytes = [], 0

    def finish(self) -> tuple[MediaFile, ...]:
        """One file per camera (every camera seen), durable."""
        self._hand_over(timeout=5)
        self.q.put(None, timeout=5)
        self.t.join(timeout=60)
        if self.error is not None:
            self.rec.discard()
            if isinstance(self.error, MediaWriteError):
                raise self.error  # names the path; an infrastructure fault, not the trial's
            raise RuntimeError(f"video encoding failed: {self.error}") from self.error
        return tuple(self.rec.finish())

    def discard(self) -> None:
        self._batch, self._batch_bytes = [], 0
        try:
            self.q.put(None, timeout=1)
        except queue.Full:
            pass
        self.t.join(timeout=10)
        self.rec.discard()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_media(media_dir: Path, media: dict) -> bool:
    p = media_dir / media["uri"]
    return p.is_file() and sha256_file(p) == media["sha256"]


def media_problem(folder: Path) -> str | None:
    """None when a media file can be written in `folder` now (created if missing), else a
    one-line error naming the path. Writes and removes a small probe file."""
    probe = Path(folder) / f".evalfleet-probe-{os.getpid()}{PARTIAL_SUFFIX}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as fh:
            fh.write(b"probe")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as e:
        return str(MediaWriteError(probe, e))
    return None


def campaign_dir(campaign: str) -> str:
    """The media sub-directory of a campaign's episodes."""
    return _safe(campaign)


def episode_id_of(filename: str) -> int | None:
    """The episode id in a name EpisodeRecorder gave (episode-00000042-main.mp4[.partial])."""
    if not filename.startswith("episode-"):
        return None
    head = filename[len("episode-"):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
