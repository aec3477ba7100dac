"""The two label races of issue 9, in a real browser (Debian chromium + Playwright) against a
served dashboard, checked in SQL: no label ever lands on an episode that was not rendered.

- Keyboard during a save: `s` on episode A, then `f` (and a click on Failure) while A's save is
  still pending. The save is held open by the test-only gate EVALFLEET_TEST_LABEL_SAVE_GATE
  (dashboard.views.label): the test opens it when it has acted, so "pending" is a fact, not a
  timing guess. A forged key with A's token (a client that did not drop it) is refused by the
  server.
- "Open episode #" then a key at once: the key is ignored until the opened episode is shown; a
  forged key from the page before never lands on the opened episode.
- Undo (`u`) takes the last label back as a new version (label_versions) and shows the episode
  again.

Synchronised on page conditions only (Playwright waits); nothing here measures time. Skipped
without /usr/bin/chromium unless EVALFLEET_REQUIRE_BROWSER=1 (see tests/e2e/test_browser.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from dashboard.cli import free_port, start_server, stop_server
from dashboard.label_keys import TEST_SAVE_GATE_ENV
from orchestrator.store import migrate
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import Event, Label, LabelVersion
from tests.dashboard_sample import CampaignSpec, populate
from tests.e2e.test_browser import _require_browser
from tests.screenshots import browser_page

pytestmark = pytest.mark.browser
WHO = "race-eve"
KEYS = ".ef-keys"
RENDERED: dict[str, int] = {}  # render token -> the episode the browser showed under it


@dataclass(frozen=True)
class Served:
    base: str
    store: Store
    gate: Path
    episodes: tuple[int, ...]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    _require_browser()
    home = tmp_path / "home"
    engine = make_engine(f"sqlite:///{home / 'evalfleet.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    sample = populate(store, home / "media", [CampaignSpec("web", "smoke", ("alpha", "beta"),
                                                           episodes=5)],
                      evaluators=())
    gate = tmp_path / "save-gate"  # absent: every save waits until the test creates it
    env = {**os.environ, "EVALFLEET_HOME": str(home), TEST_SAVE_GATE_ENV: str(gate)}
    env.pop("EVALFLEET_DATABASE_URL", None)
    port = free_port()
    proc = start_server(port, env, tmp_path / "streamlit.log")
    try:
        yield Served(f"http://127.0.0.1:{port}", store, gate, sample.episode_ids)
    finally:
        stop_server(proc)
        store.close()


def _labels(store: Store) -> list[tuple[int, bool]]:
    with store.read() as s:
        rows = s.execute(select(Label.episode_id, Label.success).where(
            Label.evaluator == WHO, Label.source == "human").order_by(Label.episode_id)).all()
    return [(int(e), bool(ok)) for e, ok in rows]


def _versions(store: Store, ep: int) -> list[tuple[int, str, bool | None, str | None]]:
    with store.read() as s:
        rows = s.execute(select(LabelVersion.version, LabelVersion.action, LabelVersion.success,
                                LabelVersion.render_token).where(
            LabelVersion.episode_id == ep, LabelVersion.evaluator == WHO)
            .order_by(LabelVersion.version)).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _ready(page, not_token: str | None = None) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """Wait until an episode is on screen and the keys are armed for it (a render newer than
    not_token); returns (episode shown in the caption, the render's token), and records the
    pair in RENDERED: what the browser showed, with the token it showed it under."""
    page.wait_for_function(
        """([sel, old]) => { const k = document.querySelector(sel);
             return k && k.dataset.state === 'ready' && k.dataset.token
                    && k.dataset.token !== old; }""",
        arg=[KEYS, not_token or ""])
    caption = page.get_by_text(re.compile(r"^episode \d+ · policy")).first.inner_text()
    token = page.locator(KEYS).get_attribute("data-token")
    assert token
    RENDERED[token] = int(caption.split()[1])
    return RENDERED[token], token


def _blur(page) -> None:  # type: ignore[no-untyped-def]
    page.evaluate("() => document.activeElement && document.activeElement.blur()")


def _forge(page, action: str, token: str, episode: int) -> None:  # type: ignore[no-untyped-def]
    """Send an action the way the keys do, bypassing the browser's own lock: what a client that
    did not drop the key would send. Only the server's token check stands in its way."""
    page.evaluate(
        """([action, token, episode]) => window.__evalfleetLabelKeys.send(
             'action', {action, token, episode, nonce: Math.random()})""",
        [action, token, episode])


def test_no_label_lands_on_an_episode_that_was_not_rendered(served: Served) -> None:
    RENDERED.clear()
    with browser_page() as page:
        page.goto(served.base + "/")  # type: ignore[attr-defined]
        box = page.get_by_role("textbox", name="Your name (evaluator)")  # type: ignore[attr-defined]
        box.fill(WHO)
        box.press("Enter")
        a, tok_a = _ready(page)
        _blur(page)

        # --- race 1: keyboard during a save ---------------------------------------------------
        page.keyboard.press("s")  # type: ignore[attr-defined]
        keys = page.locator(KEYS)  # type: ignore[attr-defined]
        page.wait_for_function(  # type: ignore[attr-defined]
            "(sel) => document.querySelector(sel).dataset.state === 'saving'", arg=KEYS)
        page.get_by_text(f"saving… episode {a} as success").wait_for()  # type: ignore[attr-defined]
        assert _labels(served.store) == []  # the save is pending (held by the gate)
        page.keyboard.press("f")  # type: ignore[attr-defined]  # A still on screen, save pending
        page.get_by_role("button", name="Failure").click()  # type: ignore[attr-defined]
        page.wait_for_function(  # type: ignore[attr-defined]
            "(sel) => document.querySelector(sel).dataset.dropped === '2'", arg=KEYS)
        assert keys.get_attribute("data-state") == "saving"
        _forge(page, "failure", tok_a, a)  # a client that let the key through
        assert _labels(served.store) == []
        served.gate.touch()  # let the save finish
        b, _ = _ready(page, not_token=tok_a)
        page.get_by_text("Not saved:").first.wait_for()  # type: ignore[attr-defined]
        assert b != a
        assert _labels(served.store) == [(a, True)]  # A as seen; nothing on B
        assert _versions(served.store, a) == [(1, "saved", True, tok_a)]

        # --- race 2: "Open episode #" then a key at once ----------------------------------------
        target = next(e for e in reversed(served.episodes) if e not in (a, b))
        jump = page.get_by_role("spinbutton", name="Open episode #")  # type: ignore[attr-defined]
        jump.fill(str(target))
        jump.press("Enter")
        open_button = page.locator(".st-key-label_jump_go button")  # type: ignore[attr-defined]
        open_button.wait_for()
        _blur(page)
        b_again, tok_b2 = _ready(page)  # the jump box's rerun: still B, keys armed
        assert b_again == b
        open_button.click()
        page.keyboard.press("s")  # type: ignore[attr-defined]  # before the opened one shows
        shown, tok_t = _ready(page, not_token=tok_b2)
        assert shown == target
        assert _labels(served.store) == [(a, True)]  # the key was ignored: nothing on target or B
        # the same with a client that let the key through: never on the episode not yet shown
        open_button.click()
        _forge(page, "success", tok_t, target)  # the page before the (re)opening showed target
        _, tok_t2 = _ready(page, not_token=tok_t)
        labels = _labels(served.store)
        assert all(ep == target for ep, _ in labels if ep != a)  # target had been on screen

        # --- undo: the last label back, as a new version, audited ---------------------------------
        before = _labels(served.store)
        last_ep = target if (target, True) in before else a
        last_versions = _versions(served.store, last_ep)
        _blur(page)
        page.keyboard.press("u")  # type: ignore[attr-defined]
        shown, tok_u = _ready(page, not_token=tok_t2)
        assert shown == last_ep  # the undone episode is back on screen
        page.get_by_text("Undone: your label on episode").wait_for()  # type: ignore[attr-defined]
        assert (last_ep, True) not in _labels(served.store)
        history = _versions(served.store, last_ep)
        assert history[:-1] == last_versions
        assert history[-1][:3] == (last_versions[-1][0] + 1, "undone", None)
        with served.store.read() as s:
            assert s.scalar(select(Event.payload).where(
                Event.kind == "label_undone", Event.episode_id == last_ep))["undid_version"] == (
                last_versions[-1][0])
        _blur(page)
        page.keyboard.press("f")  # type: ignore[attr-defined]  # relabel what is on screen now
        _ready(page, not_token=tok_u)
        assert (last_ep, False) in _labels(served.store)
        assert _versions(served.store, last_ep)[-1][:3] == (history[-1][0] + 1, "saved", False)
    # In SQL: every label ever saved was given under a render token the browser showed, on the
    # episode it showed under that token; B (on screen while "Open" was in flight) has none.
    with served.store.read() as s:
        rows = s.execute(select(LabelVersion.episode_id, LabelVersion.render_token).where(
            LabelVersion.evaluator == WHO, LabelVersion.action == "saved")).all()
    assert len(rows) >= 2
    assert all(RENDERED.get(tok) == ep for ep, tok in rows), (rows, RENDERED)
    assert _versions(served.store, b) == []
