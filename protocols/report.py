"""The RT-2-style results table, built once and rendered for the CLI and the dashboard.

Rows (RT-2 order): seen; unseen objects / backgrounds / environments, each easy and hard;
unseen (all); symbol understanding, reasoning, human recognition; emergent (all); overall.
Columns: policies; cells are success rates with Wilson 95% intervals; a last column
compares the first two policies with an exact test (named in the output).

Aggregate rows ("unseen (all)", "emergent (all)", "overall") pool the trials of their
categories (successes and trials summed), so each has a proper interval; they are not
averages of category rates. Only resolved outcomes go in: disputed and unlabeled episodes
are listed elsewhere, never counted here. p-values are per row and not corrected for
multiple comparisons.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.table import Table

from protocols.schema import CATEGORIES_BY_SPLIT, Category, Difficulty, Split
from protocols.stats import (
    TEST_NAMES,
    Comparison,
    SuccessRate,
    TestName,
    compare_rates,
    format_cell,
    format_p_value,
    success_rate,
)

__all__ = [
    "OutcomeRow",
    "PolicyColumn",
    "Report",
    "ReportRow",
    "build_report",
    "render_csv",
    "render_json",
    "render_markdown",
    "render_table",
]


@dataclass(frozen=True)
class OutcomeRow:
    """One counted episode with its resolved outcome."""

    policy_code: str
    policy_name: str
    category: str
    difficulty: str | None
    success: bool


@dataclass(frozen=True)
class PolicyColumn:
    code: str
    name: str

    @property
    def header(self) -> str:
        return f"{self.name} ({self.code})"


@dataclass(frozen=True)
class ReportRow:
    key: str  # stable id: "seen", "unseen_objects/easy", "unseen", "overall", ...
    label: str
    categories: tuple[str, ...]  # what the row pools
    difficulty: str | None  # set only on easy/hard rows
    aggregate: bool
    cells: tuple[SuccessRate, ...]  # one per policy, in Report.policies order
    comparison: Comparison | None  # policies[0] vs policies[1]; None with < 2 policies


@dataclass(frozen=True)
class Report:
    policies: tuple[PolicyColumn, ...]
    rows: tuple[ReportRow, ...]
    test: str
    title: str = ""

    def row(self, key: str) -> ReportRow:
        for row in self.rows:
            if row.key == key:
                return row
        raise KeyError(f"report has no row {key!r} (rows: {', '.join(r.key for r in self.rows)})")

    @property
    def comparison_header(self) -> str:
        if len(self.policies) < 2:
            return "comparison"
        return f"{self.policies[0].code} vs {self.policies[1].code} ({self.test})"


@dataclass(frozen=True)
class _RowSpec:
    key: str
    label: str
    categories: tuple[str, ...]
    difficulty: str | None = None
    aggregate: bool = False


def _row_specs() -> tuple[_RowSpec, ...]:
    unseen = tuple(c.value for c in CATEGORIES_BY_SPLIT[Split.UNSEEN])
    emergent = tuple(c.value for c in CATEGORIES_BY_SPLIT[Split.EMERGENT])
    specs = [_RowSpec("seen", "seen", (Category.SEEN.value,))]
    for category in unseen:
        for difficulty in Difficulty:
            specs.append(_RowSpec(
                f"{category}/{difficulty.value}", f"{category} / {difficulty.value}",
                (category,), difficulty.value,
            ))
    specs.append(_RowSpec("unseen", "unseen (all)", unseen, aggregate=True))
    specs.extend(_RowSpec(category, category, (category,)) for category in emergent)
    specs.append(_RowSpec("emergent", "emergent (all)", emergent, aggregate=True))
    specs.append(_RowSpec("overall", "overall", tuple(c.value for c in Category), aggregate=True))
    return tuple(specs)


ROW_SPECS = _row_specs()
_KNOWN_CATEGORIES = frozenset(c.value for c in Category)


def build_report(
    outcomes: Iterable[OutcomeRow],
    test: TestName = "fisher",
    policies: Sequence[PolicyColumn] | None = None,
    title: str = "",
) -> Report:
    """Tabulate resolved outcomes. Column order: `policies` if given, else first appearance."""
    if test not in TEST_NAMES:
        raise ValueError(f"unknown test {test!r} (expected one of: {', '.join(TEST_NAMES)})")
    rows = list(outcomes)
    columns = list(policies) if policies is not None else _policies_in_order(rows)
    index = {column.code: i for i, column in enumerate(columns)}
    if len(index) != len(columns):
        raise ValueError("policy codes in a report must be unique")
    counts: dict[tuple[str, str | None, int], list[int]] = {}
    for row in rows:
        if row.category not in _KNOWN_CATEGORIES:
            raise ValueError(
                f"outcome of policy {row.policy_code!r} has unknown category {row.category!r} "
                f"(expected one of: {', '.join(c.value for c in Category)})"
            )
        if row.policy_code not in index:
            raise ValueError(
                f"outcome of policy {row.policy_code!r} is not among the report's policies "
                f"({', '.join(index) or 'none'})"
            )
        tally = counts.setdefault((row.category, row.difficulty, index[row.policy_code]), [0, 0])
        tally[0] += int(bool(row.success))
        tally[1] += 1

    def cell(spec: _RowSpec, column: int) -> SuccessRate:
        k = n = 0
        for (category, difficulty, col), (successes, trials) in counts.items():
            if col != column or category not in spec.categories:
                continue
            if spec.difficulty is not None and difficulty != spec.difficulty:
                continue
            k, n = k + successes, n + trials
        return success_rate(k, n)

    report_rows = []
    for spec in ROW_SPECS:
        cells = tuple(cell(spec, i) for i in range(len(columns)))
        comparison = (
            compare_rates(cells[0].k, cells[0].n, cells[1].k, cells[1].n, test)
            if len(cells) >= 2 else None
        )
        report_rows.append(ReportRow(
            spec.key, spec.label, spec.categories, spec.difficulty, spec.aggregate,
            cells, comparison,
        ))
    return Report(tuple(columns), tuple(report_rows), test, title)


def _policies_in_order(rows: Sequence[OutcomeRow]) -> list[PolicyColumn]:
    seen: dict[str, PolicyColumn] = {}
    for row in rows:
        seen.setdefault(row.policy_code, PolicyColumn(row.policy_code, row.policy_name))
    return list(seen.values())


# --- renderers ----------------------------------------------------------------------------


def _comparison_text(comparison: Comparison | None) -> str:
    if comparison is None or comparison.p_value is None:
        return "n/a"
    return f"p={format_p_value(comparison.p_value)}"


def render_table(report: Report) -> Table:
    table = Table(title=report.title or None, show_lines=False)
    table.add_column("category")
    for column in report.policies:
        table.add_column(column.header, justify="right")
    if len(report.policies) >= 2:
        table.add_column(report.comparison_header, justify="right")
    for row in report.rows:
        values = [row.label, *(format_cell(c) for c in row.cells)]
        if len(report.policies) >= 2:
            values.append(_comparison_text(row.comparison))
        table.add_row(*values, style="bold" if row.aggregate else None,
                      end_section=row.aggregate or row.key == "seen")
    if len(report.policies) >= 2:
        table.caption = f"{TEST_NAMES[report.test]}; Wilson 95% intervals; pooled aggregates"
    return table


def render_markdown(report: Report) -> str:
    headers = ["category", *(c.header for c in report.policies)]
    if len(report.policies) >= 2:
        headers.append(report.comparison_header)
    lines = []
    if report.title:
        lines += [f"### {report.title}", ""]
    lines += ["| " + " | ".join(headers) + " |",
              "|" + "|".join(["---", *(["---:"] * (len(headers) - 1))]) + "|"]
    for row in report.rows:
        label = f"**{row.label}**" if row.aggregate else row.label
        values = [label, *(format_cell(c) for c in row.cells)]
        if len(report.policies) >= 2:
            values.append(_comparison_text(row.comparison))
        lines.append("| " + " | ".join(values) + " |")
    if len(report.policies) >= 2:
        note = (f"Comparison: {TEST_NAMES[report.test]}, uncorrected. "
                "Intervals: Wilson 95%. Aggregate rows pool their categories' trials.")
        lines += ["", note]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "row", "label", "difficulty", "aggregate", "policy_code", "policy_name",
    "successes", "trials", "rate", "ci_low", "ci_high", "cell", "test", "p_value",
)


def render_csv(report: Report) -> str:
    """Long format: one line per (row, policy); the row's p-value repeats on its lines."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        p_value = row.comparison.p_value if row.comparison else None
        for column, cell in zip(report.policies, row.cells, strict=True):
            writer.writerow([
                row.key, row.label, row.difficulty or "", int(row.aggregate),
                column.code, column.name, cell.k, cell.n,
                "" if cell.rate is None else f"{cell.rate:.6f}",
                f"{cell.low:.6f}", f"{cell.high:.6f}", format_cell(cell),
                report.test if row.comparison else "",
                "" if p_value is None else f"{p_value:.6g}",
            ])
    return buffer.getvalue()


def _rate_json(rate: SuccessRate) -> dict:
    return {"k": rate.k, "n": rate.n, "rate": rate.rate, "low": rate.low, "high": rate.high,
            "text": format_cell(rate)}


def render_json(report: Report) -> dict:
    """A json.dumps-able dict (no NaN: missing values are None)."""
    rows = []
    for row in report.rows:
        comparison = None
        if row.comparison is not None:
            comparison = {
                "test": row.comparison.test,
                "test_name": row.comparison.test_name,
                "a": report.policies[0].code,
                "b": report.policies[1].code,
                "p_value": row.comparison.p_value,
                "difference": row.comparison.difference,
            }
        rows.append({
            "key": row.key,
            "label": row.label,
            "categories": list(row.categories),
            "difficulty": row.difficulty,
            "aggregate": row.aggregate,
            "cells": {c.code: _rate_json(cell)
                      for c, cell in zip(report.policies, row.cells, strict=True)},
            "comparison": comparison,
        })
    return {
        "title": report.title,
        "test": report.test,
        "test_name": TEST_NAMES[report.test],
        "confidence": 0.95,
        "policies": [{"code": c.code, "name": c.name} for c in report.policies],
        "rows": rows,
    }
