"""robots/drivers/cameras.py against fake cv2 / pyrealsense2 modules: RGB frames of the
declared size from a background grab thread, the newest frame (never a stale one), clear
errors for a missing device, a wrong size and a missing SDK, and a clean close."""

from __future__ import annotations

import importlib.util
import sys
import time

import numpy as np
import pytest

from robots.drivers.cameras import (
    CameraError,
    CameraRig,
    OpenCVCameraConfig,
    RealSenseCameraConfig,
)
from robots.spaces import CameraRole
from tests.integration.sdk_fakes.cameras import Device, new_cv2, new_realsense


def until(pred, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (v := pred()):
            return v
        time.sleep(0.005)
    raise AssertionError("condition not met before the deadline")


@pytest.fixture
def cv2_devices(monkeypatch: pytest.MonkeyPatch) -> dict:
    devices: dict = {0: Device(), "/dev/video2": Device(height=48, width=64, fixed_size=True)}
    monkeypatch.setitem(sys.modules, "cv2", new_cv2(devices))
    return devices


@pytest.fixture
def rs_devices(monkeypatch: pytest.MonkeyPatch) -> dict:
    devices = {"111": Device(height=24, width=32), "222": Device(height=48, width=64)}
    monkeypatch.setitem(sys.modules, "pyrealsense2", new_realsense(devices))
    return devices


def test_opencv_frames_are_rgb_of_the_declared_size_and_fresh(cv2_devices: dict) -> None:
    cfg = OpenCVCameraConfig(name="main", width=40, height=30, fps=30, role="external")
    with CameraRig([cfg]) as rig:
        assert rig.specs[0].role is CameraRole.EXTERNAL and (rig.specs[0].height, rig.specs[0].width) == (30, 40)
        first = rig.read()["main"]
        assert first.shape == (30, 40, 3) and first.dtype == np.uint8
        assert tuple(first[0, 0][:2]) == (30, 20)  # BGR (n, 20, 30) -> RGB (30, 20, n)
        n0 = int(first[0, 0, 2])
        until(lambda: int(rig.read()["main"][0, 0, 2]) != n0)  # the grab thread keeps the newest
        props = cv2_devices[0].props
        assert (props[3], props[4], props[5]) == (40, 30, 30)  # width, height, fps asked for
    assert cv2_devices[0].released


def test_opencv_wrong_size_fails_open_naming_both_sizes_unless_resize(cv2_devices: dict) -> None:
    cfg = OpenCVCameraConfig(name="wrist", device="/dev/video2", width=32, height=32, role="wrist",
                             first_frame_timeout_s=0.3)
    with pytest.raises(CameraError, match=r"camera 'wrist'.*48x64x3, declared uint8 32x32x3"):
        CameraRig([cfg]).open()
    with CameraRig([cfg.model_copy(update={"resize": True})]) as rig:
        assert rig.read()["wrist"].shape == (32, 32, 3)


def test_opencv_missing_device_and_missing_sdk(cv2_devices: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CameraError, match=r"camera 'main': OpenCV cannot open device 7"):
        CameraRig([OpenCVCameraConfig(name="main", device=7)]).open()
    monkeypatch.setitem(sys.modules, "cv2", None)  # import fails like a missing package
    with pytest.raises(CameraError, match=r"`cv2` is not installed.*opencv-python-headless"):
        CameraRig([OpenCVCameraConfig(name="main")]).open()


def test_a_camera_that_stops_delivering_is_an_error_not_a_repeat(cv2_devices: dict) -> None:
    cfg = OpenCVCameraConfig(name="main", width=64, height=48, stale_after_s=0.1)
    with CameraRig([cfg]) as rig:
        rig.read()
        cv2_devices[0].failing = True

        def stale() -> str:
            try:
                rig.read()
            except CameraError as e:
                return str(e)
            return ""

        msg = until(stale)
        assert "camera 'main': newest frame is" in msg and "returned no frame" in msg


def test_realsense_color_stream_by_serial(rs_devices: dict) -> None:
    cfgs = [RealSenseCameraConfig(name="front", serial="222", width=64, height=48),
            RealSenseCameraConfig(name="wrist", serial="111", width=32, height=24, role="wrist")]
    with CameraRig(cfgs) as rig:
        frames = rig.read()
        assert frames["front"].shape == (48, 64, 3) and frames["wrist"].shape == (24, 32, 3)
        assert tuple(frames["front"][0, 0][:2]) == (30, 20)  # rgb8 as delivered
        assert [c.spec.role.value for c in rig.cameras] == ["external", "wrist"]
    assert rs_devices["111"].released and rs_devices["222"].released


def test_realsense_unsupported_mode_closes_what_was_opened(rs_devices: dict) -> None:
    ok = RealSenseCameraConfig(name="a", serial="111", width=32, height=24)
    bad = RealSenseCameraConfig(name="b", serial="222", width=1280, height=720)
    rig = CameraRig([ok, bad])
    with pytest.raises(CameraError, match=r"camera 'b': RealSense 222 cannot stream color 1280x720"):
        rig.open()
    assert rs_devices["111"].released  # the first camera was closed again
    assert all(c._thread is None for c in rig.cameras)


def test_camera_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        CameraRig([OpenCVCameraConfig(name="a"), RealSenseCameraConfig(name="a")])


@pytest.mark.skipif(importlib.util.find_spec("pyrealsense2") is None, reason="extra `realsense` not installed")
def test_realsense_extra_imports() -> None:
    import pyrealsense2 as rs  # type: ignore[import-not-found]

    assert hasattr(rs, "pipeline") and hasattr(rs, "config")


def test_a_rig_reopens_after_close_with_fresh_frames(cv2_devices: dict) -> None:
    rig = CameraRig([OpenCVCameraConfig(name="main", width=64, height=48)])
    rig.open()
    rig.open()  # idempotent: one grab thread
    first = rig.cameras[0]._thread
    rig.close()
    assert first is not None and not first.is_alive()
    with rig:
        assert rig.read()["main"].shape == (48, 64, 3) and rig.cameras[0]._thread is not first
