"""Evaluators see blind views on every page (AppTest, SQLite): no policy name anywhere; the
Episode page hides the sim verdict and others' labels until they have labelled it; Results is
locked blind; the Disagreements tab shows votes without names. Staff see names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st

from orchestrator.store.db import Store
from orchestrator.store.labels import LabelInput, save_label
from tests.integration.test_dashboard_pages import POLICIES, Dash, all_text, open_dashboard, run_app

PAGES = ("label", "results", "campaigns", "fleet", "episode")
EVALUATOR = "eve"  # not in EVALFLEET_STAFF (ann, bob)


@pytest.fixture
def sdash(sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dash]:
    yield open_dashboard(sqlite_store, tmp_path, monkeypatch)
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def dash(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dash]:
    """Both stores (SQLite; PostgreSQL with EVALFLEET_TEST_POSTGRES_URL)."""
    yield open_dashboard(store, tmp_path, monkeypatch)
    st.cache_data.clear()
    st.cache_resource.clear()


def _no_names(text: str) -> None:
    for name in POLICIES:
        assert name.lower() not in text.lower(), name


def test_every_page_is_blind_for_an_evaluator(sdash: Dash) -> None:
    ep = sdash.sample.episode_ids[0]
    for page in PAGES:
        at = run_app(page, user=EVALUATOR, **({"episode": str(ep)} if page == "episode" else {}))
        _no_names(all_text(at))
    results = run_app("results", user=EVALUATOR)
    assert results.toggle(key="res_blind_locked").value is True
    assert results.toggle(key="res_blind_locked").disabled
    assert "P-" in all_text(results)


def test_episode_page_reveals_verdicts_only_after_the_evaluators_own_label(sdash: Dash) -> None:
    ep = sdash.sample.episode_ids[0]  # labelled by ann and bob, and by the simulator
    before = run_app("episode", user=EVALUATOR, episode=str(ep))
    text = all_text(before)
    assert "Hidden until you have labelled this episode" in text
    assert not any("evaluator" in df.value.columns for df in before.dataframe)  # no labels
    assert not any(m.label == "ended by" and m.value != "hidden" for m in before.metric)
    assert not any(t.label == "Events" for t in before.tabs)
    save_label(sdash.store, LabelInput(ep, EVALUATOR, True, 1.0))
    after = run_app("episode", user=EVALUATOR, episode=str(ep))
    labels = after.dataframe[-1].value
    assert set(labels["evaluator"]) == {"simulator", "another evaluator", "you"}
    text = all_text(after)
    assert "ann" not in set(labels["evaluator"]) and "bob" not in set(labels["evaluator"])
    _no_names(text)  # never the policy: one name would unblind its code for the campaign


def test_disagreements_show_votes_without_names_to_evaluators(sdash: Dash) -> None:
    at = run_app(user=EVALUATOR)
    line = next(m.value for m in at.markdown if "disputed" in m.value)
    assert "ann" not in line and "bob" not in line and "✓" in line and "✗" in line
    staff = run_app(user="ann")
    line = next(m.value for m in staff.markdown if "disputed" in m.value)
    assert "ann: " in line and "bob: " in line


def test_staff_see_names(sdash: Dash) -> None:
    ep = sdash.sample.episode_ids[0]
    for page, want in (("results", POLICIES), ("campaigns", POLICIES), ("episode", None)):
        text = all_text(run_app(page, user="ann", **({"episode": str(ep)} if page == "episode"
                                                      else {})))
        assert any(name in text for name in (want or POLICIES)), page
        if want:
            assert all(name in text for name in want), page


def test_an_oidc_group_makes_staff(sdash: Dash) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.integration.test_dashboard_pages import APP

    def signed_in(groups: list[str]) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback",
                              "cookie_secret": "x", "client_id": "c", "client_secret": "s",
                              "server_metadata_url": "https://idp.example/.well-known/openid"}
        at.user = {"is_logged_in": True, "email": "pi@lab.example", "groups": groups}
        at.run()
        at.switch_page("views/results.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    staff = signed_in(["evalfleet-staff", "robots"])
    assert "(staff)" in " ".join(c.value for c in staff.sidebar.caption)
    assert all(name in all_text(staff) for name in POLICIES)
    evaluator = signed_in(["robots"])
    assert "(evaluator)" in " ".join(c.value for c in evaluator.sidebar.caption)
    _no_names(all_text(evaluator))


# --- who may steer: staff; an e-stop: everyone -------------------------------------------------


def _staff_campaign(name: str) -> int:
    from dashboard import data
    from dashboard.visibility import Role, Viewer

    return data.create_campaign(name=name, protocol="smoke", policy_names=list(POLICIES),
                                trials=1, seed=7, priority=0, viewer=Viewer("ann", Role.STAFF))


def _crafted_click(at, key: str) -> None:  # type: ignore[no-untyped-def]
    """What a client that ignores `disabled` sends: the button's trigger, then a rerun
    (Streamlit drops a disabled widget's trigger; dashboard/data.py would refuse it too)."""
    button = at.button(key=key)
    assert button.disabled, key  # the page offers it disabled ...
    button.proto.disabled = False  # ... a crafted client presses it anyway
    button.click().run()


def _events(store: Store, kind: str) -> list:  # type: ignore[type-arg]
    from sqlalchemy import select

    from orchestrator.store.models import Event

    with store.read() as s:
        return list(s.scalars(select(Event).where(Event.kind == kind)))


def test_an_evaluator_cannot_steer_campaigns_but_can_stop_arms(
        sdash: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard import data, live
    from dashboard.visibility import NotAllowed, Role, Viewer
    from orchestrator.store.models import Campaign

    cid = _staff_campaign("steer-me")
    at = run_app("campaigns", user=EVALUATOR)
    assert not any(s.key == "new_protocol" for s in at.selectbox)  # no New campaign form
    assert any("cannot steer them" in c.value and "for staff" in c.value for c in at.caption)
    assert any("Scene ready is for staff" in c.value for c in at.caption)
    for key in (f"pause_{cid}", f"resume_{cid}", f"cancel_{cid}", f"setprio_{cid}"):
        assert at.button(key=key).disabled, key
    assert at.number_input(key=f"prio_{cid}").disabled
    ready = next(b.key for b in at.button if (b.key or "").startswith("ready_"))
    # crafted reruns press the disabled buttons: nothing changes
    _crafted_click(at, f"pause_{cid}")
    _crafted_click(at, ready)
    _crafted_click(at, f"cancel_{cid}")
    assert not any(b.key == f"cancel_yes_{cid}" for b in at.button)  # no confirmation offered
    # a rerun that presses buttons rendered for staff once the session is an evaluator's:
    # the callbacks run, and dashboard/data.py refuses (the role is read at the write)
    staff = run_app("campaigns", user="ann")
    staff.session_state["evaluator"] = EVALUATOR
    staff.button(key=f"pause_{cid}").click().run()
    assert any(f"Not allowed: {EVALUATOR} is an evaluator and only staff may pause"
               in e.value for e in staff.error), [e.value for e in staff.error]
    staff = run_app("campaigns", user="ann")
    staff.session_state["evaluator"] = EVALUATOR
    staff.button(key=ready).click().run()
    assert any("only staff may confirm a scene" in e.value for e in staff.error)
    eve = Viewer(EVALUATOR, Role.EVALUATOR)
    for call in (lambda: data.set_status(cid, "cancelled", eve),
                 lambda: data.set_status(cid, "paused", eve),
                 lambda: data.set_priority(cid, 9, eve),
                 lambda: data.requeue_given_up(cid, eve),
                 lambda: data.confirm_setup(int(ready.split("_")[1]), eve),
                 lambda: data.create_campaign(name="x", protocol="smoke", trials=1, seed=0,
                                              policy_names=list(POLICIES), priority=0,
                                              viewer=eve)):
        with pytest.raises(NotAllowed, match="only staff may"):
            call()
    with sdash.store.read() as s:
        c = s.get(Campaign, cid)
        assert (c.status, c.priority) == ("pending", 0)
        assert s.query(Campaign).count() == 2  # c-smoke and steer-me: nothing created
    assert _events(sdash.store, "operator_confirmed") == []
    assert _events(sdash.store, "campaign_paused") == _events(sdash.store, "campaign_cancelled")
    assert _events(sdash.store, "campaign_paused") == []
    # safety: E-STOP ALL and each arm's e-stop are everyone's
    monkeypatch.setattr(live, "ESTOP_TIMEOUT_MS", 100)  # nothing listens on the endpoints
    fleet = run_app("fleet", user=EVALUATOR)
    assert not fleet.button(key="estop_all").disabled
    assert not fleet.button(key="estop_arm-1").disabled
    fleet.button(key="estop_all").click().run()
    assert [(e.payload["robot"], e.actor) for e in _events(sdash.store, "estop_requested")] == [
        ("all", EVALUATOR)]


def _make_incomplete(store: Store, cid: int, given_up: int) -> list[int]:
    """All of the campaign's trials closed, `given_up` of them given up; the store settles
    the campaign (incomplete)."""
    from sqlalchemy import select, update

    from orchestrator.store.lifecycle import settle_campaigns
    from orchestrator.store.models import Trial

    with store.write() as s:
        ids = list(s.scalars(select(Trial.id).where(Trial.campaign_id == cid)
                             .order_by(Trial.plan_order)))
        s.execute(update(Trial).where(Trial.id.in_(ids)).values(status="done"))
        s.execute(update(Trial).where(Trial.id.in_(ids[:given_up]))
                  .values(status="given_up", attempts=5))
        assert (cid, "incomplete") in settle_campaigns(s)
    return ids[:given_up]


def test_staff_requeue_an_incomplete_campaign_from_the_page(dash: Dash) -> None:
    from dashboard import data
    from orchestrator.store.models import Campaign, Trial

    cid = _staff_campaign("gave-up")
    gave_up = _make_incomplete(dash.store, cid, 2)
    data.clear_caches()
    evaluator = run_app("campaigns", user=EVALUATOR)  # incomplete shows in "active"
    assert any("**incomplete** (2 given up)" in m.value for m in evaluator.markdown)
    assert evaluator.button(key=f"requeue_{cid}").disabled
    _crafted_click(evaluator, f"requeue_{cid}")
    with dash.store.read() as s:
        assert s.get(Campaign, cid).status == "incomplete"
    at = run_app("campaigns", user="ann")
    assert any("**incomplete** (2 given up)" in m.value and "gave-up" in m.value
               for m in at.markdown)
    assert any("2 given up" in w.value and "Re-queue them" in w.value for w in at.warning)
    assert not any(b.key == f"resume_{cid}" for b in at.button)  # the store refuses resume
    button = at.button(key=f"requeue_{cid}")
    assert button.label == "Re-queue 2 given-up trials" and not button.disabled
    button.click().run()
    assert any("2 given-up trials re-queued" in m.value for m in at.success)
    with dash.store.read() as s:
        assert s.get(Campaign, cid).status == "pending"
        assert [s.get(Trial, t).status for t in gave_up] == ["pending", "pending"]
    (ev,) = _events(dash.store, "trials_requeued")
    assert (ev.actor, ev.campaign_id, ev.payload["trials"]) == ("ann", cid, gave_up)
    assert not any("**incomplete**" in m.value for m in at.markdown)
    assert any(b.key == f"resume_{cid}" for b in at.button)  # pending again: Resume is back


def test_agreement_tab_names_evaluators_only_for_staff(sdash: Dash) -> None:
    first = sdash.sample.episode_ids[0]  # ann and bob labelled it
    for who in ("carol", EVALUATOR):
        save_label(sdash.store, LabelInput(first, who, who == "carol", 1.0))

    def pairs(user: str) -> set[str]:
        at = run_app(user=user)
        (table,) = [d.value for d in at.dataframe if "evaluator A" in d.value.columns]
        return set(table["evaluator A"]) | set(table["evaluator B"])

    assert pairs("ann") == {"ann", "bob", "carol", EVALUATOR}
    assert pairs(EVALUATOR) == {"you", "evaluator 1", "evaluator 2", "evaluator 3"}
