"""Campaigns: scene-setup prompts for operators, create a campaign, progress per category,
pause / resume / cancel, priority, and re-queuing an incomplete campaign's given-up trials.
Every action is written to the audit log with its actor.

Steering is staff-only (dashboard.visibility.may): evaluators see the controls disabled, with
a caption saying why, and no New campaign form; dashboard/data.py refuses their writes again
(a crafted rerun changes nothing). E-stops live on the Fleet page and are everyone's.
"""

from __future__ import annotations

import secrets

import streamlit as st

from dashboard import data, ui
from dashboard.identity import current_role, current_viewer
from dashboard.visibility import (
    STEERING_CAPTION,
    Action,
    NotAllowed,
    Role,
    campaign_controls,
    campaign_title,
    may,
    policy_title,
)
from orchestrator.store.browse import BrowseError
from orchestrator.store.campaigns import CampaignError
from orchestrator.store.lifecycle import missing_text
from orchestrator.store.states import CampaignStatus
from protocols.loader import ProtocolError, shipped_protocol_paths


def _confirm_scene(event_id: int, robot: str) -> None:
    try:
        data.confirm_setup(event_id, current_viewer())
    except NotAllowed as e:
        ui.flash("error", str(e))
    except BrowseError as e:
        ui.flash("info", str(e))
    else:
        ui.flash("success", f"Scene on {robot} confirmed: the orchestrator starts the episode.")


def _prompts() -> None:
    prompts = data.operator_prompts()
    if not prompts:
        return
    st.subheader("Scene setup needed")
    allowed = may(current_role(), Action.CONFIRM_SCENE)
    if not allowed:
        st.caption("Scene ready is for staff: the orchestrator waits for a person at the arm.")
    for p in prompts:
        with st.container(border=True):
            c1, c2 = st.columns([2, 1])  # the button keeps its label at 800 px
            c1.markdown(f"**{p.robot}** · since {ui.fmt_time(p.at)} ({ui.ago(p.at)})"
                        + (f" · episode {p.episode_id}" if p.episode_id else "")
                        + f"\n\n{p.instructions or 'Set up the scene for the next trial.'}")
            c2.button("Scene ready", key=f"ready_{p.event_id}", type="primary",
                      icon=":material/check_circle:", disabled=not allowed,
                      on_click=_confirm_scene, args=(p.event_id, p.robot))


def new_campaign_problems(protocol: str | None, policies: list[str]) -> list[str]:
    """What the New campaign form still needs, one sentence each (empty: it can be created)."""
    problems = []
    if not protocol:
        problems.append("choose a protocol.")
    if not policies:
        problems.append("choose at least one policy (the campaign runs only the policies "
                        "picked, in that order).")
    return [p[0].upper() + p[1:] for p in problems]


def _create() -> None:
    pols = data.policies()
    names = list(dict.fromkeys(p[0] for p in pols))
    protocols = [p.stem for p in shipped_protocol_paths()]
    with st.expander("New campaign", expanded=not data.campaigns()):
        if not names:
            st.info("No policy is registered: `evalfleet policy register NAME --kind ...`.")
            return
        # Nothing is preselected: a campaign runs exactly the protocol and policies someone
        # picked (a default here once queued policies nobody had chosen).
        with st.form("new_campaign", clear_on_submit=False):
            c1, c2 = st.columns(2)
            protocol = c1.selectbox("Protocol", protocols, index=None, key="new_protocol",
                                    placeholder="Choose a protocol")
            name = c2.text_input("Name", placeholder="default: protocol name + random suffix",
                                 key="new_name")
            chosen = st.multiselect("Policies (column order)", names, default=[],
                                    key="new_policies", placeholder="Choose one or more policies")
            c3, c4, c5 = st.columns(3)
            trials = c3.number_input("Trials per task and policy", 1, 1000, 3, key="new_trials")
            seed = c4.number_input("Seed", 0, 2**31 - 1, 0, key="new_seed")
            priority = c5.number_input("Priority (higher first)", -100, 100, 0, key="new_priority")
            if not st.form_submit_button("Create campaign", type="primary"):
                return
    missing = new_campaign_problems(protocol, chosen)
    if missing:
        st.error("Campaign not created: " + " ".join(missing))
        return
    final = name.strip() or f"{protocol}-{secrets.token_hex(3)}"
    try:
        cid = data.create_campaign(name=final, protocol=protocol, policy_names=chosen,
                                   trials=int(trials), seed=int(seed), priority=int(priority),
                                   viewer=current_viewer())
    except (CampaignError, ProtocolError, ValueError, NotAllowed) as e:
        st.error(f"Campaign not created: {e}")
        return
    ui.flash("success", f"Campaign **{final}** (#{cid}) created and queued.")
    st.rerun()


def _act(fn, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(*args, current_viewer())
    except (CampaignError, NotAllowed) as e:
        ui.flash("error", str(e))


def _requeue(campaign_id: int, label: str) -> None:
    try:
        done = data.requeue_given_up(campaign_id, current_viewer())
    except (CampaignError, NotAllowed) as e:
        ui.flash("error", str(e))
    else:
        n = len(done.trial_ids)
        ui.flash("success", f"Campaign **{label}**: {n} given-up trial{'s' if n != 1 else ''} "
                            f"re-queued with a fresh attempt budget; it is {done.status} again.")


ACTIVE_VIEW = ("pending", "running", "paused", "incomplete")
CONFIRM_KEY = "_confirm_cancel"  # the campaign id whose cancellation awaits confirmation


def _ask_cancel(campaign_id: int) -> None:
    st.session_state[CONFIRM_KEY] = campaign_id


def _answer_cancel(campaign_id: int, label: str, yes: bool) -> None:
    st.session_state.pop(CONFIRM_KEY, None)
    if not yes:
        return
    try:
        data.set_status(campaign_id, "cancelled", current_viewer())
    except (CampaignError, NotAllowed) as e:
        ui.flash("error", str(e))
    else:
        ui.flash("warning", f"Campaign **{label}** cancelled: its pending "
                            "trials will not run.")


def _confirm_cancel(c, label: str) -> None:  # type: ignore[no-untyped-def]
    """The second, explicit step: names the campaign (`label`, as this viewer may see it) and
    what is lost."""
    with st.container(border=True):
        st.warning(f"Cancel campaign **{label}**? Its **{c.pending} pending "
                   f"trial{'s' if c.pending != 1 else ''}** will never run"
                   + (f" ({c.leased} running now)" if c.leased else "")
                   + ", and the campaign cannot be resumed.",
                   icon=":material/warning:")
        y, n = st.columns(2)
        y.button(f"Yes, cancel {label}", key=f"cancel_yes_{c.id}", type="primary",
                 on_click=_answer_cancel, args=(c.id, label, True), icon=":material/cancel:")
        n.button("No, keep it", key=f"cancel_no_{c.id}", on_click=_answer_cancel,
                 args=(c.id, label, False))


def _campaign(c) -> None:  # type: ignore[no-untyped-def]
    total = max(1, c.trials - c.cancelled - c.not_needed)  # not needed: a question was decided
    tally = data.tally(c.id)
    with st.container(border=True):
        # stacked, not side by side: at 800 px the buttons keep their labels ("Cancel", not
        # an unlabeled icon)
        h1, h2 = st.container(), st.container()
        role = current_role()  # evaluators: blind (campaign number, policy codes only)
        steer = may(role, Action.PAUSE)
        label = campaign_title(role, c.id, c.name, c.protocol)
        title = f"{c.name} `#{c.id}`" if role is Role.STAFF else label
        missing = missing_text(tally)  # "3 given up", "2 given up, 1 cancelled"
        h1.markdown(f"### {title}\n**{c.status}**" + (f" ({missing})" if missing else "")
                    + f" · priority {c.priority} · "
                    f"{c.protocol} v{c.protocol_version} · seed {c.seed} · "
                    f"{c.trials_per_task} trials/task · policies: "
                    + ", ".join(policy_title(role, p, code)
                                for p, code in zip(c.policies, c.blind_codes, strict=True)))
        h1.progress(min(1.0, c.done / total),
                    text=f"{c.done}/{total} trials done · {c.leased} running · "
                         f"{c.pending} pending" + (f" · {tally.given_up} given up"
                                                   if tally.given_up else "")
                         + (f" · {c.not_needed} not needed (a question was decided)"
                            if c.not_needed else ""))
        ctl = campaign_controls(role, c.status, tally.given_up)  # staff only; data.py rechecks
        if c.status == CampaignStatus.INCOMPLETE:
            if not steer:
                how = "Staff can re-queue them."
            elif ctl.requeue is not None:
                how = ("Re-queue them to complete the campaign (Resume cannot: nothing is left "
                       "in its queue).")
            else:  # only cancelled trials: re-queuing them is a deliberate choice, on the CLI
                how = f"`evalfleet campaign requeue {c.name} --status cancelled` re-queues them."
            h1.warning(f"Incomplete: {missing or 'trials missing'}. {how}",
                       icon=":material/report:")
        b1, b2, b3 = h2.columns(3)
        b1.button("Pause", key=f"pause_{c.id}", disabled=not ctl.pause, on_click=_act,
                  args=(data.set_status, c.id, "paused"), icon=":material/pause:", help=ctl.why)
        if ctl.requeue is not None:  # instead of Resume, which the store refuses when incomplete
            b2.button(ctl.requeue, key=f"requeue_{c.id}", disabled=not ctl.requeue_enabled,
                      on_click=_requeue, args=(c.id, label), icon=":material/replay:",
                      type="primary",
                      help=ctl.why or "Back in the queue with a fresh attempt budget (audited).")
        else:
            b2.button("Resume", key=f"resume_{c.id}", disabled=not ctl.resume, on_click=_act,
                      args=(data.set_status, c.id, "pending"), icon=":material/play_arrow:",
                      help=ctl.why)
        b3.button("Cancel", key=f"cancel_{c.id}", disabled=not ctl.cancel, on_click=_ask_cancel,
                  args=(c.id,), icon=":material/cancel:",
                  help=ctl.why or "Asks for confirmation first.")
        if ctl.cancel and st.session_state.get(CONFIRM_KEY) == c.id:
            _confirm_cancel(c, label)
        p1, p2 = h2.columns([2, 1])
        prio = p1.number_input("Priority", -100, 100, c.priority, key=f"prio_{c.id}",
                               label_visibility="collapsed", disabled=not ctl.priority)
        p2.button("Set priority", key=f"setprio_{c.id}",
                  disabled=not ctl.priority or prio == c.priority, on_click=_act,
                  args=(data.set_priority, c.id, int(prio)), help=ctl.why)
        rows = sorted(data.progress(c.id), key=lambda r: (r[0], r[1] or ""))
        st.dataframe(
            [{"category": cat, "difficulty": diff or "", "done": done, "planned": n,
              "progress": done / n if n else 0.0} for cat, diff, done, n in rows],
            hide_index=True, column_config={"progress": st.column_config.ProgressColumn(
                "progress", min_value=0.0, max_value=1.0, format="percent")})


def render() -> None:
    ui.start("Campaigns")
    _prompts()
    if may(current_role(), Action.CREATE_CAMPAIGN):  # the form lists policy names: staff only
        _create()
    else:
        st.caption("You see campaigns blind and cannot steer them. " + STEERING_CAPTION)
    camps = data.campaigns()
    show = st.segmented_control("Show", ["active", "all"], default="active", key="camp_show")
    for c in camps:  # "active" includes incomplete ones: they wait for someone to re-queue
        if show == "all" or c.status in ACTIVE_VIEW:
            _campaign(c)


render()
