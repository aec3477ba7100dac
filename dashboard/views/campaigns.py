"""Campaigns: scene-setup prompts for operators, create a campaign, progress per category,
pause / resume / cancel and priority. Every action is written to the audit log with its actor.
"""

from __future__ import annotations

import secrets

import streamlit as st

from dashboard import data, ui
from orchestrator.store.browse import BrowseError
from orchestrator.store.campaigns import CampaignError
from protocols.loader import ProtocolError, shipped_protocol_paths


def _prompts() -> None:
    prompts = data.operator_prompts()
    if not prompts:
        return
    st.subheader("Scene setup needed")
    for p in prompts:
        with st.container(border=True):
            c1, c2 = st.columns([5, 1])
            c1.markdown(f"**{p.robot}** · since {ui.fmt_time(p.at)} ({ui.ago(p.at)})"
                        + (f" · episode {p.episode_id}" if p.episode_id else "")
                        + f"\n\n{p.instructions or 'Set up the scene for the next trial.'}")
            if c2.button("Scene ready", key=f"ready_{p.event_id}", type="primary",
                         icon=":material/check_circle:"):
                try:
                    data.confirm_setup(p.event_id, ui.actor())
                except BrowseError as e:
                    ui.flash("info", str(e))
                else:
                    ui.flash("success", f"Scene on {p.robot} confirmed: the orchestrator starts "
                                        "the episode.")
                st.rerun()


def _create() -> None:
    pols = data.policies()
    names = list(dict.fromkeys(p[0] for p in pols))
    protocols = [p.stem for p in shipped_protocol_paths()]
    with st.expander("New campaign", expanded=not data.campaigns()):
        if not names:
            st.info("No policy is registered: `evalfleet policy register NAME --kind ...`.")
            return
        with st.form("new_campaign", clear_on_submit=False):
            c1, c2 = st.columns(2)
            protocol = c1.selectbox("Protocol", protocols, key="new_protocol")
            name = c2.text_input("Name", placeholder="default: protocol name + random suffix",
                                 key="new_name")
            chosen = st.multiselect("Policies (column order)", names, default=names[:2],
                                    key="new_policies")
            c3, c4, c5 = st.columns(3)
            trials = c3.number_input("Trials per task and policy", 1, 1000, 3, key="new_trials")
            seed = c4.number_input("Seed", 0, 2**31 - 1, 0, key="new_seed")
            priority = c5.number_input("Priority (higher first)", -100, 100, 0, key="new_priority")
            if not st.form_submit_button("Create campaign", type="primary"):
                return
    if not chosen:
        st.error("Pick at least one policy.")
        return
    final = name.strip() or f"{protocol}-{secrets.token_hex(3)}"
    try:
        cid = data.create_campaign(name=final, protocol=protocol, policy_names=chosen,
                                   trials=int(trials), seed=int(seed), priority=int(priority),
                                   actor=ui.actor())
    except (CampaignError, ProtocolError, ValueError) as e:
        st.error(f"Campaign not created: {e}")
        return
    ui.flash("success", f"Campaign **{final}** (#{cid}) created and queued.")
    st.rerun()


def _act(fn, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(*args, ui.actor())
    except CampaignError as e:
        ui.flash("error", str(e))


def _campaign(c) -> None:  # type: ignore[no-untyped-def]
    total = max(1, c.trials - c.cancelled)
    with st.container(border=True):
        h1, h2 = st.columns([4, 3])
        h1.markdown(f"### {c.name} `#{c.id}`\n**{c.status}** · priority {c.priority} · "
                    f"{c.protocol} v{c.protocol_version} · seed {c.seed} · "
                    f"{c.trials_per_task} trials/task · policies: "
                    + ", ".join(f"{p} ({code})" for p, code in zip(c.policies, c.blind_codes,
                                                                   strict=True)))
        h1.progress(c.done / total, text=f"{c.done}/{total} trials done · {c.leased} running · "
                                          f"{c.pending} pending")
        b1, b2, b3 = h2.columns(3)
        active = c.status in ("pending", "running")
        b1.button("Pause", key=f"pause_{c.id}", disabled=not active, on_click=_act,
                  args=(data.set_status, c.id, "paused"), icon=":material/pause:")
        b2.button("Resume", key=f"resume_{c.id}", disabled=c.status != "paused", on_click=_act,
                  args=(data.set_status, c.id, "pending"), icon=":material/play_arrow:")
        b3.button("Cancel", key=f"cancel_{c.id}", disabled=c.status in ("done", "cancelled"),
                  on_click=_act, args=(data.set_status, c.id, "cancelled"),
                  icon=":material/cancel:")
        p1, p2 = h2.columns([2, 1])
        prio = p1.number_input("Priority", -100, 100, c.priority, key=f"prio_{c.id}",
                               label_visibility="collapsed")
        p2.button("Set priority", key=f"setprio_{c.id}", disabled=prio == c.priority,
                  on_click=_act, args=(data.set_priority, c.id, int(prio)))
        rows = sorted(data.progress(c.id), key=lambda r: (r[0], r[1] or ""))
        st.dataframe(
            [{"category": cat, "difficulty": diff or "", "done": done, "planned": n,
              "progress": done / n if n else 0.0} for cat, diff, done, n in rows],
            hide_index=True, column_config={"progress": st.column_config.ProgressColumn(
                "progress", min_value=0.0, max_value=1.0, format="percent")})


def render() -> None:
    ui.start("Campaigns")
    _prompts()
    _create()
    camps = data.campaigns()
    show = st.segmented_control("Show", ["active", "all"], default="active", key="camp_show")
    for c in camps:
        if show == "all" or c.status in ("pending", "running", "paused"):
            _campaign(c)


render()
