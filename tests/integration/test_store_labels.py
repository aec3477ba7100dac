"""orchestrator.store.labels on SQLite and PostgreSQL: a save bound to the episode on screen
(render token), the label history (label_versions) and the one-key undo as a new version."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from orchestrator.store import queue
from orchestrator.store.db import Store
from orchestrator.store.labels import (
    LabelConflict,
    LabelError,
    LabelInput,
    LabelRefused,
    LastLabel,
    OnScreen,
    UndoInput,
    check_on_screen,
    label_history,
    last_label,
    new_render_token,
    save_label,
    undo_last_label,
)
from orchestrator.store.models import Event, Label, LabelVersion
from tests.support import make_campaign


def _recorded(store: Store, n: int) -> list[int]:
    """n recorded, counted episodes (no robot, no media)."""
    cid = make_campaign(store, trials=2)
    eps = []
    with store.write() as s:
        cands = queue.pending_candidates(s, limit=n, campaign_ids=[cid])
        leased = queue.lease_trials(s, [c.trial_id for c in cands[:n]], holder="t", lease_s=600)
        for lt in leased:
            ep = queue.start_episode(s, lt.trial_id, holder="t", robot_id=None)
            queue.complete_episode(s, ep, holder="t", step_count=1, late_steps=0,
                                   terminated_by="success", media=[], sim_success=None)
            eps.append(ep)
    assert len(eps) == n
    return eps


def _labels(store: Store) -> list[tuple[int, str, bool, int]]:
    with store.read() as s:
        rows = s.execute(select(Label.episode_id, Label.evaluator, Label.success, Label.version)
                         .where(Label.source == "human").order_by(Label.episode_id)).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_check_on_screen_is_pure_and_strict() -> None:
    tok = new_render_token()
    assert len(tok) >= 16 and tok != new_render_token()
    check_on_screen(5, tok, OnScreen(tok, 5))  # the episode on screen: fine
    with pytest.raises(LabelRefused, match="no render token"):
        check_on_screen(5, None, OnScreen(tok, 5))
    with pytest.raises(LabelRefused, match="changing episode"):
        check_on_screen(5, tok, None)
    with pytest.raises(LabelRefused, match="episode 6 is shown now"):
        check_on_screen(5, tok, OnScreen(new_render_token(), 6))
    with pytest.raises(LabelRefused, match="names episode 6 but the page showed episode 5"):
        check_on_screen(6, tok, OnScreen(tok, 5))


def test_a_save_not_for_the_episode_on_screen_writes_nothing(store: Store) -> None:
    a, b = _recorded(store, 2)
    shown = OnScreen(new_render_token(), a)
    stale = new_render_token()
    with pytest.raises(LabelRefused):  # a key from an earlier render
        save_label(store, LabelInput(a, "ann", True, render_token=stale), screen=shown)
    with pytest.raises(LabelRefused):  # the right render, another episode
        save_label(store, LabelInput(b, "ann", True, render_token=shown.token), screen=shown)
    with pytest.raises(LabelRefused):  # no token at all
        save_label(store, LabelInput(a, "ann", True), screen=shown)
    with store.read() as s:
        assert s.scalar(select(LabelVersion.id)) is None
        assert s.scalar(select(Event.id).where(Event.kind == "label_saved")) is None
    assert _labels(store) == []
    assert save_label(store, LabelInput(a, "ann", True, render_token=shown.token),
                      screen=shown) == 1
    assert _labels(store) == [(a, "ann", True, 1)]
    with store.read() as s:
        assert label_history(s, a, "ann")[0].render_token == shown.token


def test_history_and_undo_restore_then_retract(store: Store) -> None:
    a, b = _recorded(store, 2)
    save_label(store, LabelInput(a, "ann", True, 1.0))
    save_label(store, LabelInput(a, "ann", False, 0.3, "missed_grasp", expected_version=1))
    save_label(store, LabelInput(b, "ann", False, 0.1))
    save_label(store, LabelInput(b, "bob", True, 1.0))  # another evaluator: never undone by ann
    with store.read() as s:
        assert last_label(s, "ann") == LastLabel(b, 1, False)
    # undo #1: ann's label on b had no version before it: retracted
    done = undo_last_label(store, UndoInput("ann", expected=LastLabel(b, 1, False)))
    assert (done.episode_id, done.version, done.undid_version, done.success) == (b, 2, 1, None)
    assert _labels(store) == [(a, "ann", False, 2), (b, "bob", True, 1)]
    # undo #2: the last save still current is a's version 2: back to version 1's success
    with store.read() as s:
        assert last_label(s, "ann") == LastLabel(a, 2, False)
    done = undo_last_label(store, UndoInput("ann"))
    assert (done.episode_id, done.version, done.success) == (a, 3, True)
    with store.read() as s:
        lab = s.scalar(select(Label).where(Label.episode_id == a, Label.evaluator == "ann"))
        assert (lab.success, lab.progress, lab.failure_mode, lab.version) == (True, 1.0, None, 3)
        assert [(v.version, v.action, v.success) for v in label_history(s, a, "ann")] == [
            (1, "saved", True), (2, "saved", False), (3, "undone", True)]
        assert [(v.version, v.action, v.success) for v in label_history(s, b, "ann")] == [
            (1, "saved", False), (2, "undone", None)]
        events = s.execute(select(Event.episode_id, Event.payload).where(
            Event.kind == "label_undone").order_by(Event.id)).all()
        assert [(e, p["undid_version"], p["version"]) for e, p in events] == [(b, 1, 2), (a, 2, 3)]
    # nothing left: a's current version is an undo, not a save (undo never undoes an undo)
    with store.read() as s:
        assert last_label(s, "ann") is None
    with pytest.raises(LabelError, match="no label to undo"):
        undo_last_label(store, UndoInput("ann"))
    assert _labels(store) == [(a, "ann", True, 3), (b, "bob", True, 1)]
    # a label saved again after a retraction goes on with the history's versions
    assert save_label(store, LabelInput(b, "ann", True)) == 3
    with store.read() as s:
        assert [v.version for v in label_history(s, b, "ann")] == [1, 2, 3]


def test_undo_is_bound_to_the_screen_and_to_what_it_offered(store: Store) -> None:
    a, b = _recorded(store, 2)
    save_label(store, LabelInput(a, "ann", True))
    shown = OnScreen(new_render_token(), b)  # b is on screen, the undo offers a's label
    with pytest.raises(LabelRefused):  # a stale key
        undo_last_label(store, UndoInput("ann", LastLabel(a, 1, True), b, "old"), screen=shown)
    save_label(store, LabelInput(b, "ann", False))  # another tab saved meanwhile
    with pytest.raises(LabelConflict, match="nothing was undone"):
        undo_last_label(store, UndoInput("ann", LastLabel(a, 1, True), b, shown.token),
                        screen=shown)
    assert _labels(store) == [(a, "ann", True, 1), (b, "ann", False, 1)]
    done = undo_last_label(store, UndoInput("ann", LastLabel(b, 1, False), b, shown.token),
                           screen=shown)
    assert (done.episode_id, done.success) == (b, None)
    with store.read() as s:
        assert label_history(s, b, "ann")[-1].render_token == shown.token


def test_a_save_over_a_retracted_label_from_a_stale_page_conflicts(store: Store) -> None:
    (a,) = _recorded(store, 1)
    save_label(store, LabelInput(a, "ann", True))
    undo_last_label(store, UndoInput("ann"))  # e.g. in another tab
    with pytest.raises(LabelConflict, match="deleted meanwhile"):
        save_label(store, LabelInput(a, "ann", False, expected_version=1))
    assert _labels(store) == []


def test_migration_0003_starts_the_history_with_the_labels_there_are(db_url: str) -> None:
    from orchestrator.store import migrate
    from orchestrator.store.db import make_engine

    engine = make_engine(db_url)
    migrate.upgrade(engine)
    store = Store(engine)
    try:
        a, b = _recorded(store, 2)
        save_label(store, LabelInput(a, "ann", True))
        save_label(store, LabelInput(a, "ann", False, expected_version=1))
        save_label(store, LabelInput(b, "bob", True))
        migrate.downgrade(engine, "0002")  # label_versions gone, labels stay
        migrate.upgrade(engine)
        with store.read() as s:
            assert [(v.version, v.action, v.success) for v in label_history(s, a, "ann")] == [
                (2, "saved", False)]
            assert last_label(s, "bob") == LastLabel(b, 1, True)
        # the label before the history cannot be restored: undo says so, changes nothing
        undo_last_label(store, UndoInput("bob"))  # bob's version 1: retracted
        with pytest.raises(LabelError, match="predates the label history"):
            undo_last_label(store, UndoInput("ann"))
        assert _labels(store) == [(a, "ann", False, 2)]
    finally:
        store.close()
