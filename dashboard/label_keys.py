"""The Label page's keyboard and click guard: a Streamlit v2 component (inline JS, no iframe).

Keys s / f / n / u send {action, token, episode} as a trigger, where token is the per-render
token of the episode the component was rendered with (client-side, so a key always names what
the browser had on screen). After one action the page is locked: "saving…" shows at once, and
further keys and clicks on the label buttons, "Open episode #" and the Disagreements' Open
buttons are dropped (counted in data-dropped) until a render with a new token arrives. The
server checks the token again (orchestrator.store.labels.check_on_screen): the lock is
convenience, the check is the guarantee.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

KEY = "label_keys"
# Test-only: a path; each label save waits (up to a minute) until it exists, so a browser test
# can act while a save is still pending without relying on timing. Never set it in production.
TEST_SAVE_GATE_ENV = "EVALFLEET_TEST_LABEL_SAVE_GATE"
ACTIONS = {"s": "success", "f": "failure", "n": "skip", "u": "undo"}

_HTML = '<div class="ef-keys" data-state="ready" data-dropped="0">' \
        '<span class="ef-keys-status"></span></div>'
_CSS = """
.ef-keys { font-size: 0.85rem; min-height: 1.4rem; color: var(--st-text-color, inherit); }
.ef-keys[data-state="saving"] .ef-keys-status,
.ef-keys[data-state="opening"] .ef-keys-status { font-weight: 600; }
"""
# One document-level listener (capture phase, before Streamlit's own handlers), kept on
# window and re-pointed at the newest render; a render with a new token unlocks.
_JS = """
export default function (component) {
  const { data, setTriggerValue, parentElement } = component;
  const root = parentElement.querySelector('.ef-keys');
  let g = window.__evalfleetLabelKeys;
  if (!g) {
    g = { token: null, episode: null, canUndo: false, locked: null, dropped: 0 };
    const show = () => {
      if (!g.root) return;
      const st = g.locked ? g.locked.state : 'ready';
      g.root.dataset.state = st;
      g.root.dataset.token = g.token || '';
      g.root.dataset.dropped = String(g.dropped);
      const txt = g.locked
        ? (st === 'saving' ? `saving… (${g.locked.what}) — keys and buttons wait for the next episode`
                           : 'opening… — keys and buttons wait for the episode')
        : (g.episode === null ? (g.canUndo ? 'keys: u undo' : '')
                              : 'keys: s success · f failure · n skip' + (g.canUndo ? ' · u undo' : ''));
      g.root.querySelector('.ef-keys-status').textContent =
        txt + (g.locked && g.dropped ? ` · ${g.dropped} ignored` : '');
    };
    const lock = (state, what) => { g.locked = { state, what, token: g.token }; show(); };
    g.show = show;
    g.onKey = (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
      const t = e.target;
      if (t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName))) return;
      const action = %(actions)s[e.key];
      if (!action) return;
      e.preventDefault();
      e.stopPropagation();
      if (g.locked || !g.token) { g.dropped += 1; show(); return; }
      if (action === 'undo' && !g.canUndo) return;
      if (action !== 'undo' && g.episode === null) return;
      lock('saving', action);
      g.send('action', { action, token: g.token, episode: g.episode, nonce: Math.random() });
    };
    g.onClick = (e) => {
      const el = e.target && e.target.closest && e.target.closest('button');
      if (!el) return;
      const box = el.closest('[class*="st-key-label_act_"], .st-key-label_jump_go, [class*="st-key-adj_"]');
      if (!box) return;
      if (g.locked) {
        e.preventDefault(); e.stopPropagation(); e.stopImmediatePropagation();
        g.dropped += 1; show(); return;
      }
      const label = box.matches('[class*="st-key-label_act_"]');
      lock(label ? 'saving' : 'opening', label ? el.innerText.trim().toLowerCase() : 'open');
    };
    document.addEventListener('keydown', g.onKey, true);
    document.addEventListener('click', g.onClick, true);
    window.__evalfleetLabelKeys = g;
  }
  g.send = setTriggerValue;
  g.root = root;
  g.canUndo = !!data.can_undo;
  if (g.token !== data.token) {  // a new render: the episode it names is on screen now
    g.token = data.token;
    g.episode = data.episode;
    g.locked = null;
    g.dropped = 0;
  }
  g.show();
  return () => {
    if (window.__evalfleetLabelKeys === g && g.root === root) {
      document.removeEventListener('keydown', g.onKey, true);
      document.removeEventListener('click', g.onClick, true);
      delete window.__evalfleetLabelKeys;
    }
  };
}
"""

_component = st.components.v2.component(
    "evalfleet_label_keys", html=_HTML, css=_CSS,
    js=_JS % {"actions": "{" + ", ".join(f"{k}: '{v}'" for k, v in ACTIONS.items()) + "}"},
    isolate_styles=False)


def mount(token: str, episode_id: int | None, can_undo: bool,
          on_action: Callable[[], None]) -> None:
    """Place the guard (below the label buttons: it unlocks only once they are rendered)."""
    _component(key=KEY, data={"token": token, "episode": episode_id, "can_undo": can_undo},
               on_action_change=on_action, height="content")


def triggered(value: Any) -> dict[str, Any] | None:
    """The {action, token, episode} the browser sent, or None (malformed values are None)."""
    raw = value.get("action") if hasattr(value, "get") else getattr(value, "action", None)
    if not isinstance(raw, dict):
        return None
    action, token, episode = raw.get("action"), raw.get("token"), raw.get("episode")
    if action not in ACTIONS.values() or not isinstance(token, str):
        return None
    if episode is not None and not isinstance(episode, int):
        return None
    return {"action": action, "token": token, "episode": episode}
