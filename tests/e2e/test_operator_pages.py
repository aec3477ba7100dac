"""The operator pages in a real browser at 800 px (Debian chromium via Playwright): the Fleet
page shows a silent arm as stale and keeps E-STOP ALL and the per-arm e-stops (each naming its
arm) visible with their whole labels; the Campaigns page asks before cancelling and its New
campaign form preselects nothing. Skipped without /usr/bin/chromium (see test_browser.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from dashboard.cli import free_port, start_server, stop_server
from orchestrator.store import migrate
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import Campaign, Robot
from tests.dashboard_sample import CampaignSpec, populate
from tests.e2e.test_browser import _require_browser
from tests.screenshots import browser_page, enter_name, settle

pytestmark = pytest.mark.browser
WIDTH, HEIGHT = 800, 900


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    _require_browser()
    home = tmp_path / "home"
    engine = make_engine(f"sqlite:///{home / 'evalfleet.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    populate(store, home / "media", [CampaignSpec("ops", "smoke", ("alpha", "beta"), episodes=3)],
             evaluators=())
    with store.write() as s:
        # arm-1's orchestrator "just" wrote (a future time stays fresh however slow the test
        # runs); arm-2's has been silent for 7 minutes, its row still saying busy
        s.execute(update(Robot).where(Robot.name == "arm-1")
                  .values(last_heartbeat=datetime.now(UTC) + timedelta(hours=1)))
        s.execute(update(Robot).where(Robot.name == "arm-2")
                  .values(last_heartbeat=datetime.now(UTC) - timedelta(minutes=7)))
    env = {**os.environ, "EVALFLEET_HOME": str(home), "EVALFLEET_STAFF": "dana"}
    env.pop("EVALFLEET_DATABASE_URL", None)
    port = free_port()
    proc = start_server(port, env, tmp_path / "streamlit.log")
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        stop_server(proc)
        store.close()


def _fully_shown(page, button) -> None:  # type: ignore[no-untyped-def]
    """The button is inside the 800 x 900 viewport and its label is not clipped."""
    box = button.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, box
    assert box["y"] >= 0 and box["y"] + box["height"] <= HEIGHT, box
    clipped = button.evaluate(
        "b => [...b.querySelectorAll('p, span, div')].some(e => e.scrollWidth > e.clientWidth + 1)")
    assert not clipped, button.inner_text()


def test_fleet_at_800px_stale_arm_and_named_estops(served: tuple[str, Store]) -> None:
    base, store = served
    with browser_page(WIDTH, HEIGHT) as page:
        page.goto(f"{base}/fleet")  # type: ignore[attr-defined]
        page.get_by_role("button", name="E-stop arm-2").wait_for()  # type: ignore[attr-defined]
        settle(page)
        everything = page.get_by_role("button", name="E-STOP ALL")  # type: ignore[attr-defined]
        assert everything.count() == 1
        _fully_shown(page, everything)
        assert everything.inner_text().strip().endswith("E-STOP ALL")
        for arm in ("arm-1", "arm-2"):
            own = page.get_by_role("button", name=f"E-stop {arm}", exact=True)  # type: ignore[attr-defined]
            assert own.count() == 1
            _fully_shown(page, own)
        alert = page.get_by_test_id("stAlert").filter(has_text="last said busy")  # type: ignore[attr-defined]
        assert "arm-2" in alert.inner_text() and "arm-1" not in alert.inner_text()
        assert "1 online, 1 stale" in page.inner_text("body")  # type: ignore[attr-defined]
        # a campaign runs: the page refreshes by itself; arm-1's orchestrator now goes silent
        # and, without any reload or click, the page says so
        assert "Refreshing every 3 s while ops runs" in page.inner_text("body")  # type: ignore[attr-defined]
        with store.write() as s:
            s.execute(update(Robot).where(Robot.name == "arm-1")
                      .values(last_heartbeat=datetime.now(UTC) - timedelta(minutes=3)))
        page.get_by_text("2 arms · 2 stale").wait_for(timeout=60_000)  # type: ignore[attr-defined]


def test_campaigns_at_800px_cancel_asks_and_form_preselects_nothing(
        served: tuple[str, Store]) -> None:
    base, store = served
    with store.read() as s:
        cid, name, status = s.execute(select(Campaign.id, Campaign.name, Campaign.status)).one()
    with browser_page(WIDTH, HEIGHT) as page:
        page.goto(f"{base}/campaigns")  # type: ignore[attr-defined]
        settle(page)
        enter_name(page, "dana")  # staff: the New campaign form is there
        page.get_by_role("button", name="Cancel", exact=True).first.click()  # type: ignore[attr-defined]
        yes = page.get_by_role("button", name=f"Yes, cancel {name} (#{cid})")  # type: ignore[attr-defined]
        yes.wait_for()
        assert "pending trials" in page.get_by_test_id("stAlert").filter(  # type: ignore[attr-defined]
            has_text="Cancel campaign").inner_text()
        with store.read() as s:
            assert s.get(Campaign, cid).status == status  # nothing happened yet
        page.get_by_role("button", name="No, keep it").click()  # type: ignore[attr-defined]
        yes.wait_for(state="detached")
        with store.read() as s:
            assert s.get(Campaign, cid).status == status
        page.get_by_text("New campaign").click()  # type: ignore[attr-defined]
        form = page.get_by_test_id("stForm")  # type: ignore[attr-defined]
        form.get_by_role("button", name="Create campaign").wait_for()
        # the empty selects show their placeholders: nothing chosen for the user
        assert form.get_by_placeholder("Choose one or more policies").count() == 1
        assert form.get_by_placeholder("Choose a protocol").count() == 1
        assert form.locator("[data-baseweb='tag']").count() == 0  # no policy chip preselected
        form.get_by_role("button", name="Create campaign").click()
        page.get_by_text("Choose at least one policy").wait_for()  # type: ignore[attr-defined]
        with store.read() as s:
            assert len(s.scalars(select(Campaign.id)).all()) == 1
