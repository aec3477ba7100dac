"""Label: the blind queue. Policies appear only as blind codes; the sim's verdict is hidden.

A campaign created with an audit rate (orchestrator.store.audit) serves only its random
audit sample; the page says so and how much of the sample is labelled.

Keys: s = success, f = failure, n = skip, u = undo your last label (dashboard.label_keys).

Labels are bound to what was seen (dashboard.label_actions): every render of an episode gets
a fresh random token, kept server-side; the buttons (their keys carry the token) and the keys
(the browser sends the token it rendered) submit it with the episode id, and an action whose
token is not the one on screen is refused with a message, saving nothing. One action per
render: the page shows "saving…" and ignores keys and buttons until the next episode is
rendered. The label version seen when the episode was opened also goes with the save, so a
label changed meanwhile (another tab) is a conflict.
"""

from __future__ import annotations

import streamlit as st

from dashboard import agreement, charts, data, label_keys, ui
from dashboard.identity import current_role, current_user
from dashboard.label_actions import (
    CURRENT,
    SEEN,
    SHOWN,
    SKIPPED,
    Render,
    on_button,
    on_key,
    open_episode,
    open_jump,
    screen_for,
    settle,
    take_notice,
)
from dashboard.visibility import evaluator_aliases, vote_text
from orchestrator.store.browse import ACTION_COLUMNS, BrowseError, QueueItem

FAILURE_MODES = (
    "missed_grasp", "dropped_object", "wrong_object", "wrong_place", "knocked_over",
    "collision", "no_progress", "stopped_early", "unsafe_motion", "estop", "perception",
)


def _describe(it: QueueItem) -> str:
    diff = f" / {it.difficulty}" if it.difficulty else ""
    return f"{it.category}{diff}"


def _pick(queue: list[QueueItem]) -> int | None:
    chosen = st.session_state.get(CURRENT)
    if chosen is not None:
        return int(chosen)
    skipped = st.session_state.setdefault(SKIPPED, set())
    for it in queue:
        if it.episode_id not in skipped:
            return it.episode_id
    return None


# --- the page -------------------------------------------------------------------------------------


def _actions(render: Render) -> None:
    """The label buttons (keys carry the token) and, below them, the keyboard guard."""
    tok, ep = render.screen.token, render.screen.episode_id
    if ep is not None:
        b1, b2, b3, b4, _ = st.columns([1, 1, 1, 1, 2])
        b1.button("Success", key=f"label_act_success_{tok}", on_click=on_button,
                  args=("success", ep, tok), type="primary", icon=":material/check:",
                  width="stretch")
        b2.button("Failure", key=f"label_act_failure_{tok}", on_click=on_button,
                  args=("failure", ep, tok), icon=":material/close:", width="stretch")
        b3.button("Skip", key=f"label_act_skip_{tok}", on_click=on_button,
                  args=("skip", ep, tok), icon=":material/skip_next:", width="stretch")
    else:
        b4, _ = st.columns([1, 5])
    last = render.offered
    if last is not None:
        b4.button("Undo", key=f"label_act_undo_{tok}", on_click=on_button,
                  args=("undo", ep, tok), icon=":material/undo:", width="stretch",
                  help=f"Take back your last label: episode {last.episode_id}, "
                       f"{'success' if last.success else 'failure'} (version {last.version})")
    keys = "**s** success · **f** failure · **n** skip · " if ep is not None else ""
    undo = (f" · **u** undoes your last label (episode {last.episode_id}, "
            f"{'success' if last.success else 'failure'})" if last else "")
    st.caption(f"Keys: {keys}Success saves progress 100%{undo}. One action per episode "
               "shown: keys wait while saving.")
    label_keys.mount(tok, ep, last is not None, on_key)


def _episode(user: str, ep: int, audited: frozenset[int] = frozenset()) -> None:
    try:
        view = data.blind_episode(ep, user)
    except BrowseError as e:
        st.error(str(e))
        st.session_state.pop(CURRENT, None)
        return
    if st.session_state.get(SHOWN) != ep:  # opened now: remember the version we saw
        st.session_state[SHOWN] = ep
        st.session_state[CURRENT] = ep  # stays on screen (and under the buttons) until acted on
        st.session_state[SEEN] = view.mine.version if view.mine else None
    render = screen_for(user, ep)
    it, mine = view.item, view.mine
    st.subheader(f"“{it.instruction}”")
    st.caption(f"episode **{ep}** · policy **{it.blind_code}** · campaign #{it.campaign_id} · "
               f"{_describe(it)} · robot {it.robot or '–'} · {it.human_labels} human label(s)"
               + (" · **audit sample** (drawn at random)" if it.campaign_id in audited else ""))
    if mine is not None:
        st.info(f"You labeled this episode **{'success' if mine.success else 'failure'}** "
                f"(version {mine.version}); saving again replaces your label.")
    ui.videos(view.media)
    table = data.steps(ep, ("idx", "action", "action_space", "chunk_id", *ACTION_COLUMNS))
    if table.rows:
        ui.actions(charts.step_frame(table), data.episode_robot(ep))
    progress = round((mine.progress or 0.0) * 100) if mine else 0
    c1, c2 = st.columns([1, 2])
    c1.slider("Partial progress (%) if it failed", 0, 100, progress, 5, key=f"progress_{ep}")
    tags = [t.strip() for t in (mine.failure_mode or "").split(",") if t.strip()] if mine else []
    c2.multiselect("Failure modes", sorted({*FAILURE_MODES, *tags}), default=tags,
                   key=f"tags_{ep}", accept_new_options=True)
    st.text_area("Notes", value=(mine.notes or "") if mine else "", key=f"notes_{ep}", height=68)
    _actions(render)


def _agreement_tab(ids: tuple[int, ...]) -> None:
    votes = data.votes(ids)
    result = agreement.agreement(votes)
    c1, c2, c3 = st.columns(3)
    c1.metric(result.method if result.method != "none" else "kappa",
              "–" if result.kappa is None else f"{result.kappa:.2f}")
    c2.metric("episodes with 2+ evaluators", result.episodes)
    c3.metric("all agree", "–" if result.raw_agreement is None else f"{result.raw_agreement:.0%}")
    if result.note:
        st.caption(result.note)
    pairs = agreement.pairwise(votes)
    if len(pairs) > 1:
        # evaluators see no names: "you" and "evaluator 1", "evaluator 2", ... (staff: names)
        alias = evaluator_aliases((w for p in pairs for w in (p.a, p.b)), current_role(),
                                  current_user())
        st.dataframe([{"evaluator A": alias[p.a], "evaluator B": alias[p.b],
                       "episodes": p.episodes,
                       "Cohen's kappa": None if p.kappa is None else round(p.kappa, 3)}
                      for p in pairs], hide_index=True)


def _disagreements_tab(ids: tuple[int, ...]) -> None:
    items = data.disagreements(ids)
    if not items:
        st.caption("No disagreements: every multiply-labeled episode has one answer.")
        return
    st.caption("Ties are not counted in results until someone adjudicates by adding a label.")
    for d in items[:50]:
        c1, c2 = st.columns([5, 1])
        votes = vote_text(d.votes, current_role(), current_user())  # no names to evaluators
        c1.markdown(f"**#{d.item.episode_id}** · {d.item.blind_code} · {d.item.instruction} · "
                    f"*{d.status}* — {votes}")
        c2.button("Open", key=f"adj_{d.item.episode_id}", on_click=open_episode,
                  args=(d.item.episode_id,))


def render() -> None:
    ui.start("Label episodes")
    user = ui.require_user("label episodes")
    camps = data.campaigns()
    with st.sidebar:
        picked = st.multiselect(
            "Campaigns", [c.id for c in camps], key="label_campaigns",
            format_func=lambda cid: f"#{cid} · {next(c.protocol for c in camps if c.id == cid)}",
            help="Empty: all campaigns. Shown by number only, to keep the labeling blind.")
        cap = st.selectbox("Episodes with fewer than … human labels", [None, 1, 2, 3, 5],
                           format_func=lambda n: "any number" if n is None else str(n),
                           key="label_cap")
        jump = st.number_input("Open episode #", min_value=1, step=1, value=None, key="label_jump")
        if jump is not None:
            st.button("Open", key="label_jump_go", on_click=open_jump)
    # Two placeholders on every run, so a saving run does not shift the episode below: it
    # stays on screen (and its keys locked) until the next one replaces it.
    notice_box, status = st.empty(), st.empty()
    notice = take_notice()
    if notice:
        notice_box.error(notice, icon=":material/block:")
    settle(user, status)  # an accepted action is carried out (once) before anything renders
    ids = tuple(picked)
    queue, remaining = data.label_queue(user, ids, cap)
    audits = data.audit_progress(ids)  # campaigns with an audit rate serve their sample only
    audited = frozenset(a.campaign_id for a in audits)
    ep = _pick(queue)
    tab_label, tab_queue, tab_dis, tab_agree = st.tabs(
        [f"Label ({remaining} to go)", "Queue", "Disagreements", "Agreement"])
    with tab_label:
        for a in audits:
            st.caption(f"Campaign #{a.campaign_id} · {a.text}")
        if ep is None:
            st.success("Nothing left to label for you here. Thank you!"
                       if remaining == 0 else "You skipped the rest of the queue.")
            if st.session_state.get(SKIPPED):
                st.button("Bring back skipped episodes", key="label_unskip",
                          on_click=lambda: st.session_state.pop(SKIPPED, None))
            _actions(screen_for(user, None))  # undo stays one key away after the last label
        else:
            _episode(user, ep, audited)
    with tab_queue:
        st.dataframe([{"episode": i.episode_id, "policy": i.blind_code, "task": i.instruction,
                       "category": _describe(i), "robot": i.robot, "human labels": i.human_labels,
                       "audit sample": i.campaign_id in audited}
                      for i in queue], hide_index=True)
    with tab_dis:
        _disagreements_tab(ids)
    with tab_agree:
        _agreement_tab(ids)


render()
