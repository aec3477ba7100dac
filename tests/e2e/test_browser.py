"""The served dashboard in a real browser: Debian's chromium driven by Playwright (the system
browser; nothing is downloaded). Labels episodes by clicking and by keyboard shortcut, checks the
rows in the store and that the browser decodes the episode video (H.264).

Without /usr/bin/chromium the test is skipped, unless EVALFLEET_REQUIRE_BROWSER=1 (CI), where
it fails instead.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from dashboard.cli import free_port, start_server, stop_server
from orchestrator.store import migrate
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import Label
from tests.dashboard_sample import CampaignSpec, populate
from tests.screenshots import CHROMIUM, browser_page, enter_name, settle

pytestmark = pytest.mark.browser


def _require_browser() -> None:
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright Python package is missing (pip install playwright)"
    if missing:
        if os.environ.get("EVALFLEET_REQUIRE_BROWSER") == "1":
            pytest.fail(f"EVALFLEET_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    _require_browser()
    home = tmp_path / "home"
    engine = make_engine(f"sqlite:///{home / 'evalfleet.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    populate(store, home / "media", [CampaignSpec("web", "smoke", ("alpha", "beta"))],
             evaluators=())
    env = {**os.environ, "EVALFLEET_HOME": str(home)}
    env.pop("EVALFLEET_DATABASE_URL", None)
    port = free_port()
    proc = start_server(port, env, tmp_path / "streamlit.log")
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        stop_server(proc)
        store.close()


def _labels(store: Store, who: str, timeout_s: float = 20.0, want: int = 1) -> list[tuple]:
    deadline = time.monotonic() + timeout_s
    while True:
        with store.read() as s:
            rows = s.execute(select(Label.episode_id, Label.success).where(
                Label.evaluator == who).order_by(Label.id)).all()
        if len(rows) >= want or time.monotonic() > deadline:
            return [tuple(r) for r in rows]
        time.sleep(0.2)


def test_label_an_episode_by_clicking(served: tuple[str, Store]) -> None:
    base, store = served
    with browser_page() as page:
        page.goto(base + "/")  # type: ignore[attr-defined]
        settle(page)
        enter_name(page, "browser-eve")
        page.wait_for_selector("video")  # type: ignore[attr-defined]
        # the recorded MP4 is H.264 the browser can decode (not OpenCV's MP4V)
        page.wait_for_function(  # type: ignore[attr-defined]
            "() => [...document.querySelectorAll('video')].every(v => v.readyState >= 2)",
            timeout=20_000)
        assert page.evaluate(  # type: ignore[attr-defined]
            "() => document.querySelector('video').videoWidth") > 0
        caption = page.get_by_text(re.compile(r"^episode \d+ · policy")).first.inner_text()  # type: ignore[attr-defined]
        first = int(caption.split()[1])
        page.get_by_role("button", name="Success").click()  # type: ignore[attr-defined]
        assert _labels(store, "browser-eve") == [(first, True)]
        page.get_by_text("Saved episode", exact=False).wait_for()  # type: ignore[attr-defined]
        settle(page)
        page.evaluate("() => document.activeElement && document.activeElement.blur()")  # type: ignore[attr-defined]
        page.keyboard.press("f")  # type: ignore[attr-defined]  # the failure shortcut
        rows = _labels(store, "browser-eve", want=2)
    assert len(rows) == 2 and rows[1][1] is False and rows[1][0] != first
