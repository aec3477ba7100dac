"""The Fleet page's bridge side against a real in-process BridgeServer: live frames from its PUB
stream, a direct e-stop, and graceful messages when the bridge is not there."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import update

from dashboard import live
from orchestrator.store.db import Store
from orchestrator.store.models import Robot
from tests.integration.test_dashboard_pages import open_dashboard, run_app

bridge_mod = pytest.importorskip("robots.bridge")
fakes = pytest.importorskip("tests.integration.fakes")


@pytest.fixture
def bridge() -> Iterator[object]:
    cfg = bridge_mod.BridgeConfig(bind="tcp://127.0.0.1:*", pub_bind="tcp://127.0.0.1:*",
                                  stream_fps=50)
    with bridge_mod.BridgeServer(fakes.TwoCameraDriver(), cfg) as b:
        yield b


def test_live_frames_and_direct_estop(bridge) -> None:  # type: ignore[no-untyped-def]
    got: dict = {}
    deadline = time.monotonic() + 10
    while set(got) != {"front", "wrist"} and time.monotonic() < deadline:
        frames, _ = live.latest_frames(bridge.pub_endpoint, ("front", "wrist"), 300)
        got.update(frames)
    assert {k: v.shape for k, v in got.items()} == {"front": (64, 64, 3), "wrist": (64, 64, 3)}
    res = live.estop_direct("arm-x", bridge.endpoint, "test")
    assert res.ok, res.detail
    down = live.estop_direct("arm-y", "tcp://127.0.0.1:1", "test")
    assert not down.ok and "did not confirm" in down.detail
    frames, why = live.latest_frames("tcp://127.0.0.1:1", ("front",), 100)
    assert frames == {} and "no frame" in why


def _images(at) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for n in at.main if type(n).__name__ == "Image")


def test_fleet_page_shows_the_live_image(bridge, sqlite_store: Store, tmp_path: Path,  # type: ignore[no-untyped-def]
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    dash = open_dashboard(sqlite_store, tmp_path, monkeypatch, labels=False)
    with dash.store.write() as s:
        s.execute(update(Robot).where(Robot.name == "arm-1").values(capabilities={
            "cameras": ["front", "wrist"], "pub_endpoint": bridge.pub_endpoint}))
    try:
        at = run_app("fleet")
        at.toggle(key="fleet_live").set_value(True).run()
        for _ in range(5):  # the first poll may come before the subscription is live
            if _images(at) == 2:
                break
            at.run()
        assert _images(at) == 2  # arm-1's two cameras
        assert any("arm-2" in c.value and "pub_endpoint" in c.value for c in at.caption)
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
