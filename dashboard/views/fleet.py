"""Fleet: arms with status, heartbeat and current episode; safety events; live cameras; e-stop.

E-stop writes an `estop_requested` event (the orchestrator acts on it) and also tells the
bridge directly when it answers within a short timeout. E-STOP ALL is the first thing on the
page, full width, outside the part that refreshes; each arm's own button names its arm.
A status is shown only as long as its heartbeat is fresh (orchestrator.liveness): an arm not
heard from for a few probe periods is STALE, never "online". While a campaign runs, the arm
table and the events refresh themselves every few seconds.
"""

from __future__ import annotations

import streamlit as st

from dashboard import data, live, ui
from dashboard.identity import current_role
from dashboard.visibility import redact
from orchestrator.liveness import ArmLiveness, ArmState, displayed_state, refresh_interval_s
from orchestrator.store.browse import BrowseError, RobotRow
from orchestrator.store.states import CampaignStatus

BUTTON_COLUMNS = 3  # per-arm e-stops per row: each label stays readable at 800 px


def _estop(target: str) -> None:
    user = ui.actor()
    try:
        data.request_estop(target, user)
    except BrowseError as e:
        ui.flash("error", str(e))
        return
    robots = data.fleet()
    chosen = robots if target == "all" else [r for r in robots if r.name == target]
    results = live.estop_many([(r.name, r.endpoint) for r in chosen], f"dashboard e-stop by {user}")
    lines = [f"- {'✅' if r.ok else '⚠️'} **{r.robot}**: {r.detail}" for r in results]
    what = "every arm" if target == "all" else f"**{target}**"
    ui.flash("warning", f"E-stop requested for {what} (recorded; the orchestrator holds "
                        "the arm).\n\n" + "\n".join(lines))
    data.clear_caches()


def _liveness(r: RobotRow) -> ArmLiveness:
    return displayed_state(r.status, ui.age_s(r.last_heartbeat))


def _table(robots: list[RobotRow], states: dict[str, ArmLiveness]) -> None:
    st.dataframe(
        [{"arm": r.name, "station": r.station, "status": states[r.name].text,
          "last heartbeat": ui.ago(r.last_heartbeat),
          "current episode": r.current_episode, "endpoint": r.endpoint,
          "cameras": ", ".join(live.cameras_of(r.capabilities))} for r in robots],
        hide_index=True)


def _arm_buttons(robots: list[RobotRow]) -> None:
    """One e-stop per arm, named after it, right under E-STOP ALL (outside the refreshing
    part: a click is never lost to a refresh)."""
    for i in range(0, len(robots), BUTTON_COLUMNS):
        row = robots[i:i + BUTTON_COLUMNS]
        for col, r in zip(st.columns(BUTTON_COLUMNS), row, strict=False):
            col.button(f"E-stop {r.name}", key=f"estop_{r.name}", icon=":material/front_hand:",
                       width="stretch", on_click=_estop, args=(r.name,),
                       help=f"Stops {r.name} only ({r.station}); the other arms keep running.")


def _arms(running: tuple[str, ...]) -> None:
    robots = data.fleet()
    if running and refresh_interval_s(c.status for c in data.campaigns()) is None:
        st.rerun()  # the last campaign ended: redraw the page, which then stops refreshing
    states = {r.name: _liveness(r) for r in robots}
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s.state.value] = counts.get(s.state.value, 0) + 1
    st.caption(f"{len(robots)} arms · " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    stale = [r for r in robots if states[r.name].state is ArmState.STALE]
    if stale:
        st.warning("Not heard from for more than a few probe periods, so their last status is "
                   "not believed: " + ", ".join(
                       f"**{r.name}** (last said {r.status}, {ui.ago(r.last_heartbeat)})"
                       for r in stale)
                   + ". Is the orchestrator (`evalfleet campaign run` / `fleet serve`) running, "
                     "and is the arm's bridge up?", icon=":material/heart_broken:")
    _table(robots, states)
    for r in robots:
        if r.current_episode:
            st.page_link("views/episode.py", label=f"{r.name}: episode {r.current_episode}",
                         query_params={"episode": str(r.current_episode)})
    st.subheader("Watchdog and e-stop events")
    names = {r.id: r.name for r in robots}
    # abort reasons can name the policy ("policy X failed to start"): redacted for evaluators
    role, policy_names = current_role(), [p[0] for p in data.policies()]
    st.dataframe([{"at": ui.fmt_time(e.at), "kind": e.kind, "arm": names.get(e.robot_id or -1,
                   str(e.payload.get("robot", ""))), "actor": e.actor,
                   "detail": redact(str(e.payload.get("detail") or e.payload.get("reason") or ""),
                                    policy_names, role)}
                  for e in data.events(safety=True, limit=100)] or [{"at": "no events"}],
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
    st.button("E-STOP ALL", key="estop_all", type="primary", icon=":material/dangerous:",
              width="stretch", on_click=_estop, args=("all",),
              help=f"Stops every arm of the fleet ({len(robots)}): latches each bridge's e-stop "
                   "and records the request for the orchestrator.")
    _arm_buttons(robots)
    camps = data.campaigns()
    running = tuple(c.name for c in camps if c.status == CampaignStatus.RUNNING)
    every = refresh_interval_s(c.status for c in camps)
    if every:
        st.caption(f":material/autorenew: Refreshing every {every:g} s while "
                   f"{', '.join(running)} {'runs' if len(running) == 1 else 'run'}.")
    else:
        st.caption("No campaign is running: this page does not refresh by itself (reload it).")
    st.fragment(run_every=every)(_arms)(running)
    st.subheader("Live cameras")
    if st.toggle("Show live camera images", key="fleet_live"):
        _live(robots)


render()
