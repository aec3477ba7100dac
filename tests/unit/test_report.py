"""The RT-2-style report: rows in the paper's order, pooled aggregates, comparisons, renderers."""

from __future__ import annotations

import csv
import io
import json

import pytest
from rich.console import Console
from rich.table import Table

from protocols.report import (
    CSV_COLUMNS,
    OutcomeRow,
    PolicyColumn,
    build_report,
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


def rows_for(code: str, name: str, category: str, difficulty: str | None,
             successes: int, trials: int) -> list[OutcomeRow]:
    return [OutcomeRow(code, name, category, difficulty, i < successes) for i in range(trials)]


@pytest.fixture()
def outcomes() -> list[OutcomeRow]:
    data = []
    for code, name, seen_k, easy_k, hard_k, symbol_k in [
        ("P-AAAA", "rt2", 9, 7, 4, 5),
        ("P-BBBB", "rt1", 8, 3, 1, 0),
    ]:
        data += rows_for(code, name, "seen", None, seen_k, 10)
        data += rows_for(code, name, "unseen_objects", "easy", easy_k, 8)
        data += rows_for(code, name, "unseen_backgrounds", "hard", hard_k, 6)
        data += rows_for(code, name, "symbol_understanding", None, symbol_k, 5)
    return data


def test_rows_are_in_rt2_order(outcomes) -> None:
    report = build_report(outcomes)
    assert [row.key for row in report.rows] == ROW_KEYS
    assert [p.code for p in report.policies] == ["P-AAAA", "P-BBBB"]
    assert [r.key for r in report.rows if r.aggregate] == ["unseen", "emergent", "overall"]


def test_cells_count_successes_per_category_and_difficulty(outcomes) -> None:
    report = build_report(outcomes)
    seen = report.row("seen").cells
    assert (seen[0].k, seen[0].n, seen[1].k, seen[1].n) == (9, 10, 8, 10)
    easy = report.row("unseen_objects/easy").cells[0]
    assert (easy.k, easy.n) == (7, 8)
    assert report.row("unseen_objects/hard").cells[0].n == 0
    assert report.row("unseen_environments/easy").cells[0].rate is None


def test_aggregates_pool_their_categories(outcomes) -> None:
    report = build_report(outcomes)
    unseen = report.row("unseen").cells[0]
    assert (unseen.k, unseen.n) == (7 + 4, 8 + 6)
    emergent = report.row("emergent").cells[1]
    assert (emergent.k, emergent.n) == (0, 5)
    overall = report.row("overall").cells[0]
    assert (overall.k, overall.n) == (9 + 7 + 4 + 5, 10 + 8 + 6 + 5)


def test_comparison_column_tests_the_first_two_policies(outcomes) -> None:
    report = build_report(outcomes, test="barnard")
    row = report.row("unseen")
    expected = compare_rates(11, 14, 4, 14, test="barnard")
    assert row.comparison.test == "barnard"
    assert row.comparison.p_value == pytest.approx(expected.p_value)
    assert report.row("unseen_environments/hard").comparison.p_value is None


def test_single_policy_has_no_comparison() -> None:
    report = build_report(rows_for("P-CCCC", "solo", "seen", None, 2, 3))
    assert all(row.comparison is None for row in report.rows)
    assert "vs" not in render_markdown(report)


def test_policy_columns_can_be_given_explicitly(outcomes) -> None:
    columns = [PolicyColumn("P-BBBB", "rt1"), PolicyColumn("P-AAAA", "rt2"),
               PolicyColumn("P-ZZZZ", "no_runs_yet")]
    report = build_report(outcomes, policies=columns)
    assert report.policies == tuple(columns)
    assert report.row("seen").cells[0].k == 8 and report.row("seen").cells[2].n == 0


def test_bad_outcomes_are_refused(outcomes) -> None:
    with pytest.raises(ValueError, match="unknown category 'unseen_things'"):
        build_report([OutcomeRow("P-A", "a", "unseen_things", "easy", True)])
    with pytest.raises(ValueError, match="not among the report's policies"):
        build_report(outcomes, policies=[PolicyColumn("P-AAAA", "rt2")])
    with pytest.raises(ValueError, match="unknown test"):
        build_report(outcomes, test="t-test")  # type: ignore[arg-type]


def test_empty_report_still_has_every_row() -> None:
    report = build_report([])
    assert [row.key for row in report.rows] == ROW_KEYS and report.policies == ()
    assert json.loads(json.dumps(render_json(report)))["rows"][0]["cells"] == {}


def test_render_table(outcomes) -> None:
    table = render_table(build_report(outcomes, title="campaign 1"))
    assert isinstance(table, Table)
    assert [c.header for c in table.columns] == [
        "category", "rt2 (P-AAAA)", "rt1 (P-BBBB)", "P-AAAA vs P-BBBB (fisher)",
    ]
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(table)
    text = console.export_text()
    assert "90% [60-98] n=10" in text and "unseen (all)" in text and "– n=0" in text


def test_render_markdown(outcomes) -> None:
    text = render_markdown(build_report(outcomes))
    lines = text.splitlines()
    assert lines[0] == "| category | rt2 (P-AAAA) | rt1 (P-BBBB) | P-AAAA vs P-BBBB (fisher) |"
    assert lines[1] == "|---|---:|---:|---:|"
    assert lines[2].startswith("| seen | 90% [60-98] n=10 | 80% [49-94] n=10 | p=")
    assert "| **overall** |" in text and "Fisher's exact test" in text


def test_render_csv(outcomes) -> None:
    report = build_report(outcomes)
    records = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert tuple(records[0]) == CSV_COLUMNS
    assert len(records) == len(ROW_KEYS) * 2
    first = records[0]
    assert (first["row"], first["policy_code"], first["successes"], first["trials"]) == (
        "seen", "P-AAAA", "9", "10"
    )
    assert float(first["rate"]) == pytest.approx(0.9)
    assert first["cell"] == format_cell(report.row("seen").cells[0])
    assert first["test"] == "fisher" and float(first["p_value"]) > 0.5
    empty = next(r for r in records if r["row"] == "unseen_environments/easy")
    assert empty["rate"] == "" and empty["p_value"] == ""


def test_render_json_is_serializable(outcomes) -> None:
    data = json.loads(json.dumps(render_json(build_report(outcomes)), allow_nan=False))
    assert data["test"] == "fisher" and data["test_name"].startswith("Fisher")
    assert [p["code"] for p in data["policies"]] == ["P-AAAA", "P-BBBB"]
    seen = data["rows"][0]
    assert seen["key"] == "seen" and seen["cells"]["P-AAAA"]["k"] == 9
    assert seen["comparison"]["a"] == "P-AAAA" and 0 <= seen["comparison"]["p_value"] <= 1
    assert data["rows"][5]["cells"]["P-AAAA"]["rate"] is None
