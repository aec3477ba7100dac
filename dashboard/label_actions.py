"""The Label page's actions, bound to what was seen (the page is dashboard/views/label.py).

Every render of an episode gets a fresh random token, kept server-side in session state as
an OnScreen (token -> episode). The buttons (their widget keys carry the token, so a click
names the render it was on) and the keys (dashboard.label_keys: the browser sends the token it
rendered) submit it with the episode id. The first action consumes the token; an action whose
token is not the one on screen, or that comes while another is being saved, is refused with a
message and saves nothing. The store checks the token again (orchestrator.store.labels).

Streamlit may run two script threads of one session at once (a rerun request starts a new
thread while the old one is still inside a slow save, and stops the old one at its next
st call, every st.session_state access included). So the actions live in one Desk object per
session, mutated under a lock and never through st.session_state: an accepted action is
claimed and carried out exactly once, with no st call in between; a thread that finds it in
flight shows "saving…" and waits for it before rendering the next episode.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard import data, label_keys
from orchestrator.store.labels import (
    LabelConflict,
    LabelError,
    LabelInput,
    LabelRefused,
    LastLabel,
    OnScreen,
    UndoInput,
    check_on_screen,
    new_render_token,
)

CURRENT, SHOWN, SEEN, SKIPPED = "label_current", "label_shown", "label_seen", "label_skipped"
DESK = "label_desk"
FLIGHT_WAIT_S = 120.0  # a thread waiting for another's save gives up after this
_LOCK = threading.Lock()  # guards every Desk (held for microseconds, never across an st call)


@dataclass(frozen=True)
class Render:
    """What one render put on screen: its token and the undo it offered."""

    screen: OnScreen
    offered: LastLabel | None


@dataclass(frozen=True)
class Accepted:
    """An action whose token was the one on screen, with the form values it was given with."""

    action: str  # success | failure | skip | undo
    render: Render
    progress: float = 1.0
    failure_mode: str | None = None
    notes: str | None = None
    seen_version: int | None = None


@dataclass(frozen=True)
class Effects:
    """What the page shows next once an action is done (applied to st.session_state,
    idempotently, by whichever thread renders after it)."""

    leave: int | None = None  # stop holding this episode on screen
    show: int | None = None  # hold this one on screen (undo: the episode is back)
    skip: int | None = None


@dataclass
class Flight:
    """An accepted action being carried out by one script thread; others wait on `done`."""

    accepted: Accepted
    done: threading.Event = field(default_factory=threading.Event)
    message: str = ""
    error: Exception | None = None
    effects: Effects = field(default_factory=Effects)


@dataclass
class Desk:
    """One session's label actions, shared by its script threads (mutated under _LOCK)."""

    screen: Render | None = None  # the token -> episode of what is on screen
    pending: Accepted | None = None
    flight: Flight | None = None
    notice: str | None = None

    def busy(self) -> Accepted | None:
        if self.pending is not None:
            return self.pending
        f = self.flight
        return f.accepted if f is not None and not f.done.is_set() else None


def desk() -> Desk:
    found = st.session_state.get(DESK)
    if isinstance(found, Desk):
        return found
    made = Desk()
    st.session_state[DESK] = made
    return made


def take_notice() -> str | None:
    d = desk()
    with _LOCK:
        notice, d.notice = d.notice, None
    return notice


def submit(action: str, episode_id: int | None, token: str) -> None:
    """Every label action (button, key) comes here, in a callback before the script runs."""
    d = desk()
    form = _form(action, episode_id)  # read before the lock: st.session_state may stop us
    with _LOCK:
        busy = d.busy()
        render, d.screen = d.screen, None  # one action per render: the token is consumed
        if busy is not None:
            what = ("your last label" if busy.action == "undo"
                    else f"episode {busy.render.screen.episode_id}")
            d.notice = (f"Not saved: still saving your {busy.action} of {what}; the {action} "
                        "was ignored.")
            return
        try:
            check_on_screen(episode_id, token, render.screen if render else None)
        except LabelRefused as e:
            d.notice = f"Not saved: {e}."
            return
        assert render is not None
        d.pending = Accepted(action, render, **form)


def _form(action: str, ep: int | None) -> dict[str, Any]:
    if action not in ("success", "failure") or ep is None:
        return {}
    success = action == "success"
    tags = st.session_state.get(f"tags_{ep}") or []
    failure_mode = ", ".join(tags) or None
    return {
        "progress": 1.0 if success else st.session_state.get(f"progress_{ep}", 0) / 100,
        "failure_mode": failure_mode[:200] if failure_mode else None,
        "notes": (st.session_state.get(f"notes_{ep}") or "").strip() or None,
        "seen_version": st.session_state.get(SEEN),
    }


def on_button(action: str, episode_id: int | None, token: str) -> None:
    submit(action, episode_id, token)  # args are the render's own: the key carries its token


def on_key() -> None:
    sent = label_keys.triggered(st.session_state.get(label_keys.KEY))
    if sent is None:
        d = desk()
        with _LOCK:
            d.notice, d.screen = "Not saved: the key press arrived malformed; press again.", None
        return
    submit(sent["action"], sent["episode"], sent["token"])


def open_episode(ep: int) -> None:
    d = desk()
    with _LOCK:
        d.screen = None  # nothing can be saved until the new episode is shown
    st.session_state[CURRENT] = ep
    st.session_state.pop(SHOWN, None)


def open_jump() -> None:
    jump = st.session_state.get("label_jump")
    if jump is not None:
        open_episode(int(jump))


def screen_for(user: str, ep: int | None) -> Render:
    """This render's token: fresh whenever another episode (or the same one after an action)
    is shown; two threads of one session rendering at once share it."""
    d = desk()
    with _LOCK:
        if d.screen is not None and d.screen.screen.episode_id == ep:
            return d.screen
    fresh = Render(OnScreen(new_render_token(), ep), data.last_label_of(user))
    with _LOCK:
        if d.screen is None or d.screen.screen.episode_id != ep:
            d.screen = fresh
        return d.screen


def _test_gate() -> None:
    gate = os.environ.get(label_keys.TEST_SAVE_GATE_ENV)
    if not gate:
        return
    deadline = time.monotonic() + 60
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise LabelError(f"{label_keys.TEST_SAVE_GATE_ENV}={gate} did not appear within "
                             "60 s (a test-only hook: unset it)")
        time.sleep(0.05)


def _perform(user: str, acc: Accepted, flight: Flight) -> None:
    """Carry out an accepted action against the store (which checks the token again).
    No st call in here: a stopped thread must not leave a save half-reported."""
    screen, ep = acc.render.screen, acc.render.screen.episode_id
    if acc.action == "undo":
        done = data.undo_label(UndoInput(user, acc.render.offered, ep, screen.token), screen)
        now = "no label" if done.success is None else (
            f"**{'success' if done.success else 'failure'}** again")
        flight.effects = Effects(leave=ep, show=done.episode_id)
        flight.message = (f"Undone: your label on episode {done.episode_id} (version "
                          f"{done.undid_version}) is taken back; it has {now} (label version "
                          f"{done.version}). The episode is on screen again.")
        return
    assert ep is not None
    if acc.action == "skip":
        flight.effects = Effects(leave=ep, skip=ep)
        return
    _test_gate()
    version = data.save_label(LabelInput(
        episode_id=ep, evaluator=user, success=acc.action == "success", progress=acc.progress,
        failure_mode=acc.failure_mode, notes=acc.notes, expected_version=acc.seen_version,
        render_token=screen.token), screen)
    flight.effects = Effects(leave=ep)
    flight.message = (f"Saved episode {ep} as **{acc.action}** (progress {acc.progress:.0%}, "
                      f"label version {version}).")


def _apply(e: Effects) -> None:
    """Idempotent: both threads of a session may apply the same effects."""
    if e.skip is not None:
        st.session_state.setdefault(SKIPPED, set()).add(e.skip)
    if e.leave is not None and st.session_state.get(CURRENT) == e.leave:
        st.session_state.pop(CURRENT, None)
    if e.show is not None:
        st.session_state[CURRENT] = e.show
    if e.leave is not None or e.show is not None:
        st.session_state.pop(SHOWN, None)


def settle(user: str, status: Any) -> None:
    """Carry out the accepted action (the first thread here claims it) or wait for the one in
    flight, then show its outcome in `status`. Returns when nothing is being saved."""
    d = desk()
    with _LOCK:
        waiting = d.pending or (d.flight.accepted if d.flight else None)
    if waiting is None:
        return
    if waiting.action != "skip":
        ep = waiting.render.screen.episode_id
        what = ("undo of your last label" if waiting.action == "undo"
                else f"episode {ep} as {waiting.action}")
        status.info(f"saving… {what}: keys and buttons wait for the next episode",
                    icon=":material/hourglass_top:")
    with _LOCK:  # claim; from here to done.set() no st call (a stop point)
        mine = d.pending is not None and (d.flight is None or d.flight.done.is_set())
        if mine:
            assert d.pending is not None
            d.flight, d.pending = Flight(d.pending), None
        flight = d.flight
    if flight is None:
        return
    if mine:
        try:
            _perform(user, flight.accepted, flight)
        except (LabelConflict, LabelError) as e:
            flight.error = e
        except BaseException:  # a store outage: say so, never leave the others waiting
            flight.error = LabelError("the save failed; check the episode's labels and press "
                                      "again if it is not there")
            raise
        finally:
            flight.done.set()
    elif not flight.done.wait(timeout=FLIGHT_WAIT_S):
        status.warning(f"Still saving after {FLIGHT_WAIT_S:.0f} s; reload the page to see "
                       "whether it was saved.")
        return
    _apply(flight.effects)
    with _LOCK:
        if d.flight is flight:
            d.flight = None
    _show(flight, status)


def _show(flight: Flight, status: Any) -> None:
    error = flight.error
    if isinstance(error, LabelConflict):
        with status.container():
            st.error(f"Not saved: {error}", icon=":material/sync_problem:")
            st.button("Reload this episode", key="reload_conflict",
                      on_click=lambda: st.session_state.pop(SHOWN, None))
    elif error is not None:
        status.error(f"Not saved: {error}")
    elif flight.message:
        status.success(flight.message)
    else:
        status.empty()
