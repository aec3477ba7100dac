"""The Results page shows the picked campaigns' declared questions (AppTest, SQLite): the same
words as `evalfleet report`, with policy names for staff and blind codes for evaluators."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import streamlit as st

from orchestrator.config import get_settings
from orchestrator.store.db import Store
from orchestrator.store.questions import evaluate_campaign
from tests.integration.test_campaign_questions import _blocks, _campaign, _run
from tests.integration.test_dashboard_pages import all_text, run_app


@pytest.fixture
def decided(sqlite_store: Store, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EVALFLEET_HOME", str(tmp_path / "dash-home"))
    monkeypatch.setenv("EVALFLEET_DATABASE_URL",
                       sqlite_store.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("EVALFLEET_STAFF", "ann")
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()
    cid = _campaign(sqlite_store, "pair:Zephyr-VLA-7b,Quokka-H",
                    policies=("Zephyr-VLA-7b", "Quokka-H"))
    for a, b in _blocks(sqlite_store, cid, "Zephyr-VLA-7b", "Quokka-H"):
        _run(sqlite_store, a.id, True)
        _run(sqlite_store, b.id, False)
        if evaluate_campaign(sqlite_store, cid)[0].decided:
            break
    yield sqlite_store
    st.cache_data.clear()
    st.cache_resource.clear()


def test_results_page_shows_each_question(decided: Store) -> None:
    staff = all_text(run_app("results", user="ann"))
    assert "Declared questions (sequential)" in staff
    assert "Zephyr-VLA-7b vs Quokka-H, overall, alpha 0.05, power 0.8, min effect 0.2" in staff
    assert "decided Zephyr-VLA-7b > Quokka-H" in staff
    blind = all_text(run_app("results", user="eve"))  # an evaluator: codes only
    assert "Declared questions (sequential)" in blind and "decided P-" in blind
    assert "Zephyr" not in blind and "Quokka" not in blind
