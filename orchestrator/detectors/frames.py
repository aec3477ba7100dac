"""The final frames of an episode's recorded videos (PyAV), for detectors that look."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import av
import numpy as np

from orchestrator.detectors.base import DetectorError


def media_path(media_dir: Path, uri: str) -> Path:
    """`uri` (relative to the media dir, as episodes.media holds it) as a path inside it."""
    base = media_dir.resolve()
    path = (base / uri).resolve()
    if base not in path.parents:
        raise DetectorError(f"media path {uri!r} points outside the media dir {base}")
    return path


def last_frames(path: Path, n: int) -> tuple[np.ndarray, ...]:
    """The last `n` decoded frames of the video at `path` as HxWx3 uint8 RGB, oldest first.
    DetectorError (one line) when the file is missing or unreadable."""
    if not path.is_file():
        raise DetectorError(f"video {path} is missing: is EVALFLEET_HOME the orchestrator's "
                            "data dir (its media folder)?")
    keep: deque[Any] = deque(maxlen=n)  # decoded frames; only the last n become RGB arrays
    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in c.decode(stream):
                keep.append(frame)
            rgb = [np.ascontiguousarray(f.to_ndarray(format="rgb24"), dtype=np.uint8)
                   for f in keep]
    except (OSError, av.FFmpegError, IndexError) as e:
        raise DetectorError(f"cannot read video {path}: {e}".splitlines()[0]) from None
    if not rgb:
        raise DetectorError(f"video {path} has no decodable frame")
    return tuple(rgb)
