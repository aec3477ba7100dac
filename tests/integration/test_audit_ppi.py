"""The human audit and the report's PPI section on a real store (SQLite and PostgreSQL):
`--audit-rate` is stored, the Label queue serves only the drawn episodes of an audited
campaign (others unchanged), the PPI section equals the pure core on the same episodes, auto
labels change nothing in the existing report, and the CLI / Results page show it (blind:
codes only). Auto labels are inserted directly, as a detector writes them."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from orchestrator.config import get_settings
from orchestrator.reporting import build_report_for_ids
from orchestrator.store.audit import audit_progress, build_ppi, detectors_with_labels
from orchestrator.store.browse import label_queue
from orchestrator.store.campaigns import (
    CampaignError,
    PolicySpec,
    create_campaign,
    register_policy,
)
from orchestrator.store.db import Store
from orchestrator.store.models import Campaign, Detector, Episode, Label, Trial
from protocols.audit import drawn
from protocols.loader import load_protocol, resolve_protocol_path
from protocols.report import render_json
from protocols.report_ppi import AuditCampaign, AuditEpisode, AuditPolicy, build_ppi_report

POLICIES = ("Zephyr-VLA-7b", "Quokka-Heuristic")  # distinctive: searched for in blind output
RATE = 0.3
SEED = 11


@dataclass(frozen=True)
class World:
    store: Store
    audited: int  # campaign ids
    plain: int
    drawn: frozenset[int]  # episode ids of the audited campaign's drawn trials
    episodes: dict[int, list[int]]  # campaign id -> counted episode ids


def _campaign(store: Store, name: str, *, audit_rate: float | None, seed: int,
              trials: int = 12) -> int:
    loaded = load_protocol(resolve_protocol_path("smoke"))
    with store.write() as s:
        for p in POLICIES:
            register_policy(s, PolicySpec(name=p, kind="random"))
        return create_campaign(s, name=name, loaded=loaded, policy_names=list(POLICIES),
                               trials_per_task=trials, seed=seed,
                               audit_rate=audit_rate).id


def _episodes(store: Store, campaign_id: int, rng: random.Random) -> list[int]:
    """A counted, recorded episode per trial (an aborted attempt before some); no labels."""
    out = []
    with store.write() as s:
        for (tid,) in s.execute(select(Trial.id).where(Trial.campaign_id == campaign_id)
                                .order_by(Trial.id)):
            if rng.random() < 0.1:
                s.add(Episode(trial_id=tid, status="aborted", counted=False, attempt=1))
            e = Episode(trial_id=tid, status="recorded", counted=True, attempt=2)
            s.add(e)
            s.flush()
            out.append(e.id)
            s.get(Trial, tid).status = "done"
    return out


def _truth(store: Store, episode_id: int) -> bool:
    with store.read() as s:
        policy = s.execute(text(
            "SELECT p.name FROM episodes e JOIN trials t ON t.id = e.trial_id "
            "JOIN campaign_policies cp ON cp.id = t.campaign_policy_id "
            "JOIN policies p ON p.id = cp.policy_id WHERE e.id = :e"), {"e": episode_id}
        ).scalar_one()
    return random.Random(episode_id).random() < (0.7 if policy == POLICIES[0] else 0.4)


def _auto_labels(store: Store, episode_ids: list[int], name: str = "simdet") -> None:
    """The detector's labels, as Helper D's detectors write them: a biased detector that
    calls a third of the failures successes."""
    with store.write() as s:
        det = Detector(name=name, version="1", kind="sim", config={}, checksum="sha256:d1")
        s.add(det)
        s.flush()
        for e in episode_ids:
            ok = _truth(store, e) or random.Random(10**6 + e).random() < 0.33
            s.add(Label(episode_id=e, source="auto", evaluator=name, success=ok,
                        detector_id=det.id, detector_checksum=det.checksum))


def _human_labels(store: Store, episode_ids: list[int]) -> None:
    """Humans label most of the drawn episodes (one tie: disputed); a few stay unlabelled."""
    with store.write() as s:
        for i, e in enumerate(episode_ids):
            if i % 7 == 6:
                continue
            s.add(Label(episode_id=e, source="human", evaluator="ann", success=_truth(store, e)))
            if i == 0:
                s.add(Label(episode_id=e, source="human", evaluator="bob",
                            success=not _truth(store, e)))


@pytest.fixture
def world(store: Store) -> Iterator[World]:
    rng = random.Random(1)
    audited = _campaign(store, "c-audit", audit_rate=RATE, seed=SEED)
    plain = _campaign(store, "c-plain", audit_rate=None, seed=SEED + 1)
    eps = {c: _episodes(store, c, rng) for c in (audited, plain)}
    with store.read() as s:
        trial_of = dict(s.execute(select(Episode.id, Episode.trial_id).where(
            Episode.id.in_(eps[audited]))).all())
    sample = frozenset(e for e in eps[audited] if drawn(SEED, trial_of[e], RATE))
    yield World(store, audited, plain, sample, eps)


def test_audit_rate_is_stored_and_validated(store: Store) -> None:
    cid = _campaign(store, "c-a", audit_rate=0.2, seed=1, trials=1)
    with store.read() as s:
        assert s.get(Campaign, cid).audit_rate == 0.2
        assert s.scalar(text("SELECT payload FROM events WHERE kind = 'campaign_created' "
                             "AND campaign_id = :c"), {"c": cid}) is not None
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(CampaignError, match=r"--audit-rate .*\(0, 1\]") as e:
            _campaign(store, f"c-bad-{bad}", audit_rate=bad, seed=1, trials=1)
        assert "\n" not in str(e.value)
    assert _campaign(store, "c-full", audit_rate=1.0, seed=1, trials=1)


def test_label_queue_serves_only_the_audit_sample(world: World) -> None:
    a, p = world.audited, world.plain
    assert 0 < len(world.drawn) < len(world.episodes[a])
    with world.store.read() as s:
        items, total = label_queue(s, evaluator="zed", limit=10_000)
        assert {i.episode_id for i in items if i.campaign_id == a} == world.drawn
        assert {i.episode_id for i in items if i.campaign_id == p} == set(world.episodes[p])
        assert total == len(world.drawn) + len(world.episodes[p])
        only, n = label_queue(s, evaluator="zed", campaign_ids=[a], limit=10_000)
        assert {i.episode_id for i in only} == world.drawn and n == len(world.drawn)
        _, n = label_queue(s, evaluator="zed", campaign_ids=[p], limit=10_000)
        assert n == len(world.episodes[p])  # a campaign without audit rate: unchanged
        (progress,) = audit_progress(s)
        assert (progress.campaign_id, progress.sampled, progress.labelled) == (
            a, len(world.drawn), 0)
    _human_labels(world.store, sorted(world.drawn))
    with world.store.read() as s:
        (progress,) = audit_progress(s, [a, p])
        labelled = len(world.drawn) - len(sorted(world.drawn)[6::7])
        assert progress.labelled == labelled
        assert progress.text == (f"audit: {labelled} of {len(world.drawn)} sampled episodes "
                                 "labelled; rate 30%")
        _, n = label_queue(s, evaluator="ann", campaign_ids=[a], limit=10_000)
        assert n == len(world.drawn) - labelled  # her labelled ones leave her queue
        assert audit_progress(s, [p]) == []


def test_ppi_section_equals_the_pure_core_and_the_report_is_unchanged(world: World) -> None:
    ids = [world.audited]
    before = render_json(build_report_for_ids(world.store, ids))
    _human_labels(world.store, sorted(world.drawn))
    with_humans = render_json(build_report_for_ids(world.store, ids))
    _auto_labels(world.store, world.episodes[world.audited])
    assert render_json(build_report_for_ids(world.store, ids)) == with_humans != before
    with world.store.read() as s:
        assert detectors_with_labels(s, ids) == ["simdet"]
        got = build_ppi(s, ["c-audit"], "simdet")
        rows = s.execute(text(
            "SELECT e.id, t.id, cp.policy_id, tk.category, p.name, p.version, cp.blind_code, "
            "cp.position FROM episodes e JOIN trials t ON t.id = e.trial_id "
            "JOIN campaign_policies cp ON cp.id = t.campaign_policy_id "
            "JOIN policies p ON p.id = cp.policy_id JOIN tasks tk ON tk.id = t.task_id "
            "WHERE e.counted AND t.campaign_id = :c"), {"c": world.audited}).all()
        labels = s.execute(text("SELECT episode_id, source, success FROM labels")).all()
    votes: dict[int, list[tuple[str, bool]]] = {}
    for e, src, ok in labels:
        votes.setdefault(e, []).append((src, bool(ok)))
    eps = []
    for e, t, pid, cat, *_ in rows:
        hy = sum(1 for src, ok in votes.get(e, []) if src == "human" and ok)
        hn = sum(1 for src, ok in votes.get(e, []) if src == "human" and not ok)
        auto = next((ok for src, ok in votes.get(e, []) if src == "auto"), None)
        eps.append(AuditEpisode(world.audited, pid, cat, drawn(SEED, t, RATE), hy, hn, auto))
    pols = {AuditPolicy(world.audited, pid, n, v, code, pos)
            for _, _, pid, _, n, v, code, pos in rows}
    want = build_ppi_report(eps, [AuditCampaign(world.audited, "c-audit", RATE)],
                            sorted(pols, key=lambda p: p.position), detector="simdet",
                            checksums=("sha256:d1",))
    assert [(r.policy, r.category) for r in got.rows] == [(r.policy, r.category)
                                                          for r in want.rows]
    for g, w in zip(got.rows, want.rows, strict=True):
        assert (g.episodes, g.drawn, g.human_labels, g.auto_labels) == (
            w.episodes, w.drawn, w.human_labels, w.auto_labels)
        for a, b in ((g.human, w.human), (g.auto, w.auto), (g.ppi, w.ppi)):
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert (a.rate, a.std_error) == pytest.approx((b.rate, b.std_error))
        assert g.agreement == w.agreement
    overall = got.row(POLICIES[0])
    assert overall.ppi is not None and overall.auto is not None and overall.human is not None
    assert got.warnings[0].startswith("audit of c-audit:")


def _cli(store: Store, monkeypatch: pytest.MonkeyPatch, *args: str):  # type: ignore[no-untyped-def]
    from orchestrator.cli import app as cli

    monkeypatch.setenv("EVALFLEET_DATABASE_URL",
                       store.engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    return CliRunner().invoke(cli, list(args))


def test_cli_create_and_report_with_detector(world: World,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _human_labels(world.store, sorted(world.drawn))
    _auto_labels(world.store, world.episodes[world.audited])
    out = _cli(world.store, monkeypatch, "report", "c-audit", "--detector", "simdet",
               "--format", "json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["rows"] and data["ppi"]["detector"] == "simdet"
    assert {r["policy"] for r in data["ppi"]["rows"]} == set(POLICIES)
    assert all(r["ppi"] is not None for r in data["ppi"]["rows"] if r["category"] == "overall")
    out = _cli(world.store, monkeypatch, "report", "c-audit", "--detector", "simdet")
    assert out.exit_code == 0, out.output
    assert "auto-only (naive)" in out.output and "vs humans on the audit" in out.output
    assert "audit of c-audit:" in out.output
    for fmt in ("table", "markdown", "json"):
        out = _cli(world.store, monkeypatch, "report", "c-audit", "--detector", "simdet",
                   "--blind", "--format", fmt)
        assert out.exit_code == 0, out.output
        assert not any(n in out.output for n in (*POLICIES, "c-audit")), fmt
        assert "simdet" in out.output
    out = _cli(world.store, monkeypatch, "report", "c-audit", "--detector", "nodet")
    assert out.exit_code == 1 and "no auto labels of that detector" in out.output
    out = _cli(world.store, monkeypatch, "report", "c-audit", "--detector", "simdet",
               "--format", "csv")
    assert out.exit_code == 1 and "--detector" in out.output
    _auto_labels(world.store, world.episodes[world.plain], name="otherdet")
    out = _cli(world.store, monkeypatch, "report", "c-plain", "--detector", "otherdet")
    assert out.exit_code == 1 and "has no audit rate" in out.output
    out = _cli(world.store, monkeypatch, "campaign", "create", "--protocol", "smoke",
               "--policy", POLICIES[0], "--name", "c-bad", "--audit-rate", "1.5")
    assert out.exit_code == 1 and "--audit-rate 1.5: must be in (0, 1]" in out.output
    out = _cli(world.store, monkeypatch, "campaign", "create", "--protocol", "smoke",
               "--policy", POLICIES[0], "--name", "c-new", "--audit-rate", "0.25")
    assert out.exit_code == 0, out.output
    assert "audit: 0 of 0 sampled episodes labelled; rate 25%" in out.output
    with world.store.read() as s:
        assert s.scalar(select(Campaign.audit_rate).where(Campaign.name == "c-new")) == 0.25


def test_results_and_label_pages(world: World, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlit as st

    from tests.integration.test_dashboard_pages import all_text, run_app

    if not world.store.is_sqlite:
        pytest.skip("the pages are the same on both backends; AppTest runs once")
    _human_labels(world.store, sorted(world.drawn))
    monkeypatch.setenv("EVALFLEET_HOME", str(tmp_path / "dash-home"))
    monkeypatch.setenv("EVALFLEET_DATABASE_URL",
                       world.store.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("EVALFLEET_STAFF", "ann")
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        at = run_app("results", user="ann")
        at.multiselect(key="res_campaigns").set_value([world.audited]).run()
        assert "res_detector" not in {s.key for s in at.selectbox}  # no auto labels yet
        _auto_labels(world.store, world.episodes[world.audited])
        st.cache_data.clear()
        for user in ("ann", "eve"):
            at = run_app("results", user=user)
            at.multiselect(key="res_campaigns").set_value([world.audited]).run()
            assert not at.exception, [e.value for e in at.exception]
            assert at.selectbox(key="res_detector").value == "simdet"
            text_ = all_text(at)
            assert "prediction-powered" in text_ and "auto-only (naive)" in text_
            assert "audit of " in text_
            if user == "eve":  # an evaluator: blind
                assert not any(n in text_ for n in (*POLICIES, "c-audit"))
        at = run_app("label", user="zed")
        assert not at.exception, [e.value for e in at.exception]
        captions = [c.value for c in at.caption]
        labelled = len(world.drawn) - len(sorted(world.drawn)[6::7])
        assert (f"Campaign #{world.audited} · audit: {labelled} of {len(world.drawn)} sampled "
                "episodes labelled; rate 30%") in captions
        shown = next(c for c in captions if c.startswith("episode **"))
        assert int(shown.split("**")[1]) in world.drawn  # the oldest: the audited campaign's
        assert "**audit sample**" in shown
        queue = at.dataframe[0].value
        audit_rows = queue[queue["audit sample"]]
        assert set(audit_rows["episode"]) <= world.drawn
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
