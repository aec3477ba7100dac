"""One camera's episode MP4s into one MP4 (PyAV), and the image statistics on the way.

The recorder writes every episode as H.264 with the same settings, so the files share codec
parameters (codec, size, pixel format, SPS/PPS, time base, rate) and their packets are copied
into one file unchanged, only their timestamps shifted (no re-encoding: fast, lossless).
Files that differ (another size, another encoder) are decoded and re-encoded at the first
file's size instead. Either way episode k starts at the sum of the earlier files' frames /
fps, which is what lerobot_plan.VideoSpan says.

While packets go by they are decoded too, and a few evenly spaced frames of each episode
(scaled down) give that episode's per-channel image statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from orchestrator.export.lerobot_plan import VideoInfo
from orchestrator.export.records import ExportError
from orchestrator.export.stats import FeatureStats, image_stats

STATS_FRAMES = 12  # frames per episode that give its image statistics
STATS_MAX_SIDE = 96  # ... scaled down by an integer stride to about this size


@dataclass(frozen=True)
class Segment:
    """One episode's file for this camera: `frames` in it, of which the first `used` are the
    episode's frames in the dataset."""

    path: Path
    frames: int
    used: int


@dataclass(frozen=True, eq=False)
class CameraResult:
    info: VideoInfo
    method: str  # remux | reencode
    stats: tuple[FeatureStats, ...]  # one per segment


class _NotRemuxable(Exception):
    pass


def _params(stream: Any) -> tuple[Any, ...]:
    cc = stream.codec_context
    return (cc.name, cc.width, cc.height, cc.format.name if cc.format else None,
            bytes(cc.extradata or b""), stream.time_base)


def _open(path: Path) -> Any:
    try:
        return av.open(str(path))
    except (OSError, av.FFmpegError) as e:
        raise ExportError(f"cannot read video {path}: {e}; check the media folder "
                          "(EVALFLEET_HOME/media) is the store's") from e


def _sample_at(used: int) -> set[int]:
    if used <= 0:
        return set()
    return {int(i) for i in np.linspace(0, used - 1, min(used, STATS_FRAMES)).round()}


def _small(frame: Any) -> np.ndarray:
    """A scaled-down RGB copy of a decoded frame, for statistics. yuv420p (what the recorder
    writes) is converted here from the chroma-resolution grid with BT.601 limited range, the
    conversion FFmpeg applies by default: about 30x cheaper than a swscale RGB frame."""
    if frame.format.name != "yuv420p" or frame.width % 2 or frame.height % 2:
        stride = max(1, max(frame.width, frame.height) // STATS_MAX_SIDE)
        return np.asarray(frame.to_ndarray(format="rgb24")[::stride, ::stride])
    h, w = frame.height, frame.width
    planes = frame.to_ndarray()  # (h * 3/2, w): Y, then U and V at half size
    s = max(1, max(w, h) // 2 // STATS_MAX_SIDE)
    y = planes[:h:2 * s, :: 2 * s].astype(np.float32) - 16.0
    u = planes[h:h + h // 4].reshape(h // 2, w // 2)[::s, ::s].astype(np.float32) - 128.0
    v = planes[h + h // 4:].reshape(h // 2, w // 2)[::s, ::s].astype(np.float32) - 128.0
    y *= 1.164
    rgb = np.stack([y + 1.596 * v, y - 0.392 * u - 0.813 * v, y + 2.017 * u], axis=-1)
    return np.asarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))


def _stats(frames: list[np.ndarray], path: Path) -> FeatureStats:
    if not frames:
        raise ExportError(f"video {path} has no decodable frame")
    return image_stats(np.stack(frames))


def concat_camera(segments: Sequence[Segment], fps: float, out: Path,
                  on_segment: Callable[[], None] | None = None) -> CameraResult:
    """Write `segments` one after another into `out`; remux when they allow it."""
    params = set()
    for seg in segments:
        with _open(seg.path) as c:
            params.add(_params(c.streams.video[0]))
    if len(params) == 1:
        try:
            return _remux(segments, fps, out, on_segment)
        except _NotRemuxable:
            out.unlink(missing_ok=True)
    return _reencode(segments, fps, out, on_segment)


def _remux(segments: Sequence[Segment], fps: float, out: Path,
           on_segment: Callable[[], None] | None) -> CameraResult:
    stats: list[FeatureStats] = []
    with av.open(str(out), mode="w", format="mp4", options={"movflags": "+faststart"}) as oc:
        ostream: Any = None
        info: VideoInfo | None = None
        last_dts: int | None = None
        offset_frames = 0
        for seg in segments:
            with _open(seg.path) as ic:
                istream = ic.streams.video[0]
                if ostream is None:
                    ostream = oc.add_stream_from_template(istream)
                    cc = istream.codec_context
                    info = VideoInfo(cc.name, cc.width, cc.height, cc.format.name)
                tb = istream.time_base
                offset = round(Fraction(offset_frames) / Fraction(fps).limit_denominator(10**6)
                               / tb)
                decoder = istream.codec_context
                picked: list[np.ndarray] = []
                wanted, seen, base, n = _sample_at(seg.used), 0, None, 0
                for packet in ic.demux(istream):
                    if packet.size == 0 or packet.pts is None:
                        continue
                    if base is None:
                        base = packet.pts
                    n += 1
                    if len(picked) < len(wanted):
                        for frame in decoder.decode(packet):
                            if seen in wanted:
                                picked.append(_small(frame))
                            seen += 1
                    shift = offset - base
                    dts = packet.dts if packet.dts is not None else packet.pts
                    packet.pts += shift
                    packet.dts = dts + shift
                    if last_dts is not None and packet.dts <= last_dts:
                        raise _NotRemuxable
                    last_dts = packet.dts
                    packet.stream = ostream
                    packet.time_base = tb
                    oc.mux(packet)
                if len(picked) < len(wanted):
                    with contextlib.suppress(av.FFmpegError):
                        for frame in decoder.decode(None):
                            if seen in wanted:
                                picked.append(_small(frame))
                            seen += 1
                if n != seg.frames:
                    raise ExportError(f"video {seg.path} holds {n} frames, the store says "
                                      f"{seg.frames}: the file changed after recording")
                stats.append(_stats(picked, seg.path))
            offset_frames += seg.frames
            if on_segment is not None:
                on_segment()
    assert info is not None
    return CameraResult(info, "remux", tuple(stats))


def _reencode(segments: Sequence[Segment], fps: float, out: Path,
              on_segment: Callable[[], None] | None) -> CameraResult:
    stats: list[FeatureStats] = []
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(out), mode="w", format="mp4", options={"movflags": "+faststart"}) as oc:
        stream: Any = None
        pts = 0
        for seg in segments:
            with _open(seg.path) as ic:
                picked: list[np.ndarray] = []
                wanted, n = _sample_at(seg.used), 0
                for frame in ic.decode(video=0):
                    if stream is None:
                        stream = oc.add_stream("libx264", rate=rate)
                        stream.width = frame.width - frame.width % 2
                        stream.height = frame.height - frame.height % 2
                        stream.pix_fmt = "yuv420p"
                        stream.options = {"preset": "ultrafast", "crf": "23"}
                    if n in wanted:
                        picked.append(_small(frame))
                    vf = frame.reformat(width=stream.width, height=stream.height,
                                        format="yuv420p")
                    vf.pts, vf.time_base = pts, 1 / rate
                    for packet in stream.encode(vf):
                        oc.mux(packet)
                    pts += 1
                    n += 1
                if n != seg.frames:
                    raise ExportError(f"video {seg.path} holds {n} frames, the store says "
                                      f"{seg.frames}: the file changed after recording")
                stats.append(_stats(picked, seg.path))
            if on_segment is not None:
                on_segment()
        if stream is not None:
            for packet in stream.encode():
                oc.mux(packet)
    if stream is None:
        raise ExportError(f"no frame in the videos of {out.parent.name}")
    return CameraResult(VideoInfo("h264", stream.width, stream.height, "yuv420p"), "reencode",
                        tuple(stats))
