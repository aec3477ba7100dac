"""A report over several campaigns with overlapping and different policies (and colliding or
differing blind codes) attributes every counted episode to the policy that ran it: checked
against direct SQL counts, on both backends."""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from orchestrator.reporting import ReportFilters, build_report_for_ids
from orchestrator.store.db import Store
from orchestrator.store.models import Episode, Label, Trial
from protocols.report import render_json
from protocols.stats import format_cell
from tests.support import make_campaign

CAMPAIGNS = {  # name -> policies, in position order (overlapping, different, reordered)
    "c-one": ("alpaca-vla", "bison-rt1"),
    "c-two": ("gecko-heur", "alpaca-vla"),
    "c-three": ("bison-rt1", "gecko-heur", "alpaca-vla"),
}
POLICIES = ("alpaca-vla", "bison-rt1", "gecko-heur")
OUTCOME_VOTES = {  # outcome -> labels to add (source, evaluator, success)
    "success": [("sim", "sim", True)],
    "failure": [("human", "ann", False)],
    "disputed": [("human", "ann", True), ("human", "bob", False)],
    "unlabeled": [],
}


def add_episodes(store: Store, campaign_id: int, rng: random.Random,
                 skip: float = 0.1) -> None:
    """A counted, labelled episode for most trials (some skipped: lost trials), with outcomes
    that depend on the policy so a mix-up shows; one aborted, uncounted attempt too."""
    bias = {"alpaca-vla": 0.8, "bison-rt1": 0.5, "gecko-heur": 0.2}
    with store.write() as s:
        rows = s.execute(
            text("SELECT t.id, p.name FROM trials t JOIN campaign_policies cp "
                 "ON cp.id = t.campaign_policy_id JOIN policies p ON p.id = cp.policy_id "
                 "WHERE t.campaign_id = :c ORDER BY t.id"), {"c": campaign_id}).all()
        for trial_id, policy in rows:
            if rng.random() < skip:
                continue
            if rng.random() < 0.05:
                s.add(Episode(trial_id=trial_id, status="aborted", counted=False, attempt=1))
            r = rng.random()
            outcome = ("disputed" if r < 0.05 else "unlabeled" if r < 0.1
                       else "success" if rng.random() < bias[policy] else "failure")
            episode = Episode(trial_id=trial_id, status="recorded", counted=True, attempt=2)
            s.add(episode)
            s.flush()
            for source, evaluator, success in OUTCOME_VOTES[outcome]:
                s.add(Label(episode_id=episode.id, source=source, evaluator=evaluator,
                            success=success))
            s.get(Trial, trial_id).status = "done"


def sql_counts(store: Store, campaign_ids: list[int]) -> dict[tuple[int, str, str], int]:
    """(policy id, category, outcome) -> counted episodes, straight from the tables."""
    ids = ",".join(str(c) for c in campaign_ids)
    with store.read() as s:
        rows = s.execute(text(
            "SELECT cp.policy_id, tk.category, e.id FROM episodes e "
            "JOIN trials t ON t.id = e.trial_id "
            "JOIN campaign_policies cp ON cp.id = t.campaign_policy_id "
            f"JOIN tasks tk ON tk.id = t.task_id WHERE e.counted AND t.campaign_id IN ({ids})"
        )).all()
        labels: dict[int, list[tuple[str, bool]]] = {}
        for episode_id, source, success in s.execute(
                text("SELECT episode_id, source, success FROM labels")):
            labels.setdefault(episode_id, []).append((source, bool(success)))
    out: dict[tuple[int, str, str], int] = {}
    for policy_id, category, episode_id in rows:
        votes = labels.get(episode_id, [])
        human = [v for src, v in votes if src == "human"]
        decide = human or [v for src, v in votes if src == "sim"]
        yes, no = sum(decide), len(decide) - sum(decide)
        outcome = ("unlabeled" if not decide else "success" if yes > no
                   else "failure" if no > yes else "disputed")
        key = (int(policy_id), category, outcome)
        out[key] = out.get(key, 0) + 1
    return out


@pytest.fixture
def three(store: Store) -> tuple[Store, list[int]]:
    rng = random.Random(9)
    ids = [make_campaign(store, name=name, policies=pols, trials=4, seed=7)
           for name, pols in CAMPAIGNS.items()]
    for cid in ids:
        add_episodes(store, cid, rng)
    return store, ids


def test_three_campaigns_attribute_every_episode_to_its_policy(three) -> None:
    store, ids = three
    want = sql_counts(store, ids)
    with store.read() as s:
        policy_ids = {name: pid for name, pid in s.execute(
            text("SELECT name, id FROM policies"))}
    for order in (ids, ids[::-1], [ids[1], ids[2], ids[0]]):
        report = build_report_for_ids(store, order)
        assert len(report.policies) == 3 and len({c.key for c in report.policies}) == 3
        for row in report.rows:
            if row.aggregate or row.difficulty is not None:
                continue
            (category,) = row.categories
            for column, cell in zip(report.policies, row.cells, strict=True):
                pid = column.policy_id
                assert pid is not None
                got = {"success": cell.k, "failure": cell.n - cell.k,
                       "disputed": cell.disputed, "unlabeled": cell.unlabeled}
                assert got == {o: want.get((pid, category, o), 0) for o in got}, (
                    column.name, category)
        overall = report.row("overall")
        for column, cell in zip(report.policies, overall.cells, strict=True):
            total = sum(n for (pid, _, _), n in want.items() if pid == column.policy_id)
            assert cell.n + cell.disputed + cell.unlabeled == total
        assert {c.name: c.policy_id for c in report.policies} == policy_ids
        # every pair compared, and Cochran's Q on the blocks of the campaign that runs all 3
        assert len(overall.comparisons) == 3 and overall.omnibus is not None
        assert overall.omnibus.q.blocks > 0


def test_planned_vs_counted_and_broken_pairing(three) -> None:
    store, ids = three
    report = build_report_for_ids(store, ids)
    with store.read() as s:
        for account in report.campaigns:
            for p in account.policies:
                column = report.policies[p.column]
                planned, counted = s.execute(text(
                    "SELECT COUNT(DISTINCT t.id), COUNT(e.id) FROM trials t "
                    "JOIN campaign_policies cp ON cp.id = t.campaign_policy_id "
                    "LEFT JOIN episodes e ON e.trial_id = t.id AND e.counted "
                    "WHERE t.campaign_id = :c AND cp.policy_id = :p"),
                    {"c": account.campaign_id, "p": column.policy_id}).one()
                assert (p.planned, p.counted) == (planned, counted)
                assert p.resolved + p.disputed + p.unlabeled == p.counted
            assert 0 < account.complete_blocks < account.planned_blocks  # some trials lost
    text_notes = render_json(report)["notes"]
    assert any("pairing broken" in n for n in text_notes)
    assert any("counted fewer episodes than planned" in n for n in text_notes)


def test_blind_report_shows_codes_per_campaign_never_names(three) -> None:
    store, ids = three
    report = build_report_for_ids(store, ids, blind=True)
    dumped = json.dumps(render_json(report))
    for name in (*POLICIES, *CAMPAIGNS):
        assert name not in dumped
    with store.read() as s:
        codes = {code for (code,) in s.execute(
            text("SELECT blind_code FROM campaign_policies"))}
    shown = {code for c in report.policies for _, code in c.codes}
    assert shown == codes


def test_filters_and_evaluator_keep_the_attribution(three) -> None:
    store, ids = three
    human = build_report_for_ids(store, ids, filters=ReportFilters(source="human"))
    ann = build_report_for_ids(store, ids, filters=ReportFilters(evaluator="ann"))
    with store.read() as s:
        ann_labels = s.execute(text(
            "SELECT COUNT(*) FROM labels l JOIN episodes e ON e.id = l.episode_id "
            "WHERE l.evaluator = 'ann' AND e.counted")).scalar_one()
        human_failures = s.execute(text(
            "SELECT COUNT(*) FROM episodes e WHERE e.counted AND EXISTS (SELECT 1 FROM labels l "
            "WHERE l.episode_id = e.id AND l.evaluator = 'ann' AND NOT l.success) "
            "AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.episode_id = e.id "
            "AND l.evaluator = 'bob')")).scalar_one()
    assert sum(c.n for c in ann.row("overall").cells) == ann_labels
    overall = human.row("overall").cells
    assert sum(c.n for c in overall) == human_failures and sum(c.k for c in overall) == 0


def test_cli_report_of_several_campaigns(three, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli import app as cli

    store, _ = three
    monkeypatch.setenv("EVALFLEET_DATABASE_URL",
                       store.engine.url.render_as_string(hide_password=False))
    from orchestrator.config import get_settings
    get_settings.cache_clear()
    runner = CliRunner()
    out = runner.invoke(cli, ["report", *CAMPAIGNS, "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert [p["name"] for p in data["policies"]] == ["alpaca-vla", "bison-rt1", "gecko-heur"]
    assert data["test"] == "mcnemar" and len(data["campaigns"]) == 3
    for fmt in ("table", "markdown", "csv"):
        out = runner.invoke(cli, ["report", "c-three", "c-one", "--format", fmt, "--blind"])
        assert out.exit_code == 0 and "alpaca-vla" not in out.output, out.output
    out = runner.invoke(cli, ["report", "c-one", "--test", "t-test"])
    assert out.exit_code == 1 and "mcnemar" in out.output


def test_results_page_shows_all_three_campaigns(three, tmp_path, monkeypatch) -> None:
    import streamlit as st

    from tests.integration.test_dashboard_pages import all_text, run_app

    store, ids = three
    if not store.is_sqlite:
        pytest.skip("the page is the same on both backends; AppTest runs once")
    monkeypatch.setenv("EVALFLEET_HOME", str(tmp_path / "dash-home"))
    monkeypatch.setenv("EVALFLEET_DATABASE_URL",
                       store.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("EVALFLEET_STAFF", "ann")
    from orchestrator.config import get_settings
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        want = build_report_for_ids(store, ids)
        for user in ("ann", "eve"):
            at = run_app("results", user=user)
            at.multiselect(key="res_campaigns").set_value(ids).run()
            assert not at.exception, [e.value for e in at.exception]
            shown = at.dataframe[0].value
            text = all_text(at)
            assert len(shown.columns) == 1 + 3 + 3 + 1  # category, policies, pairs, Cochran's Q
            assert list(shown.iloc[-1, 1:4]) == [format_cell(c) for c in want.row("overall").cells]
            assert "pairing broken" in text
            if user == "ann":
                assert all(name in text for name in POLICIES)
            else:
                assert not any(name in text for name in (*POLICIES, *CAMPAIGNS)), user
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


def _blocks_from_view(store: Store, ids: list[int], where: str = "",
                      params: dict | None = None) -> list[tuple]:
    """block_pattern_counts recomputed in Python from the analyst view v_episode_outcomes."""
    sql = ("SELECT o.campaign_id, o.task_key, o.category, o.difficulty, t.trial_index, "
           "cp.position, o.outcome FROM v_episode_outcomes o JOIN trials t ON t.id = o.trial_id "
           "JOIN campaign_policies cp ON cp.id = t.campaign_policy_id WHERE o.campaign_id IN ("
           + ",".join(map(str, ids)) + ")" + where)
    blocks: dict[tuple, list[int]] = {}
    with store.read() as s:
        for c, key, cat, diff, index, pos, outcome in s.execute(text(sql), params or {}):
            b = blocks.setdefault((c, key, cat, diff, index), [0, 0, 0, 0])
            b[0] += 1 << pos
            for i, name in ((1, "success"), (2, "failure"), (3, "disputed")):
                if outcome == name:
                    b[i] += 1 << pos
    patterns: dict[tuple, int] = {}
    for (c, key, cat, diff, _), b in blocks.items():
        k = (c, key, cat, diff, *b)
        patterns[k] = patterns.get(k, 0) + 1
    return sorted((*k, n) for k, n in patterns.items())


def test_block_patterns_equal_the_analyst_view(three) -> None:
    """The report's SQL (written against the tables for speed) decides every episode's
    outcome exactly as v_episode_outcomes does, with and without filters."""
    from orchestrator.store.queries import block_pattern_counts

    store, ids = three

    def blocks(**kw) -> list[tuple]:  # type: ignore[no-untyped-def]
        with store.read() as s:
            return sorted(tuple(b.__dict__.values()) for b in block_pattern_counts(s, ids, **kw))

    assert blocks() == _blocks_from_view(store, ids)
    assert blocks(source="human") == _blocks_from_view(
        store, ids, " AND o.outcome_source = :src", {"src": "human"})
    assert blocks(source="sim") == _blocks_from_view(
        store, ids, " AND o.outcome_source = :src", {"src": "sim"})
    assert blocks() != blocks(source="sim")
