"""Blinding in a real browser (Debian's chromium via Playwright, as tests/e2e/test_browser.py):
an evaluator walks every page of the dashboard's navigation, an episode's page (before and
after labelling it), the Results page and the Label page's Disagreements tab, and no policy
name appears anywhere in the rendered page text. Staff, on the same pages, do see the names.

The policies have unusual names, so a match can only be a leak. Every wait is on a page
condition (the page's own text, then Streamlit's script state), never a fixed sleep.
Dataframes are drawn on a canvas (no text nodes): tests/integration/test_dashboard_blind.py
checks their cells on the same pages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard.cli import free_port, start_server, stop_server
from orchestrator.store import migrate
from orchestrator.store.db import Store, make_engine
from orchestrator.store.labels import LabelInput, save_label
from tests.dashboard_sample import CampaignSpec, populate
from tests.e2e.test_browser import _require_browser
from tests.screenshots import browser_page

pytestmark = pytest.mark.browser

POLICIES = ("zebra-policy-xq", "okapi-policy-vw")
STAFF = "staff-sam"
EVALUATOR = "eve-evaluator"
PAGE_TIMEOUT_MS = 60_000
NAV_PAGES = {"Label", "Results", "Campaigns", "Fleet", "Episode"}  # dashboard/app.py's PAGES


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store, tuple[int, ...]]]:
    _require_browser()
    home = tmp_path / "home"
    engine = make_engine(f"sqlite:///{home / 'evalfleet.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    sample = populate(store, home / "media", [CampaignSpec("blind-e2e", "smoke", POLICIES)],
                      evaluators=())
    first, second = sample.episode_ids[:2]
    for ep, who, ok in ((first, "ann", True), (first, "bob", False), (second, "ann", True)):
        save_label(store, LabelInput(ep, who, ok, 1.0 if ok else 0.3))  # first: a disputed tie
    env = {**os.environ, "EVALFLEET_HOME": str(home), "EVALFLEET_STAFF": STAFF}
    env.pop("EVALFLEET_DATABASE_URL", None)
    port = free_port()
    proc = start_server(port, env, tmp_path / "streamlit.log")
    try:
        yield f"http://127.0.0.1:{port}", store, sample.episode_ids
    finally:
        stop_server(proc)
        store.close()


def _done(page, marker) -> None:  # type: ignore[no-untyped-def]
    """Wait until `marker` (text, or a locator) is on the page, i.e. the new script run has
    drawn it, then until that run has finished (nothing more will be drawn)."""
    where = page.get_by_text(marker) if isinstance(marker, str | re.Pattern) else marker
    where.first.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']",
                           timeout=PAGE_TIMEOUT_MS)


def _text(page) -> str:  # type: ignore[no-untyped-def]
    """Every text node of the page, hidden tab panels and collapsed expanders included."""
    return str(page.evaluate("() => document.body.textContent"))


def _leaks(text: str) -> list[str]:
    return [name for name in POLICIES if name.lower() in text.lower()]


def _sign_in(page, base: str, name: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(base + "/")
    page.wait_for_selector("[data-testid='stApp']")
    box = page.get_by_role("textbox", name="Your name (evaluator)")
    box.fill(name)
    box.press("Enter")
    _done(page, re.compile(r"^Role: "))


def _title(page, title: str):  # type: ignore[no-untyped-def]
    """The page's own title (the h1 in the main area, not the sidebar's link of that name)."""
    return page.get_by_test_id("stMain").get_by_role(
        "heading", level=1, name=re.compile(rf"^{re.escape(title)}"))


def _go(page, title: str, marker=None) -> None:  # type: ignore[no-untyped-def]
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    _done(page, _title(page, title))
    if marker is not None:
        _done(page, marker)


def _open_episode(page, ep: int) -> None:  # type: ignore[no-untyped-def]
    _go(page, "Episode", "Enter an episode id")
    box = page.get_by_role("spinbutton", name="Episode id")
    box.fill(str(ep))
    box.press("Enter")
    _done(page, f"Episode {ep}:")


def _walk(page, base: str, who: str, first_episode: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Every page of the navigation, then the Episode page with an episode open and the
    Label page's Disagreements tab: the rendered text of each."""
    _sign_in(page, base, who)
    nav = page.get_by_test_id("stSidebarNav").get_by_role("link")
    titles = [t.strip().splitlines()[-1].strip() for t in nav.all_inner_texts()]  # no icon
    assert NAV_PAGES <= set(titles), titles
    seen: dict[str, str] = {}
    for title in titles:
        _go(page, title)
        if title == "Campaigns":  # the sample campaign is done: show all, not just active
            page.get_by_test_id("stButtonGroup").get_by_text("all", exact=True).click()
            _done(page, re.compile(r"trials done"))
        seen[title] = _text(page)
    _open_episode(page, first_episode)
    seen["Episode (open)"] = _text(page)
    _go(page, "Results", "Blind (policy codes only)")
    seen["Results (again)"] = _text(page)
    _go(page, "Label", "Disagreements")
    page.get_by_role("tab", name="Disagreements").click()
    page.get_by_text("disputed (tie)").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    seen["Disagreements"] = _text(page)
    return seen


def test_an_evaluator_sees_no_policy_name_on_any_page(
        served: tuple[str, Store, tuple[int, ...]]) -> None:
    base, store, episodes = served
    first = episodes[0]
    with browser_page() as page:
        seen = _walk(page, base, EVALUATOR, first)
        assert "Role: evaluator" in seen["Label"]
        assert "P-" in seen["Results (again)"] and "P-" in seen["Episode (open)"]
        # the disagreement is there, with its votes, but without the evaluators' names
        assert "disputed (tie)" in seen["Disagreements"]
        assert not re.search(r"\b(ann|bob): [✓✗]", seen["Disagreements"])
        assert "Hidden until you have labelled this episode" in seen["Episode (open)"]
        # label the episode (as the evaluator): the verdicts appear, still no name
        save_label(store, LabelInput(first, EVALUATOR, True, 1.0))
        _go(page, "Fleet")
        _open_episode(page, first)
        seen["Episode (labelled)"] = _text(page)
        # (tables are drawn on a canvas: their cells are checked in
        # tests/integration/test_dashboard_blind.py, which decodes every dataframe)
        assert "Hidden until you have labelled" not in seen["Episode (labelled)"]
        assert "endedbyhidden" not in re.sub(r"\s+", "", seen["Episode (labelled)"])
        assert "endedbyhidden" in re.sub(r"\s+", "", seen["Episode (open)"])
    leaks = {where: _leaks(text) for where, text in seen.items() if _leaks(text)}
    assert not leaks, f"policy names shown to an evaluator: {leaks}"


def test_staff_see_the_names(served: tuple[str, Store, tuple[int, ...]]) -> None:
    base, _, episodes = served
    with browser_page() as page:
        seen = _walk(page, base, STAFF, episodes[0])
    assert "Role: staff" in seen["Label"]
    assert set(_leaks(seen["Campaigns"])) == set(POLICIES), seen["Campaigns"][-600:]
    assert _leaks(seen["Episode (open)"])  # the episode's own policy, by name
    for where in ("Results", "Results (again)"):  # names by default for staff
        assert set(_leaks(seen[where])) == set(POLICIES), where
