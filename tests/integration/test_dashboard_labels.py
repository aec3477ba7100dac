"""Labeling from the dashboard under concurrency, on SQLite and PostgreSQL: two evaluators at
once lose nothing; two sessions saving over the same label get a conflict, not an overwrite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import select

from orchestrator.store.db import Store
from orchestrator.store.labels import LabelInput
from orchestrator.store.models import Label
from tests.integration.test_dashboard_pages import Dash, open_dashboard, run_app, shown_episode


@pytest.fixture
def dash(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dash]:
    yield open_dashboard(store, tmp_path, monkeypatch, labels=False)
    st.cache_data.clear()
    st.cache_resource.clear()


def _human(store: Store, ep: int) -> list[tuple[str, bool, int]]:
    with store.read() as s:
        rows = s.execute(select(Label.evaluator, Label.success, Label.version).where(
            Label.episode_id == ep, Label.source == "human").order_by(Label.evaluator)).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_two_evaluators_at_once_lose_nothing(dash: Dash) -> None:
    ann, bob = run_app(user="ann"), run_app(user="bob")
    ep = shown_episode(ann)
    assert shown_episode(bob) == ep  # both have the same episode open
    ann.button(key="label_success").click().run()
    bob.button(key="label_failure").click().run()
    assert not ann.error and not bob.error
    assert _human(dash.store, ep) == [("ann", True, 1), ("bob", False, 1)]

    from dashboard import data

    other = dash.sample.episode_ids[-1]
    barrier, errors = threading.Barrier(4, timeout=30), []

    def save(who: str) -> None:
        try:
            barrier.wait()
            data.save_label(LabelInput(other, who, who in ("cyd", "eli"), 0.5))
        except BaseException as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    threads = [threading.Thread(target=save, args=(w,)) for w in ("cyd", "dan", "eli", "fay")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert _human(dash.store, other) == [("cyd", True, 1), ("dan", False, 1), ("eli", True, 1),
                                         ("fay", False, 1)]


def test_saving_over_the_same_label_is_a_clear_conflict(dash: Dash) -> None:
    tab1, tab2 = run_app(user="ann"), run_app(user="ann")  # one evaluator, two browser tabs
    ep = shown_episode(tab1)
    assert shown_episode(tab2) == ep
    tab1.button(key="label_success").click().run()
    tab2.button(key="label_failure").click().run()
    assert "Not saved" in tab2.error[0].value and "reload" in tab2.error[0].value
    assert _human(dash.store, ep) == [("ann", True, 1)]  # the first save stands
    tab2.button(key="reload_conflict").click().run()
    assert shown_episode(tab2) == ep and "You labeled this episode **success**" in tab2.info[0].value
    tab2.button(key="label_failure").click().run()  # a deliberate change after seeing it
    assert not tab2.error
    assert _human(dash.store, ep) == [("ann", False, 2)]
