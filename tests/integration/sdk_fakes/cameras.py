"""Fakes of `cv2` (VideoCapture and the few functions the OpenCV camera calls) and of
`pyrealsense2` (pipeline, config, a color frameset), as robots/drivers/cameras.py uses them.

Tests put them into sys.modules under the SDK's import name (monkeypatch.setitem), since the
cameras import their SDK when they open. A fake device paces its frames at its fps (a real
`read()` blocks until the camera's next frame) and draws a frame whose pixels say which frame
it is: BGR (blue = frame number % 256, green = 20, red = 30) for OpenCV, RGB (30, 20, n) for
RealSense, so a test can tell the channel order and freshness from the pixels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

CAP_PROP_FRAME_WIDTH, CAP_PROP_FRAME_HEIGHT, CAP_PROP_FPS, CAP_PROP_FOURCC = 3, 4, 5, 6
COLOR_BGR2RGB, INTER_AREA = 4, 3


@dataclass
class Device:
    height: int = 48
    width: int = 64
    fps: float = 100.0
    fixed_size: bool = False  # True: ignores the requested size (a camera with one mode)
    failing: bool = False  # read() returns (False, None) / no frameset
    frames: int = 0
    props: dict[int, float] = field(default_factory=dict)
    released: bool = False
    pace: threading.Event = field(default_factory=threading.Event)  # never set: a frame clock

    def size(self) -> tuple[int, int]:
        if self.fixed_size:
            return self.height, self.width
        h = int(self.props.get(CAP_PROP_FRAME_HEIGHT, self.height))
        w = int(self.props.get(CAP_PROP_FRAME_WIDTH, self.width))
        return h, w

    def next_frame(self, bgr: bool) -> np.ndarray:
        self.pace.wait(1.0 / self.fps)  # the device's frame period
        self.frames += 1
        h, w = self.size()
        f = np.empty((h, w, 3), np.uint8)
        px = (self.frames % 256, 20, 30) if bgr else (30, 20, self.frames % 256)
        f[...] = px
        return f


def new_cv2(devices: dict[Any, Device]) -> SimpleNamespace:
    class VideoCapture:
        def __init__(self, index: Any, *args: Any) -> None:
            self.dev = devices.get(index)
            if self.dev is not None:
                self.dev.released = False  # a released device can be opened again

        def isOpened(self) -> bool:
            return self.dev is not None and not self.dev.released

        def set(self, prop: int, value: float) -> bool:
            assert self.dev is not None
            self.dev.props[prop] = value
            return True

        def read(self) -> tuple[bool, np.ndarray | None]:
            assert self.dev is not None
            if self.dev.failing or self.dev.released:
                self.dev.pace.wait(1.0 / self.dev.fps)
                return False, None
            return True, self.dev.next_frame(bgr=True)

        def release(self) -> None:
            if self.dev is not None:
                self.dev.released = True

    def cvt_color(img: np.ndarray, code: int) -> np.ndarray:
        assert code == COLOR_BGR2RGB
        return img[..., ::-1].copy()

    def resize(img: np.ndarray, size: tuple[int, int], interpolation: int = INTER_AREA) -> np.ndarray:
        w, h = size
        ys = np.arange(h) * img.shape[0] // h
        xs = np.arange(w) * img.shape[1] // w
        return img[ys][:, xs].copy()

    return SimpleNamespace(VideoCapture=VideoCapture, cvtColor=cvt_color, resize=resize,
                           VideoWriter_fourcc=lambda *c: sum(ord(x) << (8 * i) for i, x in enumerate(c)),
                           CAP_PROP_FRAME_WIDTH=CAP_PROP_FRAME_WIDTH,
                           CAP_PROP_FRAME_HEIGHT=CAP_PROP_FRAME_HEIGHT, CAP_PROP_FPS=CAP_PROP_FPS,
                           CAP_PROP_FOURCC=CAP_PROP_FOURCC, COLOR_BGR2RGB=COLOR_BGR2RGB,
                           INTER_AREA=INTER_AREA, devices=devices)


def new_realsense(devices: dict[str, Device]) -> SimpleNamespace:
    """`devices`: serial -> Device; a config without enable_device takes the first one."""
    stream = SimpleNamespace(color="color", depth="depth")
    fmt = SimpleNamespace(rgb8="rgb8", bgr8="bgr8")

    class config:
        def __init__(self) -> None:
            self.serial: str | None = None
            self.streams: list[tuple] = []

        def enable_device(self, serial: str) -> None:
            self.serial = serial

        def enable_stream(self, s: str, width: int, height: int, f: str, fps: int) -> None:
            self.streams.append((s, width, height, f, fps))

    class ColorFrame:
        def __init__(self, data: np.ndarray) -> None:
            self.data = data

        def get_data(self) -> np.ndarray:
            return self.data

        def __bool__(self) -> bool:
            return True

    class FrameSet:
        def __init__(self, color: ColorFrame) -> None:
            self.color = color

        def get_color_frame(self) -> ColorFrame:
            return self.color

    class pipeline:
        def __init__(self) -> None:
            self.dev: Device | None = None
            self.started = False

        def start(self, cfg: config) -> object:
            serial = cfg.serial or next(iter(devices), None)
            dev = devices.get(serial) if serial is not None else None
            if dev is None:
                raise RuntimeError("No device connected")
            for s, w, h, f, _ in cfg.streams:
                if s == "color" and (f != "rgb8" or (h, w) != (dev.height, dev.width)):
                    raise RuntimeError("Couldn't resolve requests")
            self.dev, self.started = dev, True
            return object()

        def try_wait_for_frames(self, timeout_ms: int = 5000) -> tuple[bool, FrameSet | None]:
            assert self.dev is not None and self.started
            if self.dev.failing:
                self.dev.pace.wait(1.0 / self.dev.fps)
                return False, None
            return True, FrameSet(ColorFrame(self.dev.next_frame(bgr=False)))

        def stop(self) -> None:
            self.started = False
            if self.dev is not None:
                self.dev.released = True

    return SimpleNamespace(pipeline=pipeline, config=config, stream=stream, format=fmt, devices=devices)
