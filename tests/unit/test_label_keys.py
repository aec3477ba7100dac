"""dashboard.label_keys.triggered: what the browser's key component sent, or None."""

from __future__ import annotations

from dashboard.label_keys import ACTIONS, triggered


def test_a_well_formed_key_action_is_read() -> None:
    sent = {"action": {"action": "failure", "token": "ab12", "episode": 7, "nonce": 0.5}}
    assert triggered(sent) == {"action": "failure", "token": "ab12", "episode": 7}
    undo = {"action": {"action": "undo", "token": "cd34", "episode": None}}
    assert triggered(undo) == {"action": "undo", "token": "cd34", "episode": None}
    assert set(ACTIONS.values()) == {"success", "failure", "skip", "undo"}


def test_anything_else_is_none() -> None:
    for bad in (None, {}, {"action": None}, {"action": "s"},
                {"action": {"action": "delete", "token": "x", "episode": 1}},
                {"action": {"action": "success", "token": None, "episode": 1}},
                {"action": {"action": "success", "token": "x", "episode": "7"}}):
        assert triggered(bad) is None, bad
