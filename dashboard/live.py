"""The bridge side of the Fleet page: live camera frames from a bridge's PUB stream and direct
e-stops. robots.client is imported lazily; without it (or without a reachable bridge) the page
still works from the store alone.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

ESTOP_TIMEOUT_MS = 700


@dataclass(frozen=True)
class EstopResult:
    robot: str
    ok: bool
    detail: str


def cameras_of(capabilities: dict[str, Any]) -> tuple[str, ...]:
    cams = capabilities.get("cameras") or ["main"]
    return tuple(str(c.get("name") if isinstance(c, dict) else c) for c in cams)


@st.cache_resource(show_spinner=False, on_release=lambda pair: pair[0].close())
def _subscriber(endpoint: str, cameras: tuple[str, ...]) -> tuple[Any, threading.Lock]:
    from robots.client import FrameSubscriber

    return FrameSubscriber(endpoint, list(cameras)), threading.Lock()


def latest_frames(endpoint: str, cameras: tuple[str, ...],
                  timeout_ms: int = 400) -> tuple[dict[str, np.ndarray], str | None]:
    """Newest frame per camera (possibly none) and an explanation when there is nothing."""
    try:
        sub, lock = _subscriber(endpoint, cameras)
    except ImportError:
        return {}, "live view needs robots.client (FrameSubscriber), which is not installed"
    except Exception as e:  # noqa: BLE001 - a bad endpoint must not break the page
        return {}, f"cannot subscribe to {endpoint}: {e}"
    with lock:  # ZeroMQ sockets are not thread-safe; sessions share this subscriber
        frames = {cam: f.image for cam, f in sub.poll(timeout_ms).items()}
    if not frames:
        return {}, f"no frame from {endpoint} within {timeout_ms} ms (bridge down or not streaming)"
    return frames, None


def estop_direct(robot: str, endpoint: str, reason: str) -> EstopResult:
    """E-stop through the bridge itself, with a short timeout; never raises."""
    try:
        from robots.client import BridgeClient
    except ImportError:
        return EstopResult(robot, False, "robots.client not available: request recorded only")
    try:
        with BridgeClient(endpoint, timeout_ms=ESTOP_TIMEOUT_MS, name="dashboard-estop") as c:
            c.estop(reason)
    except Exception as e:  # noqa: BLE001 - reported; the recorded request still stands
        return EstopResult(robot, False, f"bridge at {endpoint} did not confirm: "
                                         f"{e.__class__.__name__}: {e}"[:300])
    return EstopResult(robot, True, f"bridge at {endpoint} confirmed the e-stop")


def estop_many(targets: Sequence[tuple[str, str]], reason: str) -> list[EstopResult]:
    """estop_direct for (robot, endpoint) pairs, all at once: one dead bridge never delays
    the others."""
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        return list(pool.map(lambda t: estop_direct(t[0], t[1], reason), targets))
