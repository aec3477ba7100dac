"""Cameras for the real-arm drivers: OpenCV (any UVC webcam) and Intel RealSense (pyrealsense2),
behind one small interface that fills a driver's observation frames.

A driver config lists its cameras (`cameras:` in the YAML); each entry is a `kind: opencv` or
`kind: realsense` mapping with the camera's name, role (external | wrist) and the resolution
the arm declares (`CameraSpec`). `CameraRig(configs)` opens them all (`open()`), hands out
the latest frame of each (`read() -> {name: HxWx3 uint8 RGB}`) and closes them (`close()`; it
is a context manager). It has the `FrameSource` shape of robots/drivers/arm_common.py, so any
driver can use it.

Why a background thread per camera: `cv2.VideoCapture.read()` and RealSense's
`wait_for_frames` block until the camera's next frame (33 ms at 30 fps, or forever on a
dead device). A driver's observe() must return promptly, so each camera grabs on its own
daemon thread and observe() takes the newest frame it has (never an old buffered one: the
grab loop drains the device as fast as it delivers). A frame older than `stale_after_s`
is an error, not a silent repeat.

Frames are RGB: OpenCV delivers BGR (converted with cv2.cvtColor), RealSense is asked for
`rs.format.rgb8`. A camera that delivers another size than declared fails open() with both
sizes named, unless `resize: true` (OpenCV only; cv2.resize, INTER_AREA).

The SDKs are imported when a camera opens (`cv2`: opencv-python(-headless); `pyrealsense2`:
the `realsense` extra), so this module imports without either.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import ModuleType
from typing import Annotated, Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from robots.spaces import CameraRole, CameraSpec

log = logging.getLogger(__name__)


class CameraError(RuntimeError):
    """A camera cannot be opened or has no fresh frame (one line: which, what, what to do)."""


class _CameraConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    role: Literal["external", "wrist"] = "external"
    width: int = Field(default=640, ge=16, le=8192)
    height: int = Field(default=480, ge=16, le=8192)
    fps: int = Field(default=30, ge=1, le=240)
    encoding: Literal["raw", "jpeg"] = "raw"  # what the bridge sends by default
    first_frame_timeout_s: float = Field(default=5.0, gt=0, le=60)
    stale_after_s: float = Field(default=1.0, gt=0, le=60)

    def spec(self) -> CameraSpec:
        return CameraSpec(self.name, self.height, self.width, self.encoding, CameraRole(self.role))


class OpenCVCameraConfig(_CameraConfigBase):
    """A UVC camera through cv2.VideoCapture: `device` is an index (0), a path (/dev/video2)
    or a stream URL."""

    kind: Literal["opencv"] = "opencv"
    device: int | str = 0
    fourcc: str | None = Field(default=None, min_length=4, max_length=4)  # e.g. MJPG for 30 fps at 720p
    resize: bool = False


class RealSenseCameraConfig(_CameraConfigBase):
    """An Intel RealSense color stream; `serial` picks one of several devices."""

    kind: Literal["realsense"] = "realsense"
    serial: str | None = None
    timeout_ms: int = Field(default=1000, ge=10, le=10000)  # per try_wait_for_frames in the grab thread


CameraConfig = Annotated[OpenCVCameraConfig | RealSenseCameraConfig, Field(discriminator="kind")]


def check_frame(frame: np.ndarray, spec: CameraSpec) -> np.ndarray:
    """The frame if it is HxWx3 uint8 of the declared size, else CameraError naming both sizes."""
    want = (spec.height, spec.width, 3)
    if frame.dtype != np.uint8 or frame.shape != want:
        got = "x".join(str(x) for x in frame.shape)
        raise CameraError(f"camera {spec.name!r}: delivers {frame.dtype} {got}, declared uint8 "
                          f"{spec.height}x{spec.width}x3: set width/height to what the camera "
                          "delivers (or resize: true for an OpenCV camera)")
    return frame


def import_sdk(module: str, camera: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CameraError(f"camera {camera!r}: `{module}` is not installed ({e}); {install}") from e


class Camera(ABC):
    """One camera: open() starts a grab thread, latest() is the newest RGB frame, close() stops."""

    def __init__(self, config: _CameraConfigBase) -> None:
        self.config = config
        self.spec = config.spec()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first = threading.Event()
        self._frame: np.ndarray | None = None
        self._frame_t = 0.0
        self._frames = 0
        self._error = ""
        self._thread: threading.Thread | None = None

    # ---- what a camera kind implements (called on the grab thread, except open/close)
    @abstractmethod
    def _open_device(self) -> None: ...

    @abstractmethod
    def _grab(self) -> np.ndarray | None:
        """Block until the device's next frame (bounded); the RGB frame, or None (no frame)."""

    @abstractmethod
    def _close_device(self) -> None: ...

    # ---- the interface
    def open(self) -> None:
        if self._thread is not None:
            return  # already open
        with self._lock:
            self._frame, self._error = None, ""
        self._first.clear()
        self._open_device()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"camera-{self.spec.name}", daemon=True)
        self._thread.start()
        if not self._first.wait(self.config.first_frame_timeout_s):
            why = self._error or "no frame arrived"
            self.close()
            raise CameraError(f"camera {self.spec.name!r}: no frame within "
                              f"{self.config.first_frame_timeout_s:g} s ({why}); check the device "
                              "and that no other process holds it")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._grab()
            except Exception as e:  # noqa: BLE001 - kept for latest()/open() to report
                self._error = f"{type(e).__name__}: {e}"
                self._stop.wait(0.05)  # a failing device: retry at 20 Hz, do not spin
                continue
            if frame is None:
                continue
            with self._lock:
                self._frame, self._frame_t = frame, time.monotonic()
                self._frames += 1
            self._first.set()

    def latest(self) -> np.ndarray:
        with self._lock:
            frame, t = self._frame, self._frame_t
        if frame is None:
            raise CameraError(f"camera {self.spec.name!r}: no frame yet ({self._error or 'not open'})")
        age = time.monotonic() - t
        if age > self.config.stale_after_s:
            raise CameraError(f"camera {self.spec.name!r}: newest frame is {age:.1f} s old "
                              f"({self._error or 'the device stopped delivering'}); check its cable")
        return frame

    @property
    def frames_grabbed(self) -> int:
        return self._frames

    def close(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2.0)  # a read stuck in the driver: the daemon thread is left behind
            if t.is_alive():
                log.warning("camera %r: grab thread did not stop within 2 s", self.spec.name)
        try:
            self._close_device()
        except Exception:
            log.warning("camera %r: closing the device failed", self.spec.name, exc_info=True)


class OpenCVCamera(Camera):
    config: OpenCVCameraConfig

    def __init__(self, config: OpenCVCameraConfig) -> None:
        super().__init__(config)
        self._cv2: Any = None
        self._cap: Any = None

    def _open_device(self) -> None:
        cv2 = self._cv2 = import_sdk("cv2", self.spec.name, "pip install opencv-python-headless")
        c = self.config
        cap = cv2.VideoCapture(c.device)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"camera {c.name!r}: OpenCV cannot open device {c.device!r}; check "
                              "`v4l2-ctl --list-devices` and the user's video group")
        if c.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*c.fourcc))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, c.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, c.height)
        cap.set(cv2.CAP_PROP_FPS, c.fps)
        self._cap = cap

    def _grab(self) -> np.ndarray | None:
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise CameraError("cv2.VideoCapture.read() returned no frame")
        cv2 = self._cv2
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.config.resize and rgb.shape[:2] != (self.spec.height, self.spec.width):
            rgb = cv2.resize(rgb, (self.spec.width, self.spec.height), interpolation=cv2.INTER_AREA)
        return check_frame(np.ascontiguousarray(rgb), self.spec)

    def _close_device(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class RealSenseCamera(Camera):
    config: RealSenseCameraConfig

    def __init__(self, config: RealSenseCameraConfig) -> None:
        super().__init__(config)
        self._pipe: Any = None

    def _open_device(self) -> None:
        rs = import_sdk("pyrealsense2", self.spec.name, "pip install 'evalfleet[realsense]'")
        c = self.config
        pipe, cfg = rs.pipeline(), rs.config()
        if c.serial:
            cfg.enable_device(c.serial)
        cfg.enable_stream(rs.stream.color, c.width, c.height, rs.format.rgb8, c.fps)
        try:
            pipe.start(cfg)
        except RuntimeError as e:
            raise CameraError(f"camera {c.name!r}: RealSense {c.serial or '(first device)'} cannot "
                              f"stream color {c.width}x{c.height} rgb8 at {c.fps} fps: {e}; check "
                              "`rs-enumerate-devices` for the modes it supports") from e
        self._pipe = pipe

    def _grab(self) -> np.ndarray | None:
        ok, frames = self._pipe.try_wait_for_frames(self.config.timeout_ms)
        if not ok:
            raise CameraError(f"no frameset within {self.config.timeout_ms} ms")
        color = frames.get_color_frame()
        if not color:
            return None
        # copy: the SDK recycles the frame's buffer once the frame object is released
        return check_frame(np.array(np.asanyarray(color.get_data()), dtype=np.uint8, copy=True), self.spec)

    def _close_device(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.stop()


def make_camera(config: OpenCVCameraConfig | RealSenseCameraConfig) -> Camera:
    if isinstance(config, RealSenseCameraConfig):
        return RealSenseCamera(config)
    return OpenCVCamera(config)


class CameraRig:
    """The cameras of one arm: open together (all or none), read the latest frames, close."""

    def __init__(self, configs: Sequence[OpenCVCameraConfig | RealSenseCameraConfig]) -> None:
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique: {names}")
        self.cameras = tuple(make_camera(c) for c in configs)
        self._open = False

    @property
    def specs(self) -> tuple[CameraSpec, ...]:
        return tuple(c.spec for c in self.cameras)

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        if self._open:
            return
        opened: list[Camera] = []
        try:
            for cam in self.cameras:
                cam.open()
                opened.append(cam)
        except BaseException:
            for cam in reversed(opened):
                cam.close()
            raise
        self._open = True

    def read(self) -> dict[str, np.ndarray]:
        """The newest frame of every camera (CameraError when one has none fresh)."""
        return {c.spec.name: c.latest() for c in self.cameras}

    def close(self) -> None:
        self._open = False
        for cam in self.cameras:
            cam.close()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
