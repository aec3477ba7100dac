"""Who is using the dashboard: the OIDC user when the lab configures st.login ([auth] in
.streamlit/secrets.toml), otherwise a name entered once per browser session."""

from __future__ import annotations

import streamlit as st

NAME_KEY = "evaluator"
INPUT_KEY = "evaluator_input"


def oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets.toml at all: no OIDC
        return False


def sidebar_identity() -> None:
    """Render the identity box in the sidebar (every page calls this first)."""
    with st.sidebar:
        if oidc_configured():
            if st.user.is_logged_in:
                st.caption(f"Signed in as **{current_user()}**")
                st.button("Log out", on_click=st.logout, key="logout")
            else:
                st.button("Log in", on_click=st.login, key="login", type="primary")
            return
        st.text_input(
            "Your name (evaluator)", value=st.session_state.get(NAME_KEY, ""),
            key=INPUT_KEY, max_chars=100, on_change=_keep_name,
            help="Stored with every label and action you take. Entered once per session.",
        )


def _keep_name() -> None:
    # A plain session key (not the widget's): it survives page switches.
    st.session_state[NAME_KEY] = str(st.session_state.get(INPUT_KEY) or "").strip()


def current_user() -> str | None:
    """The evaluator's identity, or None when nobody has signed in / entered a name."""
    if oidc_configured():
        if not st.user.is_logged_in:
            return None
        for claim in ("email", "preferred_username", "name", "sub"):
            value = st.user.get(claim)
            if value:
                return str(value)[:100]
        return None
    name = str(st.session_state.get(NAME_KEY) or "").strip()
    return name or None
