"""Fleet: arms with status, heartbeat and current episode; safety events; live cameras; e-stop.

E-stop writes an `estop_requested` event (the orchestrator acts on it) and also tells the
bridge directly when it answers within a short timeout.
"""

from __future__ import annotations

import streamlit as st

from dashboard import data, live, ui
from orchestrator.store.browse import BrowseError, RobotRow


def _estop(robots: list[RobotRow], target: str) -> None:
    user = ui.actor()
    try:
        data.request_estop(target, user)
    except BrowseError as e:
        st.error(str(e))
        return
    chosen = robots if target == "all" else [r for r in robots if r.name == target]
    results = live.estop_many([(r.name, r.endpoint) for r in chosen], f"dashboard e-stop by {user}")
    lines = [f"- {'✅' if r.ok else '⚠️'} **{r.robot}**: {r.detail}" for r in results]
    ui.flash("warning", f"E-stop requested for **{target}** (recorded; the orchestrator holds "
                        "the arm).\n\n" + "\n".join(lines))
    data.clear_caches()


def _table(robots: list[RobotRow]) -> None:
    st.dataframe(
        [{"arm": r.name, "station": r.station,
          "status": r.status.upper() if r.status == "estopped" else r.status,
          "last heartbeat": ui.ago(r.last_heartbeat),
          "current episode": r.current_episode, "endpoint": r.endpoint,
          "cameras": ", ".join(live.cameras_of(r.capabilities))} for r in robots],
        hide_index=True)


@st.fragment(run_every=2)
def _live(robots: list[RobotRow]) -> None:
    for r in robots:
        endpoint = r.capabilities.get("pub_endpoint")
        if not endpoint:
            st.caption(f"**{r.name}**: no camera stream advertised (pub_endpoint)")
            continue
        frames, why = live.latest_frames(str(endpoint), live.cameras_of(r.capabilities))
        if why:
            st.caption(f"**{r.name}**: {why}")
        for col, (cam, img) in zip(st.columns(max(1, len(frames))), frames.items(), strict=False):
            col.image(img, caption=f"{r.name} · {cam}")


def render() -> None:
    ui.start("Fleet")
    robots = data.fleet()
    if not robots:
        st.info("No arms registered yet: they appear once an orchestrator starts with a fleet.")
        return
    c1, c2 = st.columns([4, 1])
    c1.caption(f"{len(robots)} arms · " + ", ".join(
        f"{sum(r.status == s for r in robots)} {s}" for s in sorted({r.status for r in robots})))
    if c2.button("E-STOP ALL", key="estop_all", type="primary", icon=":material/dangerous:",
                 width="stretch"):
        _estop(robots, "all")
        st.rerun()
    _table(robots)
    cols = st.columns(min(6, len(robots)))
    for i, r in enumerate(robots):
        if cols[i % len(cols)].button(f"E-stop {r.name}", key=f"estop_{r.name}",
                                      icon=":material/front_hand:", width="stretch"):
            _estop(robots, r.name)
            st.rerun()
    for r in robots:
        if r.current_episode:
            st.page_link("views/episode.py", label=f"{r.name}: episode {r.current_episode}",
                         query_params={"episode": str(r.current_episode)})
    st.subheader("Live cameras")
    if st.toggle("Show live camera images", key="fleet_live"):
        _live(robots)
    st.subheader("Watchdog and e-stop events")
    names = {r.id: r.name for r in robots}
    st.dataframe([{"at": ui.fmt_time(e.at), "kind": e.kind, "arm": names.get(e.robot_id or -1,
                   str(e.payload.get("robot", ""))), "actor": e.actor,
                   "detail": e.payload.get("detail") or e.payload.get("reason") or ""}
                  for e in data.events(safety=True, limit=100)] or [{"at": "no events"}],
                 hide_index=True)


render()
