"""Episode: everything about one episode: steps, latency breakdown, plan texts, labels, audit
events and videos. Open with ?episode=ID.

Staff see it all. Evaluators see the blind view (dashboard/visibility.py): the policy's blind
code only, the campaign by number, no audit log; the simulator's verdict and other evaluators'
labels (without names) only once they have labelled the episode themselves.
"""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, ui
from dashboard.identity import current_role, current_user
from dashboard.visibility import (
    EpisodeView,
    Role,
    episode_view,
    has_labelled,
    redact,
    visible_labels,
)
from orchestrator.store.browse import BrowseError


def _pick(role: Role) -> int | None:
    raw = st.query_params.get("episode")
    current = int(raw) if raw and str(raw).isdigit() else None
    recent = data.recent_episodes(50)
    c1, c2 = st.columns([1, 3])
    typed = c1.number_input("Episode id", min_value=1, step=1, value=current, key="ep_id")
    if recent:
        labels = {e: (f"#{e} · {camp} · {task} · {status}" if role is Role.STAFF
                      else f"#{e} · {task} · {status}")  # campaign names may name policies
                  for e, camp, task, status in recent}
        chosen = c2.selectbox("or a recent one", [None, *labels], key="ep_recent",
                              format_func=lambda e: "–" if e is None else labels[e])
        if chosen is not None and chosen != typed:
            typed = chosen
    if typed is not None and str(typed) != str(raw):
        st.query_params["episode"] = str(int(typed))
    return int(typed) if typed is not None else None


def _facts(d, view: EpisodeView, role: Role, names: list[str]) -> None:  # type: ignore[no-untyped-def]
    st.subheader(f"Episode {d.episode_id}: “{d.instruction}”")
    status = d.status + (" · counted" if d.counted else " · not counted")
    if d.abort_reason:
        status += f" · aborted: {redact(d.abort_reason, names, role)}"
    campaign = (f"campaign **{d.campaign}** (#{d.campaign_id})" if view.campaign_name
                else f"campaign **#{d.campaign_id}**")
    policy = (f"policy **{d.policy}** v{d.policy_version} (`{d.blind_code}`)"
              if view.policy_identity else f"policy **{d.blind_code}**")
    st.markdown(
        f"**{status}** · {campaign} · {policy} · task `{d.task_key}` ({d.category}"
        f"{' / ' + d.difficulty if d.difficulty else ''}) · trial {d.trial_id}, attempt "
        f"{d.attempt}, scene seed {d.scene_seed} · robot {d.robot or '–'} "
        f"({d.station or '–'})")
    c = st.columns(5)
    c[0].metric("steps", d.step_count)
    c[1].metric("late steps", d.late_steps)
    # a sim success ends the episode ("success"): that is the simulator's verdict
    c[2].metric("ended by", (d.terminated_by or "–") if view.sim_verdict else "hidden")
    c[3].metric("started", ui.fmt_time(d.started_at)[11:] or "–")
    dur = (d.ended_at - d.started_at).total_seconds() if d.ended_at and d.started_at else None
    c[4].metric("duration", "–" if dur is None else f"{dur:.1f} s")
    if d.policy_checksum and view.policy_identity:
        st.caption(f"policy checksum `{d.policy_checksum}`")
    if not view.sim_verdict:
        st.info("Blind view: the simulator's verdict and other evaluators' labels appear once "
                "you have labelled this episode (Label page → Open episode #).")


def _labels_tab(labels, view: EpisodeView, user: str | None) -> None:  # type: ignore[no-untyped-def]
    shown = visible_labels(labels, view, user)
    if not shown:
        st.caption("No labels to show yet." if view.other_labels
                   else "Hidden until you have labelled this episode.")
        return
    st.dataframe([{"source": lab.source, "evaluator": who,
                   "success": lab.success, "progress": lab.progress,
                   "failure modes": lab.failure_mode, "notes": lab.notes,
                   "version": lab.version, "updated": ui.fmt_time(lab.updated_at)}
                  for who, lab in shown], hide_index=True)


def render() -> None:
    ui.start("Episode")
    role, user = current_role(), current_user()
    ep = _pick(role)
    if ep is None:
        st.info("Enter an episode id (or open one from the Fleet or Label page).")
        return
    try:
        d = data.episode(ep)
    except BrowseError as e:
        st.error(str(e))
        return
    labels = data.episode_labels(ep)
    view = episode_view(role, has_labelled(labels, user))
    names = [] if role is Role.STAFF else [p[0] for p in data.policies()]
    _facts(d, view, role, names)
    ui.videos(d.media)
    df = charts.step_frame(data.steps(ep))
    if names and "plan" in df.columns:  # plan texts are the policy's own words
        df = df.assign(plan=df["plan"].map(
            lambda t: redact(t, names, role) if isinstance(t, str) else t))
    tabs = ["Actions", "Latency", "Steps", "Plans", "Labels"] + (["Events"] if view.audit_events else [])
    tab_act, tab_lat, tab_steps, tab_plan, tab_labels, *tab_events = st.tabs(tabs)
    with tab_act:
        ui.actions(df, d.robot)
    with tab_lat:
        if df.empty:
            st.caption("No steps recorded.")
        else:
            st.altair_chart(charts.latency_chart(df), width="stretch")
            st.dataframe(charts.latency_summary(df))
    with tab_steps:
        st.dataframe(df.drop(columns=["proprio"], errors="ignore"), hide_index=True)
    with tab_plan:
        plans = df[df["plan"].notna()][["idx", "plan"]] if not df.empty else df
        if plans.empty:
            st.caption("The policy wrote no plan texts.")
        else:
            st.dataframe(plans, hide_index=True)
    with tab_labels:
        _labels_tab(labels, view, user)
    for tab in tab_events:
        with tab:
            st.dataframe([{"at": ui.fmt_time(e.at), "kind": e.kind, "actor": e.actor,
                           "payload": str(e.payload)} for e in data.events(episode_id=ep)],
                         hide_index=True)


render()
