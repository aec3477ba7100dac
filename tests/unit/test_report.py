"""The RT-2-style report: rows in the paper's order, policies keyed by id (not by blind code)
across campaigns, pooled aggregates with clustered intervals, every pair compared on the
blocks, Holm, Cochran's Q, planned vs counted, and the renderers."""

from __future__ import annotations

import csv
import io
import json

import pytest
from rich.console import Console
from rich.table import Table

from protocols.clustered import clustered_rate
from protocols.paired import mcnemar_exact
from protocols.report import (
    CSV_COLUMNS,
    BlockCount,
    CampaignDesign,
    CampaignPolicy,
    build_report,
    render_accounts_table,
    render_csv,
    render_json,
    render_markdown,
    render_table,
)
from protocols.stats import compare_rates, format_cell

ROW_KEYS = [
    "seen",
    "unseen_objects/easy", "unseen_objects/hard",
    "unseen_backgrounds/easy", "unseen_backgrounds/hard",
    "unseen_environments/easy", "unseen_environments/hard",
    "unseen",
    "symbol_understanding", "reasoning", "human_recognition",
    "emergent",
    "overall",
]
RT2, RT1, RT0 = 1, 2, 3


def design(cid: int, name: str, *policies: tuple[int, str, str], blocks: int = 30,
           planned: int = 30) -> CampaignDesign:
    return CampaignDesign(cid, name, blocks, tuple(
        CampaignPolicy(pid, pname, "1", code, i, planned)
        for i, (pid, pname, code) in enumerate(policies)))


def blocks(cid: int, task: str, category: str, difficulty: str | None,
           *patterns: tuple[int, dict[int, str]]) -> list[BlockCount]:
    """(how many blocks, {policy id: outcome})."""
    return [BlockCount(cid, task, category, difficulty, tuple(sorted(o.items())), n)
            for n, o in patterns]


S, F = "success", "failure"


@pytest.fixture()
def one_campaign() -> tuple[list[BlockCount], list[CampaignDesign]]:
    d = design(1, "c1", (RT2, "rt2", "P-AAAA"), (RT1, "rt1", "P-BBBB"), blocks=31)
    data = []
    # seen: two tasks, 5 blocks each. rt2 9/10, rt1 8/10; discordant: rt2 only 2, rt1 only 1
    data += blocks(1, "s1", "seen", None, (4, {RT2: S, RT1: S}), (1, {RT2: S, RT1: F}))
    data += blocks(1, "s2", "seen", None, (3, {RT2: S, RT1: S}), (1, {RT2: S, RT1: F}),
                   (1, {RT2: F, RT1: S}))
    # unseen objects easy: 8 blocks, rt2 7/8, rt1 3/8
    data += blocks(1, "uo", "unseen_objects", "easy", (3, {RT2: S, RT1: S}),
                   (4, {RT2: S, RT1: F}), (1, {RT2: F, RT1: F}))
    # unseen backgrounds hard: 6 blocks, rt2 4/6, rt1 1/6
    data += blocks(1, "ub", "unseen_backgrounds", "hard", (1, {RT2: S, RT1: S}),
                   (3, {RT2: S, RT1: F}), (2, {RT2: F, RT1: F}))
    # symbol: 5 blocks, rt2 5/5, rt1 0/5; plus a disputed rt1 and an unlabeled rt2 episode
    data += blocks(1, "sym", "symbol_understanding", None, (5, {RT2: S, RT1: F}),
                   (1, {RT2: "unlabeled", RT1: "disputed"}))
    return data, [d]


def test_rows_are_in_rt2_order(one_campaign) -> None:
    report = build_report(*one_campaign)
    assert [row.key for row in report.rows] == ROW_KEYS
    assert [p.header for p in report.policies] == ["rt2", "rt1"]
    assert [p.policy_id for p in report.policies] == [RT2, RT1]
    assert [r.key for r in report.rows if r.aggregate] == ["unseen", "emergent", "overall"]


def test_cells_count_outcomes_with_disputed_and_unlabeled_beside_n(one_campaign) -> None:
    report = build_report(*one_campaign)
    seen = report.row("seen").cells
    assert (seen[0].k, seen[0].n, seen[1].k, seen[1].n) == (9, 10, 8, 10)
    easy = report.row("unseen_objects/easy").cells[0]
    assert (easy.k, easy.n) == (7, 8)
    assert report.row("unseen_objects/hard").cells[0].n == 0
    symbol = report.row("symbol_understanding").cells
    assert (symbol[0].n, symbol[0].unlabeled, symbol[1].n, symbol[1].disputed) == (5, 1, 5, 1)
    assert format_cell(symbol[1]).endswith("n=5 (1 disputed, 0 unlabeled)")


def test_aggregates_pool_their_categories_with_task_clustered_intervals(one_campaign) -> None:
    report = build_report(*one_campaign)
    unseen = report.row("unseen").cells[0]
    assert (unseen.k, unseen.n) == (7 + 4, 8 + 6)
    overall = report.row("overall").cells
    assert (overall[0].k, overall[0].n, overall[0].unlabeled) == (9 + 7 + 4 + 5, 29, 1)
    assert (overall[1].k, overall[1].n, overall[1].disputed) == (8 + 3 + 1 + 0, 29, 1)
    want = clustered_rate([(4, 5), (4, 5), (3, 8), (1, 6), (0, 5)])
    assert (overall[1].low, overall[1].high) == pytest.approx((want.low, want.high))
    assert overall[1].method == "clustered" and overall[1].clusters == 5
    assert overall[1].design_effect > 1  # rt1's tasks differ a lot
    assert report.row("unseen_objects/easy").cells[0].method == "wilson"  # a single task


def test_every_pair_is_compared_with_exact_mcnemar_on_matched_blocks(one_campaign) -> None:
    report = build_report(*one_campaign)
    seen = report.row("seen").comparisons
    assert len(seen) == 1 and (seen[0].a, seen[0].b) == (0, 1)
    assert seen[0].paired is not None
    assert (seen[0].paired.a_only, seen[0].paired.b_only, seen[0].paired.pairs) == (2, 1, 10)
    assert seen[0].p_value == pytest.approx(mcnemar_exact(2, 1))
    assert seen[0].difference == pytest.approx(0.1)
    symbol = report.row("symbol_understanding").comparisons[0]
    assert symbol.paired.pairs == 5  # the disputed/unlabeled block is no matched pair
    assert report.row("unseen_environments/hard").comparisons[0].p_value is None


def test_holm_adjusts_across_every_pairwise_test_shown(one_campaign) -> None:
    report = build_report(*one_campaign)
    tested = [c for r in report.rows for c in r.comparisons if c.p_value is not None]
    m = len(tested)
    smallest = min(tested, key=lambda c: c.p_value)
    assert smallest.p_holm == pytest.approx(min(1.0, m * smallest.p_value))
    assert all(c.p_holm >= c.p_value for c in tested)


def test_unpaired_tests_remain_available(one_campaign) -> None:
    report = build_report(*one_campaign, test="barnard")
    row = report.row("unseen")
    expected = compare_rates(11, 14, 4, 14, test="barnard")
    assert row.comparisons[0].test == "barnard" and row.comparisons[0].paired is None
    assert row.comparisons[0].p_value == pytest.approx(expected.p_value)


def test_three_campaigns_key_policies_by_id_whatever_their_codes_and_order() -> None:
    # the same code in two campaigns for different policies (the old seed-derived codes)
    designs = [
        design(1, "c1", (RT2, "rt2", "P-58G5"), (RT1, "rt1", "P-X1")),
        design(2, "c2", (RT0, "rt0", "P-58G5"), (RT2, "rt2", "P-Y2")),
        design(3, "c3", (RT1, "rt1", "P-Z3"), (RT0, "rt0", "P-Z4"), (RT2, "rt2", "P-Z5")),
    ]
    data = (blocks(1, "s1", "seen", None, (3, {RT2: S, RT1: F}))
            + blocks(2, "s1", "seen", None, (2, {RT0: F, RT2: S}), (1, {RT0: S, RT2: F}))
            + blocks(3, "s1", "seen", None, (4, {RT1: S, RT0: F, RT2: S})))
    report = build_report(data, designs)
    assert [p.name for p in report.policies] == ["rt2", "rt1", "rt0"]
    seen = report.row("seen").cells
    assert [(c.k, c.n) for c in seen] == [(3 + 2 + 4, 10), (0 + 4, 7), (1 + 0, 7)]
    assert report.policies[0].codes == (("c1", "P-58G5"), ("c2", "P-Y2"), ("c3", "P-Z5"))
    pairs = {(c.a, c.b): c.paired for c in report.row("seen").comparisons}
    assert pairs[(0, 1)].pairs == 7 and pairs[(0, 2)].pairs == 7 and pairs[(1, 2)].pairs == 4
    omnibus = report.row("seen").omnibus
    assert omnibus is not None and omnibus.q.blocks == 4  # only c3 runs all three
    blind = build_report(data, designs, blind=True)
    assert len({p.key for p in blind.policies}) == 3
    assert all(p.policy_id is None for p in blind.policies)
    dumped = json.dumps(render_json(blind))
    assert "rt2" not in dumped and "rt0" not in dumped and "P-58G5" in dumped
    reordered = build_report(data, designs[::-1])
    assert [p.name for p in reordered.policies] == ["rt1", "rt0", "rt2"]
    assert [(c.k, c.n) for c in reordered.row("seen").cells] == [(4, 7), (1, 7), (9, 10)]


def test_planned_vs_counted_and_broken_pairing(one_campaign) -> None:
    report = build_report(*one_campaign)
    (account,) = report.campaigns
    assert account.planned_blocks == 31 and account.complete_blocks == 29
    assert account.broken_blocks == 2 and account.incomplete
    rt2 = account.policies[0]
    assert (rt2.planned, rt2.counted, rt2.resolved, rt2.unlabeled) == (30, 30, 29, 1)
    text = render_markdown(report)
    assert "pairing broken in 2 of 31 blocks" in text and "#### Planned vs counted" in text


def test_bad_input_is_refused(one_campaign) -> None:
    data, designs = one_campaign
    with pytest.raises(ValueError, match="unknown category 'unseen_things'"):
        build_report(blocks(1, "x", "unseen_things", "easy", (1, {RT2: S})), designs)
    with pytest.raises(ValueError, match="does not run it"):
        build_report(blocks(1, "x", "seen", None, (1, {99: S})), designs)
    with pytest.raises(ValueError, match="not in the report"):
        build_report(blocks(7, "x", "seen", None, (1, {RT2: S})), designs)
    with pytest.raises(ValueError, match="unknown test"):
        build_report(data, designs, test="t-test")


def test_empty_report_still_has_every_row() -> None:
    report = build_report([], [])
    assert [row.key for row in report.rows] == ROW_KEYS and report.policies == ()
    assert json.loads(json.dumps(render_json(report)))["rows"][0]["cells"] == {}
    assert render_csv(report).splitlines()[0].split(",") == list(CSV_COLUMNS)


def test_render_table(one_campaign) -> None:
    table = render_table(build_report(*one_campaign, title="campaign 1"))
    assert isinstance(table, Table)
    assert [c.header for c in table.columns] == ["category", "rt2", "rt1", "rt2 vs rt1"]
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    console.print(render_accounts_table(build_report(*one_campaign)))
    text = console.export_text()
    assert "90% [" in text and "unseen (all)" in text and "– n=0" in text
    assert "Holm" in text and "rt2 (P-AAAA)" in text


def test_render_markdown(one_campaign) -> None:
    text = render_markdown(build_report(*one_campaign))
    lines = text.splitlines()
    assert lines[0] == "| category | rt2 | rt1 | rt2 vs rt1 |"
    assert lines[1] == "|---|---:|---:|---:|"
    assert lines[2].startswith("| seen | 90% [")
    assert "(0 disputed, 0 unlabeled) | p=" in lines[2]
    assert "| **overall** |" in text and "exact McNemar" in text


def test_render_csv(one_campaign) -> None:
    report = build_report(*one_campaign)
    records = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert tuple(records[0])[:len(CSV_COLUMNS)] == CSV_COLUMNS
    assert len(records) == len(ROW_KEYS) * 2
    first = records[0]
    assert (first["row"], first["policy"], first["successes"], first["trials"]) == (
        "seen", "rt2", "9", "10")
    assert float(first["rate"]) == pytest.approx(0.9)
    assert first["cell"] == format_cell(report.row("seen").cells[0])
    assert float(first["p rt2 vs rt1"]) == pytest.approx(mcnemar_exact(2, 1), rel=1e-5)
    empty = next(r for r in records if r["row"] == "unseen_environments/easy")
    assert empty["rate"] == "" and empty["p rt2 vs rt1"] == ""


def test_render_json_is_serializable(one_campaign) -> None:
    data = json.loads(json.dumps(render_json(build_report(*one_campaign)), allow_nan=False))
    assert data["test"] == "mcnemar" and data["test_name"].startswith("exact McNemar")
    assert [p["name"] for p in data["policies"]] == ["rt2", "rt1"]
    seen = data["rows"][0]
    assert seen["key"] == "seen" and seen["cells"]["rt2@1"]["k"] == 9
    cmp = seen["comparisons"][0]
    assert cmp["a"] == "rt2@1" and 0 <= cmp["p_value"] <= cmp["p_holm"] <= 1
    assert cmp["pairs"] == {"both": 7, "a_only": 2, "b_only": 1, "neither": 0}
    assert data["rows"][5]["cells"]["rt2@1"]["rate"] is None
    assert data["campaigns"][0]["broken_blocks"] == 2
