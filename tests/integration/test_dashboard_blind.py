"""Evaluators see blind views on every page (AppTest, SQLite): no policy name anywhere; the
Episode page hides the sim verdict and others' labels until they have labelled it; Results is
locked blind; the Disagreements tab shows votes without names. Staff see names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st

from orchestrator.store.db import Store
from orchestrator.store.labels import LabelInput, save_label
from tests.integration.test_dashboard_pages import POLICIES, Dash, all_text, open_dashboard, run_app

PAGES = ("label", "results", "campaigns", "fleet", "episode")
EVALUATOR = "eve"  # not in EVALFLEET_STAFF (ann, bob)


@pytest.fixture
def sdash(sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dash]:
    yield open_dashboard(sqlite_store, tmp_path, monkeypatch)
    st.cache_data.clear()
    st.cache_resource.clear()


def _no_names(text: str) -> None:
    for name in POLICIES:
        assert name.lower() not in text.lower(), name


def test_every_page_is_blind_for_an_evaluator(sdash: Dash) -> None:
    ep = sdash.sample.episode_ids[0]
    for page in PAGES:
        at = run_app(page, user=EVALUATOR, **({"episode": str(ep)} if page == "episode" else {}))
        _no_names(all_text(at))
    results = run_app("results", user=EVALUATOR)
    assert results.toggle(key="res_blind_locked").value is True
    assert results.toggle(key="res_blind_locked").disabled
    assert "P-" in all_text(results)


def test_episode_page_reveals_verdicts_only_after_the_evaluators_own_label(sdash: Dash) -> None:
    ep = sdash.sample.episode_ids[0]  # labelled by ann and bob, and by the simulator
    before = run_app("episode", user=EVALUATOR, episode=str(ep))
    text = all_text(before)
    assert "Hidden until you have labelled this episode" in text
    assert not any("evaluator" in df.value.columns for df in before.dataframe)  # no labels
    assert not any(m.label == "ended by" and m.value != "hidden" for m in before.metric)
    assert not any(t.label == "Events" for t in before.tabs)
    save_label(sdash.store, LabelInput(ep, EVALUATOR, True, 1.0))
    after = run_app("episode", user=EVALUATOR, episode=str(ep))
    labels = after.dataframe[-1].value
    assert set(labels["evaluator"]) == {"simulator", "another evaluator", "you"}
    text = all_text(after)
    assert "ann" not in set(labels["evaluator"]) and "bob" not in set(labels["evaluator"])
    _no_names(text)  # never the policy: one name would unblind its code for the campaign


def test_disagreements_show_votes_without_names_to_evaluators(sdash: Dash) -> None:
    at = run_app(user=EVALUATOR)
    line = next(m.value for m in at.markdown if "disputed" in m.value)
    assert "ann" not in line and "bob" not in line and "✓" in line and "✗" in line
    staff = run_app(user="ann")
    line = next(m.value for m in staff.markdown if "disputed" in m.value)
    assert "ann: " in line and "bob: " in line


def test_staff_see_names(sdash: Dash) -> None:
    ep = sdash.sample.episode_ids[0]
    for page, want in (("results", POLICIES), ("campaigns", POLICIES), ("episode", None)):
        text = all_text(run_app(page, user="ann", **({"episode": str(ep)} if page == "episode"
                                                      else {})))
        assert any(name in text for name in (want or POLICIES)), page
        if want:
            assert all(name in text for name in want), page


def test_an_oidc_group_makes_staff(sdash: Dash) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.integration.test_dashboard_pages import APP

    def signed_in(groups: list[str]) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback",
                              "cookie_secret": "x", "client_id": "c", "client_secret": "s",
                              "server_metadata_url": "https://idp.example/.well-known/openid"}
        at.user = {"is_logged_in": True, "email": "pi@lab.example", "groups": groups}
        at.run()
        at.switch_page("views/results.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    staff = signed_in(["evalfleet-staff", "robots"])
    assert "(staff)" in " ".join(c.value for c in staff.sidebar.caption)
    assert all(name in all_text(staff) for name in POLICIES)
    evaluator = signed_in(["robots"])
    assert "(evaluator)" in " ".join(c.value for c in evaluator.sidebar.caption)
    _no_names(all_text(evaluator))
