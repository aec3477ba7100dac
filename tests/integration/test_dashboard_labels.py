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
from orchestrator.store.models import Event, Label, LabelVersion
from tests.integration.test_dashboard_pages import (
    Dash,
    label_button,
    open_dashboard,
    run_app,
    shown_episode,
)


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
    label_button(ann, "success").click().run()
    label_button(bob, "failure").click().run()
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
    label_button(tab1, "success").click().run()
    label_button(tab2, "failure").click().run()
    assert "Not saved" in tab2.error[0].value and "reload" in tab2.error[0].value
    assert _human(dash.store, ep) == [("ann", True, 1)]  # the first save stands
    tab2.button(key="reload_conflict").click().run()
    assert shown_episode(tab2) == ep and "You labeled this episode **success**" in tab2.info[0].value
    label_button(tab2, "failure").click().run()  # a deliberate change after seeing it
    assert not tab2.error
    assert _human(dash.store, ep) == [("ann", False, 2)]


# --- labels bound to what was seen (issue 9) ---------------------------------------------------


def _desk(at):  # type: ignore[no-untyped-def]
    return at.session_state["label_desk"]


def _versions(store: Store, ep: int, who: str = "ann") -> list[tuple[int, str, bool | None]]:
    with store.read() as s:
        rows = s.execute(select(LabelVersion.version, LabelVersion.action, LabelVersion.success)
                         .where(LabelVersion.episode_id == ep, LabelVersion.evaluator == who)
                         .order_by(LabelVersion.version)).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_two_actions_on_one_render_save_only_the_first(dash: Dash) -> None:
    at = run_app(user="ann")
    ep = shown_episode(at)
    label_button(at, "success").click()
    label_button(at, "failure").click()  # both reach the server in one rerun
    at.run()
    assert _human(dash.store, ep) == [("ann", True, 1)] or _human(dash.store, ep) == [
        ("ann", False, 1)]
    assert len(_versions(dash.store, ep)) == 1  # one action per render: never two labels
    assert any("Not saved: still saving" in e.value for e in at.error)
    assert shown_episode(at) != ep
    with dash.store.read() as s:  # the next episode got nothing
        assert s.scalar(select(Label.id).where(Label.episode_id == shown_episode(at),
                                               Label.source == "human")) is None


def test_a_button_whose_render_is_no_longer_on_screen_is_refused(dash: Dash) -> None:
    at = run_app(user="ann")
    ep = shown_episode(at)
    desk = _desk(at)
    desk.screen = None  # the server moved on (e.g. "Open episode #" clicked) before the click
    label_button(at, "success").click().run()
    assert any("Not saved: the action for episode" in e.value for e in at.error)
    assert _human(dash.store, ep) == []
    assert shown_episode(at) == ep  # still on screen, under a fresh token
    label_button(at, "success").click().run()  # pressed again, now on what is shown: saved
    assert _human(dash.store, ep) == [("ann", True, 1)]


def test_open_episode_number_then_label_it(dash: Dash) -> None:
    at = run_app(user="ann")
    first = shown_episode(at)
    target = dash.sample.episode_ids[-1]
    old_success = label_button(at, "success").key
    at.sidebar.number_input(key="label_jump").set_value(target).run()
    at.sidebar.button(key="label_jump_go").click().run()
    assert shown_episode(at) == target
    assert label_button(at, "success").key != old_success  # a new render, a new token
    label_button(at, "failure").click().run()
    assert _human(dash.store, target) == [("ann", False, 1)]
    assert _human(dash.store, first) == []


def test_undo_takes_the_last_label_back_as_a_new_version(dash: Dash) -> None:
    at = run_app(user="ann")
    ep = shown_episode(at)
    label_button(at, "failure").click().run()
    assert "u** undoes your last label (episode " + str(ep) in " ".join(
        c.value for c in at.caption)
    label_button(at, "undo").click().run()
    assert not at.exception and any("Undone: your label on episode" in s.value for s in at.success)
    assert shown_episode(at) == ep  # back on screen, to label again
    assert _human(dash.store, ep) == []  # retracted: the analyst views see no label
    assert _versions(dash.store, ep) == [(1, "saved", False), (2, "undone", None)]
    label_button(at, "success").click().run()
    assert _human(dash.store, ep) == [("ann", True, 3)]
    with dash.store.read() as s:
        kinds = s.scalars(select(Event.kind).where(Event.episode_id == ep,
                                                   Event.actor == "ann").order_by(Event.id)).all()
    assert kinds == ["label_saved", "label_undone", "label_saved"]
