"""Every dashboard page under AppTest, on a store populated through the real queue functions
(sim episodes with H.264 videos). SQLite always; PostgreSQL where marked by the `store` fixture.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import select, update
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from orchestrator.config import get_settings
from orchestrator.reporting import ReportFilters, build_report_for_ids
from orchestrator.store.db import Store
from orchestrator.store.labels import LabelInput, save_label
from orchestrator.store.models import Campaign, Event, Label
from protocols.stats import format_cell
from tests.dashboard_sample import CampaignSpec, Sample, populate

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
POLICIES = ("Zephyr-VLA-7b", "Quokka-Heuristic")  # distinctive: searched for on blind pages


@dataclass(frozen=True)
class Dash:
    store: Store
    sample: Sample
    url: str
    home: Path


def open_dashboard(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   labels: bool = True) -> Dash:
    home = tmp_path / "dash-home"
    url = store.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("EVALFLEET_HOME", str(home))
    monkeypatch.setenv("EVALFLEET_DATABASE_URL", url)
    monkeypatch.setenv("EVALFLEET_STAFF", "ann,bob")  # staff see names; anyone else is blind
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()
    sample = populate(store, home / "media", [CampaignSpec("c-smoke", "smoke", POLICIES, trials=1)],
                      evaluators=())
    if labels:  # human labels on the first four episodes, one of them disputed
        for ep, votes in zip(sample.episode_ids, [("ann", True), ("ann", False), ("bob", True),
                                                  ("ann", True)], strict=False):
            save_label(store, LabelInput(ep, votes[0], votes[1], 0.5))
        save_label(store, LabelInput(sample.episode_ids[0], "bob", False, 0.2))
    return Dash(store, sample, url, home)


@pytest.fixture
def dash(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dash]:
    yield open_dashboard(store, tmp_path, monkeypatch)
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def sdash(sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dash]:
    yield open_dashboard(sqlite_store, tmp_path, monkeypatch)
    st.cache_data.clear()
    st.cache_resource.clear()


def run_app(page: str | None = None, user: str | None = "ann", **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    if user:
        at.session_state["evaluator"] = user
    at.run()
    if page:
        at.query_params.update(query)
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def all_text(at: AppTest) -> str:
    """Everything the page rendered: every element's message, dataframes decoded."""
    parts: list[str] = []

    def walk(node) -> None:  # type: ignore[no-untyped-def]
        for child in getattr(node, "children", {}).values():
            walk(child)
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        if type(node).__name__ == "Dataframe":
            parts.append(node.value.to_csv())

    walk(at._tree)
    return "\n".join(parts)


def shown_episode(at: AppTest) -> int:
    caption = next(c.value for c in at.caption if c.value.startswith("episode **"))
    return int(caption.split("**")[1])


def label_button(at: AppTest, action: str):  # type: ignore[no-untyped-def]
    """The Label page's success/failure/skip/undo button of this render (its key carries the
    render's token: label_act_<action>_<token>)."""
    (button,) = [b for b in at.button if (b.key or "").startswith(f"label_act_{action}_")]
    return button


# --- Label ------------------------------------------------------------------------------------


def test_label_given_in_the_page_lands_with_its_evaluator(dash: Dash) -> None:
    at = run_app(user=None)
    assert "Enter your name" in at.info[0].value
    at.sidebar.text_input(key="evaluator_input").input("carol").run()  # entered once
    ep = shown_episode(at)
    at.slider(key=f"progress_{ep}").set_value(40)
    at.multiselect(key=f"tags_{ep}").set_value(["missed_grasp", "collision"])
    at.text_area(key=f"notes_{ep}").input("slipped at the rim")
    label_button(at, "failure").click().run()
    assert not at.exception and not at.error
    assert f"Saved episode {ep} as **failure**" in at.success[0].value
    assert shown_episode(at) != ep  # the next one is up
    with dash.store.read() as s:
        lab = s.scalar(select(Label).where(Label.episode_id == ep, Label.evaluator == "carol"))
    assert (lab.source, lab.success, lab.progress) == ("human", False, 0.4)
    assert lab.failure_mode == "missed_grasp, collision" and lab.notes == "slipped at the rim"
    # the name stays for the session: the next click saves without asking again
    nxt = shown_episode(at)
    label_button(at, "success").click().run()
    with dash.store.read() as s:
        assert s.scalar(select(Label.success).where(Label.episode_id == nxt,
                                                    Label.evaluator == "carol")) is True


def test_blind_label_page_never_shows_a_policy_name(sdash: Dash) -> None:
    at = run_app()
    texts = [all_text(at)]
    at.button(key=f"adj_{sdash.sample.episode_ids[0]}").click().run()  # disagreement opened
    texts.append(all_text(at))
    label_button(at, "skip").click().run()
    texts.append(all_text(at))
    blob = "\n".join(texts)
    assert "P-" in blob and "disputed" in blob  # codes and the adjudication list are there
    for name in POLICIES:
        assert name.lower() not in blob.lower()
    # the collector does find names where they are shown (Results, not blind)
    results = all_text(run_app("results"))
    assert all(name in results for name in POLICIES)
    blind = run_app("results")
    blind.toggle(key="res_blind").set_value(True).run()
    assert not any(name in all_text(blind) for name in POLICIES)


def test_agreement_and_disagreements_are_shown(sdash: Dash) -> None:
    at = run_app()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cohen's kappa"] != "" and metrics["episodes with 2+ evaluators"] == "1"
    assert any("disputed (tie)" in m.value for m in at.markdown)


def test_oidc_user_is_the_evaluator(sdash: Dash) -> None:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback",
                          "cookie_secret": "x", "client_id": "c", "client_secret": "s",
                          "server_metadata_url": "https://idp.example/.well-known/openid"}
    at.user = {"is_logged_in": True, "email": "eve@lab.example", "name": "Eve"}
    at.run()
    assert not at.sidebar.text_input  # no name box when the lab signs people in
    ep = shown_episode(at)
    label_button(at, "success").click().run()
    with sdash.store.read() as s:
        assert s.scalar(select(Label.evaluator).where(Label.episode_id == ep,
                                                      Label.evaluator == "eve@lab.example"))


# --- Results ----------------------------------------------------------------------------------


def test_results_equal_evalfleet_report(dash: Dash) -> None:
    from orchestrator.cli import app as cli

    at = run_app("results")
    shown = at.dataframe[0].value
    out = CliRunner().invoke(cli, ["report", "c-smoke", "--format", "json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert list(shown["category"]) == [r["label"] for r in report["rows"]]
    for i, row in enumerate(report["rows"]):
        for pol in report["policies"]:
            assert shown.iloc[i][pol["header"]] == row["cells"][pol["key"]]["text"]
        assert shown.iloc[i, -1] == row["comparisons"][0]["text"]
    direct = build_report_for_ids(dash.store, dash.sample.campaign_ids)
    # every episode counts except the disputed one (ann vs bob on the first)
    assert sum(c.n for c in direct.row("overall").cells) == len(dash.sample.episode_ids) - 1
    assert at.get("download_button") and len(at.get("vega_lite_chart")) == 1


def test_results_filters(sdash: Dash) -> None:
    at = run_app("results")
    at.selectbox(key="res_source").set_value("human").run()
    want = build_report_for_ids(sdash.store, sdash.sample.campaign_ids,
                                filters=ReportFilters(source="human"))
    shown = at.dataframe[0].value
    assert list(shown.iloc[-1, 1:3]) == [format_cell(c) for c in want.row("overall").cells]
    at.selectbox(key="res_source").set_value(None)
    at.selectbox(key="res_evaluator").set_value("ann").run()  # only ann's own labels decide
    overall = at.dataframe[0].value.iloc[-1]
    assert sum(int(str(v).rsplit("n=", 1)[1].split()[0]) for v in overall.iloc[1:3]) == 3
    at.multiselect(key="res_robots").set_value(["arm-1"]).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert "Cohen's kappa (human vs sim)" in metrics


# --- Campaigns, Fleet, Episode ----------------------------------------------------------------


def test_campaigns_create_pause_resume_and_scene_ready(sdash: Dash) -> None:
    at = run_app("campaigns")
    prompt_id = next(b.key for b in at.button if b.key and b.key.startswith("ready_"))
    at.button(key=prompt_id).click().run()
    assert "confirmed" in at.success[0].value
    with sdash.store.read() as s:
        prompt = s.get(Event, int(prompt_id.split("_")[1]))
        ok = s.scalar(select(Event).where(Event.kind == "operator_confirmed"))
    assert ok.robot_id == prompt.robot_id and ok.id > prompt.id and ok.actor == "ann"
    assert not any(b.key and b.key.startswith("ready_") for b in at.button)
    at.selectbox(key="new_protocol").set_value("smoke")
    at.text_input(key="new_name").input("from-the-page")
    at.multiselect(key="new_policies").set_value(list(POLICIES))
    at.number_input(key="new_trials").set_value(2)
    at.button[[b.label for b in at.button].index("Create campaign")].click().run()
    assert "from-the-page" in at.success[0].value, [e.value for e in at.error]
    from dashboard import data

    new = next(c for c in data.campaigns() if c.name == "from-the-page")
    assert new.trials == 5 * 2 * 2
    at.button(key=f"pause_{new.id}").click().run()
    assert next(c for c in data.campaigns() if c.id == new.id).status == "paused"
    at.segmented_control(key="camp_show").set_value("all").run()
    at.button(key=f"resume_{new.id}").click().run()
    at.number_input(key=f"prio_{new.id}").set_value(7).run()
    at.button(key=f"setprio_{new.id}").click().run()
    c = next(c for c in data.campaigns() if c.id == new.id)
    assert (c.status, c.priority) == ("pending", 7)


def _heartbeats(store: Store, **age_s: float) -> None:
    """Set arms' last heartbeat to `age_s` seconds ago (arm_1=... for arm-1)."""
    from orchestrator.store.models import Robot

    with store.write() as s:
        for arm, age in age_s.items():
            s.execute(update(Robot).where(Robot.name == arm.replace("_", "-"))
                      .values(last_heartbeat=datetime.now(UTC) - timedelta(seconds=age)))


def test_new_campaign_form_preselects_nothing_and_refuses_without_policy(sdash: Dash) -> None:
    from dashboard import data

    at = run_app("campaigns")
    assert at.multiselect(key="new_policies").value == []
    assert at.selectbox(key="new_protocol").value is None
    before = len(data.campaigns())
    at.button[[b.label for b in at.button].index("Create campaign")].click().run()
    errors = " ".join(e.value for e in at.error)
    assert "Choose a protocol" in errors and "Choose at least one policy" in errors
    at.selectbox(key="new_protocol").set_value("smoke")
    at.button[[b.label for b in at.button].index("Create campaign")].click().run()
    errors = " ".join(e.value for e in at.error)
    assert "Choose at least one policy" in errors and "protocol" not in errors
    data.clear_caches()
    assert len(data.campaigns()) == before  # nothing was created
    at.multiselect(key="new_policies").set_value([POLICIES[1]])
    at.button[[b.label for b in at.button].index("Create campaign")].click().run()
    assert not at.error and "created and queued" in at.success[0].value
    made = data.campaigns()
    assert len(made) == before + 1
    assert next(c for c in made if c.id == max(m.id for m in made)).policies == (POLICIES[1],)


def test_cancel_asks_for_confirmation_naming_campaign_and_pending(sdash: Dash) -> None:
    from dashboard import data
    from dashboard.visibility import Role, Viewer

    cid = data.create_campaign(name="to-cancel", protocol="smoke", policy_names=list(POLICIES),
                               trials=1, seed=5, priority=0, viewer=Viewer("ann", Role.STAFF))
    pending = next(c for c in data.campaigns() if c.id == cid).pending
    assert pending == 10
    at = run_app("campaigns")
    at.button(key=f"cancel_{cid}").click().run()
    data.clear_caches()
    assert next(c for c in data.campaigns() if c.id == cid).status == "pending"  # not yet
    ask = " ".join(w.value for w in at.warning)
    assert f"Cancel campaign **to-cancel (#{cid})**" in ask
    assert f"**{pending} pending trials**" in ask
    assert at.button(key=f"cancel_yes_{cid}").label == f"Yes, cancel to-cancel (#{cid})"
    at.button(key=f"cancel_no_{cid}").click().run()  # changed my mind
    data.clear_caches()
    assert next(c for c in data.campaigns() if c.id == cid).status == "pending"
    assert not any(b.key == f"cancel_yes_{cid}" for b in at.button)
    at.button(key=f"cancel_{cid}").click().run()
    at.button(key=f"cancel_yes_{cid}").click().run()
    assert any(f"**to-cancel (#{cid})** cancelled" in w.value for w in at.warning)
    data.clear_caches()
    c = next(c for c in data.campaigns() if c.id == cid)
    assert (c.status, c.pending, c.cancelled) == ("cancelled", 0, pending)
    with sdash.store.read() as s:
        ev = s.scalar(select(Event).where(Event.kind == "campaign_cancelled",
                                          Event.campaign_id == cid))
    assert ev is not None and ev.actor == "ann"


def test_fleet_marks_a_silent_arm_stale_and_names_every_estop(sdash: Dash) -> None:
    from orchestrator.liveness import HEARTBEAT_S, STALE_AFTER_PERIODS

    _heartbeats(sdash.store, arm_1=1, arm_2=HEARTBEAT_S * STALE_AFTER_PERIODS + 60)
    with sdash.store.write() as s:  # no campaign running: the page does not refresh itself
        s.execute(update(Campaign).values(status="done"))
    at = run_app("fleet")
    shown = at.dataframe[0].value
    status = dict(zip(shown["arm"], shown["status"], strict=True))
    assert status == {"arm-1": "online", "arm-2": "STALE (last said busy)"}  # never "busy"
    assert any("**arm-2**" in w.value and "last said busy" in w.value for w in at.warning)
    labels = [b.label for b in at.button]
    assert labels[:3] == ["E-STOP ALL", "E-stop arm-1", "E-stop arm-2"]  # all stops on top
    assert any("does not refresh" in c.value for c in at.caption)
    with sdash.store.write() as s:
        s.execute(update(Campaign).where(Campaign.name == "c-smoke").values(status="running"))
    st.cache_data.clear()
    at = run_app("fleet")
    assert any("Refreshing every 3 s while c-smoke runs" in c.value for c in at.caption)


def test_fleet_estop_per_arm_and_all(sdash: Dash, monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard import live

    monkeypatch.setattr(live, "ESTOP_TIMEOUT_MS", 100)  # nothing listens on the sample endpoints
    _heartbeats(sdash.store, arm_1=0, arm_2=0)
    at = run_app("fleet")
    shown = at.dataframe[0].value
    assert list(shown["arm"]) == ["arm-1", "arm-2"] and "busy" in list(shown["status"])
    at.button(key="estop_arm-1").click().run()
    assert "E-stop requested for **arm-1**" in at.warning[0].value
    at.button(key="estop_all").click().run()
    with sdash.store.read() as s:
        evs = s.execute(select(Event.payload, Event.robot_id, Event.actor)
                        .where(Event.kind == "estop_requested").order_by(Event.id)).all()
    assert [(p["robot"], r is not None, a) for p, r, a in evs] == [
        ("arm-1", True, "ann"), ("all", False, "ann")]


def test_episode_page(sdash: Dash) -> None:
    ep = sdash.sample.episode_ids[0]
    at = run_app("episode", episode=str(ep))
    assert f"Episode {ep}:" in at.subheader[0].value
    assert POLICIES[0] in at.markdown[0].value or POLICIES[1] in at.markdown[0].value
    steps = at.dataframe[1].value
    assert len(steps) > 3 and {"inference_ms", "plan"} <= set(steps.columns)
    labels = at.dataframe[3].value
    assert {"sim", "human"} <= set(labels["source"])
    assert len(at.get("video")) == 2 and len(at.get("vega_lite_chart")) == 2  # actions, latency
    missing = run_app("episode", episode="999999")
    assert "does not exist" in missing.error[0].value


def test_a_store_without_schema_says_what_to_run(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALFLEET_HOME", str(tmp_path / "empty"))
    get_settings.cache_clear()
    st.cache_resource.clear()
    at = run_app()
    assert "evalfleet db upgrade" in at.error[0].value
