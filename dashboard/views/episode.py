"""Episode: everything about one episode (not blind): steps, latency breakdown, plan texts,
labels, audit events and videos. Open with ?episode=ID.
"""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, ui
from orchestrator.store.browse import BrowseError


def _pick() -> int | None:
    raw = st.query_params.get("episode")
    current = int(raw) if raw and str(raw).isdigit() else None
    recent = data.recent_episodes(50)
    c1, c2 = st.columns([1, 3])
    typed = c1.number_input("Episode id", min_value=1, step=1, value=current, key="ep_id")
    if recent:
        labels = {e: f"#{e} · {camp} · {task} · {status}" for e, camp, task, status in recent}
        chosen = c2.selectbox("or a recent one", [None, *labels], key="ep_recent",
                              format_func=lambda e: "–" if e is None else labels[e])
        if chosen is not None and chosen != typed:
            typed = chosen
    if typed is not None and str(typed) != str(raw):
        st.query_params["episode"] = str(int(typed))
    return int(typed) if typed is not None else None


def _facts(d) -> None:  # type: ignore[no-untyped-def]
    st.subheader(f"Episode {d.episode_id}: “{d.instruction}”")
    status = d.status + (" · counted" if d.counted else " · not counted")
    if d.abort_reason:
        status += f" · aborted: {d.abort_reason}"
    st.markdown(
        f"**{status}** · campaign **{d.campaign}** (#{d.campaign_id}) · policy **{d.policy}** "
        f"v{d.policy_version} (`{d.blind_code}`) · task `{d.task_key}` ({d.category}"
        f"{' / ' + d.difficulty if d.difficulty else ''}) · trial {d.trial_id}, attempt "
        f"{d.attempt}, scene seed {d.scene_seed} · robot {d.robot or '–'} "
        f"({d.station or '–'})")
    c = st.columns(5)
    c[0].metric("steps", d.step_count)
    c[1].metric("late steps", d.late_steps)
    c[2].metric("ended by", d.terminated_by or "–")
    c[3].metric("started", ui.fmt_time(d.started_at)[11:] or "–")
    dur = (d.ended_at - d.started_at).total_seconds() if d.ended_at and d.started_at else None
    c[4].metric("duration", "–" if dur is None else f"{dur:.1f} s")
    if d.policy_checksum:
        st.caption(f"policy checksum `{d.policy_checksum}`")


def render() -> None:
    ui.start("Episode")
    ep = _pick()
    if ep is None:
        st.info("Enter an episode id (or open one from the Fleet or Label page).")
        return
    try:
        d = data.episode(ep)
    except BrowseError as e:
        st.error(str(e))
        return
    _facts(d)
    ui.videos(d.media)
    df = charts.step_frame(data.steps(ep))
    tab_lat, tab_steps, tab_plan, tab_labels, tab_events = st.tabs(
        ["Latency", "Steps", "Plans", "Labels", "Events"])
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
        st.dataframe([{"source": lab.source, "evaluator": lab.evaluator,
                       "success": lab.success, "progress": lab.progress,
                       "failure modes": lab.failure_mode, "notes": lab.notes,
                       "version": lab.version, "updated": ui.fmt_time(lab.updated_at)}
                      for lab in data.episode_labels(ep)], hide_index=True)
    with tab_events:
        st.dataframe([{"at": ui.fmt_time(e.at), "kind": e.kind, "actor": e.actor,
                       "payload": str(e.payload)} for e in data.events(episode_id=ep)],
                     hide_index=True)


render()
