"""Who is using the dashboard: the OIDC user when the lab configures st.login ([auth] in
.streamlit/secrets.toml), otherwise a name entered once per browser session; and their role
(dashboard/visibility.py): staff when named in EVALFLEET_STAFF or, with OIDC, in a group listed
in EVALFLEET_STAFF_GROUPS (the `groups` claim); an evaluator (blind views only) otherwise.

Without OIDC the role is only as trustworthy as the typed name: anyone who types a staff
name is staff. Labs that need blinding to hold against their own evaluators use OIDC groups.
"""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

from dashboard.visibility import Role, StaffConfig, Viewer, role_of

GROUP_CLAIMS = ("groups", "roles")

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
                st.caption(f"Signed in as **{current_user()}** ({current_role()})")
                st.button("Log out", on_click=st.logout, key="logout")
            else:
                st.button("Log in", on_click=st.login, key="login", type="primary")
            return
        st.text_input(
            "Your name (evaluator)", value=st.session_state.get(NAME_KEY, ""),
            key=INPUT_KEY, max_chars=100, on_change=_keep_name,
            help="Stored with every label and action you take. Entered once per session.",
        )
        if current_user() is not None:
            st.caption(f"Role: **{current_role()}**"
                       + (" (blind views)" if current_role() is Role.EVALUATOR else ""))


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


def staff_config() -> StaffConfig:
    from orchestrator.config import get_settings

    settings = get_settings()
    return StaffConfig.parse(settings.staff, settings.staff_groups)


def current_groups() -> list[str]:
    """The OIDC user's groups (a list or a comma-separated string claim); none without OIDC."""
    if not oidc_configured() or not st.user.is_logged_in:
        return []
    out: list[str] = []
    for claim in GROUP_CLAIMS:
        value = st.user.get(claim)
        if isinstance(value, str):
            out.extend(v for v in value.split(",") if v.strip())
        elif isinstance(value, Iterable):
            out.extend(str(v) for v in value)
    return out


def current_role() -> Role:
    """Staff or evaluator (nobody signed in: evaluator)."""
    return role_of(current_user(), current_groups(), staff_config())


def current_viewer() -> Viewer:
    """Who is acting now, read server-side from the session (never from a widget's value):
    what the pages hand to dashboard/data.py's writes, which refuse what the role may not do."""
    user = current_user()
    return Viewer(user, role_of(user, current_groups(), staff_config()))
