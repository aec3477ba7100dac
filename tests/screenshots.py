"""Screenshots of every dashboard page from a real browser (Debian chromium via Playwright),
served on a freshly populated sample store (tests/dashboard_sample.py). Test scaffolding,
not part of the shipped `dashboard` package.

    .venv/bin/python -m tests.screenshots [--out docs/screenshots]

Never downloads a browser: it drives /usr/bin/chromium (apt-get install chromium).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dashboard.cli import free_port, start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
REPO = Path(__file__).resolve().parents[1]


@contextmanager
def browser_page(width: int = 1440, height: int = 1000) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} not found: apt-get install -y chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def settle(page, ms: int = 600) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_selector("[data-testid='stApp']")
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector(\"[data-testid='stStatusWidget']\")", timeout=30_000)
    page.wait_for_timeout(ms)


def full_height(page, limit: int = 3200) -> None:
    """Streamlit scrolls inside its main block: grow the viewport to show all of it."""
    height = page.evaluate(
        "() => { const m = document.querySelector(\"[data-testid='stMain']\");"
        " return m ? m.scrollHeight : document.body.scrollHeight; }")
    page.set_viewport_size({"width": 1440, "height": max(900, min(int(height) + 40, limit))})
    settle(page, 1000)


def enter_name(page, name: str) -> None:
    box = page.get_by_role("textbox", name="Your name (evaluator)")
    box.fill(name)
    box.press("Enter")
    settle(page)


def shoot(base: str, out: Path, before: Callable[[str], None] | None = None) -> list[Path]:
    """One PNG per page into `out`; `before(name)` runs before a page is opened."""
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with browser_page() as page:
        page.goto(f"{base}/")  # type: ignore[attr-defined]
        settle(page)
        enter_name(page, "dana")
        page.wait_for_selector("video")  # type: ignore[attr-defined]
        settle(page, 1200)
        for name, link, wait in [
            ("label", None, "video"),
            ("results", "Results", "[data-testid='stVegaLiteChart'], .vega-embed"),
            ("campaigns", "Campaigns", "[data-testid='stDataFrame']"),
            ("fleet", "Fleet", "[data-testid='stDataFrame']"),
            ("episode", "Episode", "video"),
        ]:
            if before is not None:
                before(name)
            if link:  # in-app navigation keeps the session (and the evaluator's name)
                page.get_by_test_id("stSidebarNav").get_by_role(  # type: ignore[attr-defined]
                    "link", name=link).click()
                settle(page)
            if name == "episode":
                box = page.get_by_role("spinbutton", name="Episode id")  # type: ignore[attr-defined]
                box.fill("3")
                box.press("Enter")
                settle(page)
            page.wait_for_selector(wait)  # type: ignore[attr-defined]
            settle(page, 1500)
            target = out / f"{name}.png"
            full_height(page)
            page.screenshot(path=str(target))  # type: ignore[attr-defined]
            page.set_viewport_size({"width": 1440, "height": 1000})  # type: ignore[attr-defined]
            shots.append(target)
            if name == "results":  # its statistics sections, below the fold of results.png
                shots.append(statistics_shot(page, out))
        # the Fleet page as an operator's laptop shows it: E-STOP ALL first, labels whole
        if before is not None:
            before("fleet-800")
        page.get_by_test_id("stSidebarNav").get_by_role(  # type: ignore[attr-defined]
            "link", name="Fleet").click()
        page.set_viewport_size({"width": 800, "height": 900})  # type: ignore[attr-defined]
        settle(page, 1500)
        page.wait_for_selector("[data-testid='stDataFrame']")  # type: ignore[attr-defined]
        settle(page, 1500)
        target = out / "fleet-800.png"
        page.screenshot(path=str(target))  # type: ignore[attr-defined]
        shots.append(target)
    return shots


def statistics_shot(page, out: Path) -> Path:  # type: ignore[no-untyped-def]
    """The Results page from its success-detector section down to the declared questions."""
    page.set_viewport_size({"width": 1440, "height": 1500})  # type: ignore[attr-defined]
    page.get_by_text("Success detector: prediction-powered estimates").scroll_into_view_if_needed()
    settle(page, 800)
    target = out / "results-statistics.png"
    page.screenshot(path=str(target))  # type: ignore[attr-defined]
    page.set_viewport_size({"width": 1440, "height": 1000})  # type: ignore[attr-defined]
    return target


def fleet_heartbeats(store: object) -> None:
    """Before the Fleet shot: arm-1's orchestrator has just written, arm-2's went silent
    minutes ago (its row still says busy), so the page shows one arm online, one stale."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from orchestrator.store.models import Robot

    now = datetime.now(UTC)
    with store.write() as s:  # type: ignore[attr-defined]
        s.execute(update(Robot).where(Robot.name == "arm-1").values(last_heartbeat=now))
        s.execute(update(Robot).where(Robot.name == "arm-2")
                  .values(last_heartbeat=now - timedelta(minutes=7)))


def sample_statistics(store: object, campaign: str, protocol: str) -> None:
    """For the Results shot: `campaign` declares the question "its first policy against its
    second" (evaluated on the sample's labels), has a 50% human audit, and a detector that
    agrees with the humans' majority on about 85% of the episodes labelled every episode."""
    import random

    from sqlalchemy import select

    from orchestrator.detectors.build import detector_spec
    from orchestrator.store.campaigns import get_campaign
    from orchestrator.store.detectors import (
        AutoLabel,
        find_detector,
        register_detector,
        save_auto_labels,
    )
    from orchestrator.store.models import CampaignPolicy, Episode, Label, Policy, Trial
    from orchestrator.store.questions import add_questions, evaluate_campaign
    from protocols.loader import load_protocol, resolve_protocol_path
    from protocols.questions import parse_spec

    rng = random.Random(5)
    with store.write() as s:  # type: ignore[attr-defined]
        c = get_campaign(s, campaign)
        c.audit_rate = 0.5  # sample scaffolding: a real campaign fixes it at creation
        cps = {name: cp for cp, name in s.execute(
            select(CampaignPolicy, Policy.name).join(Policy, Policy.id == CampaignPolicy.policy_id)
            .where(CampaignPolicy.campaign_id == c.id).order_by(CampaignPolicy.position))}
        a, b = list(cps)[:2]
        loaded = load_protocol(resolve_protocol_path(protocol))
        add_questions(s, c.id, loaded, cps, [parse_spec(f"pair:{a},{b};min_effect=0.3")],
                      c.trials_per_task)
        register_detector(s, detector_spec("judge-vlm", "sim", {"flip_rate": 0.15, "seed": 1}),
                          actor="sample")
        row = find_detector(s, "judge-vlm")
        truth = {}
        for eid, ok in s.execute(select(Label.episode_id, Label.success)
                                 .join(Episode, Episode.id == Label.episode_id)
                                 .join(Trial, Trial.id == Episode.trial_id)
                                 .where(Trial.campaign_id == c.id, Label.source == "human")):
            truth.setdefault(eid, []).append(bool(ok))
        eids = s.scalars(select(Episode.id).join(Trial, Trial.id == Episode.trial_id)
                         .where(Trial.campaign_id == c.id, Episode.counted)).all()
        labels = []
        for eid in eids:
            votes = truth.get(eid) or [rng.random() < 0.5]
            ok = sum(votes) * 2 > len(votes)
            flip = rng.random() < 0.15
            labels.append(AutoLabel(eid, ok != flip, round(rng.uniform(0.55, 0.99), 4)))
        save_auto_labels(s, row, c.id, labels, actor="sample")
        cid = c.id
    evaluate_campaign(store, cid)  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = ap.parse_args()
    from orchestrator.store import migrate
    from orchestrator.store.db import Store, make_engine
    from tests.dashboard_sample import CampaignSpec, populate

    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        engine = make_engine(f"sqlite:///{home / 'evalfleet.db'}")
        migrate.upgrade(engine)
        store = Store(engine)
        populate(store, home / "media", (
            CampaignSpec("rt2-generalization-nov", "rt2_generalization",
                         ("rt2-pali-3b", "openvla-7b"), trials=1, episodes=56),
            CampaignSpec("smoke-nightly", "smoke", ("rt2-pali-3b", "scripted-baseline"),
                         trials=2)))
        sample_statistics(store, "rt2-generalization-nov", "rt2_generalization")
        # dana is staff: the screenshots show names (evaluators see the blind views)
        env = {**os.environ, "EVALFLEET_HOME": str(home), "EVALFLEET_STAFF": "dana"}
        env.pop("EVALFLEET_DATABASE_URL", None)
        port = free_port()
        proc = start_server(port, env, home / "streamlit.log")
        try:
            for p in shoot(f"http://127.0.0.1:{port}", args.out, before=lambda name: (
                    fleet_heartbeats(store) if name.startswith("fleet") else None)):
                print(f"wrote {p}")
        finally:
            stop_server(proc)
            store.close()


if __name__ == "__main__":
    main()
