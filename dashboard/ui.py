"""Small helpers shared by the pages: who is acting, flash messages, times, videos."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import streamlit as st

from dashboard import data
from dashboard.identity import current_user, sidebar_identity
from orchestrator.store.browse import MediaRef

FLASH_KEY = "_flash"


def start(title: str) -> None:
    """Every page begins here: identity box, title, the message left by the last action."""
    sidebar_identity()
    st.title(title)
    show_flash()


def require_user(action: str) -> str:
    """The current user, or stop the page with a prompt to identify first."""
    user = current_user()
    if user is None:
        st.info(f"Enter your name in the sidebar (or log in) to {action}. "
                "It is kept for this browser session and recorded with what you do.")
        st.stop()
    return user  # type: ignore[return-value]


def actor() -> str:
    return current_user() or "dashboard"


def flash(kind: str, message: str) -> None:
    """Show a message after the next rerun (kind: success | info | warning | error)."""
    st.session_state[FLASH_KEY] = (kind, message)


def show_flash() -> None:
    item = st.session_state.pop(FLASH_KEY, None)
    if item:
        getattr(st, item[0])(item[1])


def age_s(ts: datetime | None) -> float | None:
    """Seconds since `ts` (naive times are UTC, as the store writes them); None for never."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (datetime.now(UTC) - ts).total_seconds()


def ago(ts: datetime | None) -> str:
    age = age_s(ts)
    if age is None:
        return "never"
    s = max(0, int(age))
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    return f"{s // 3600} h ago" if s < 172800 else f"{s // 86400} d ago"


def fmt_time(ts: datetime | None) -> str:
    return "–" if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S")


def videos(media: Sequence[MediaRef]) -> None:
    """One player per camera, side by side (H.264 MP4 bytes from the media dir)."""
    if not media:
        st.caption("No video recorded for this episode.")
        return
    cols = st.columns([1] * len(media) + ([3 - len(media)] if len(media) < 3 else []))
    for col, m in zip(cols, media, strict=False):
        with col:
            st.caption(f"camera **{m.camera}** · {m.frames} frames @ {m.fps:g} fps")
            try:
                st.video(data.media_bytes(m.uri), format="video/mp4")
            except FileNotFoundError as e:
                st.warning(str(e))


def actions(df, robot: str | None) -> None:  # type: ignore[no-untyped-def]
    """The applied actions of an episode (a step_frame) in its own space, named as the arm
    declared them (its recorded capabilities), one panel per unit."""
    from dashboard import charts

    caps = next((r.capabilities for r in data.fleet() if r.name == robot), None) if robot else None
    long = charts.action_long(df, caps)
    if long.empty:
        st.caption("No actions recorded.")
        return
    has_space = "action_space" in df and df["action_space"].notna().any()
    space = df["action_space"].dropna().iloc[0] if has_space else "ee_delta[7]"
    chunks = int(df["chunk_id"].nunique()) if "chunk_id" in df else len(df)
    st.caption(f"applied actions · space `{space}` · {len(df)} steps from {chunks} policy "
               f"{'call' if chunks == 1 else 'calls'}")
    st.altair_chart(charts.action_chart(long), width="stretch")
