"""Renderers of the RT-2-style report (protocols.report_model builds it): a rich table for
the CLI, markdown, CSV (long: one line per row and policy) and JSON. The dashboard renders
the same Report object, so the numbers are the same everywhere.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.table import Table

from protocols.report_model import (
    OUTCOMES,
    ROW_SPECS,
    TEST_NAMES,
    BlockCount,
    CampaignAccount,
    CampaignDesign,
    CampaignPolicy,
    Omnibus,
    PairComparison,
    PolicyAccount,
    PolicyColumn,
    Report,
    ReportRow,
    build_report,
)
from protocols.stats import SuccessRate, format_cell, format_p_value

__all__ = [
    "CSV_COLUMNS",
    "OUTCOMES",
    "ROW_SPECS",
    "TEST_NAMES",
    "BlockCount",
    "CampaignAccount",
    "CampaignDesign",
    "CampaignPolicy",
    "Omnibus",
    "PairComparison",
    "PolicyAccount",
    "PolicyColumn",
    "Report",
    "ReportRow",
    "account_rows",
    "build_report",
    "long_records",
    "notes",
    "omnibus_text",
    "p_text",
    "pair_text",
    "render_accounts_table",
    "render_csv",
    "render_json",
    "render_markdown",
    "render_table",
]


def p_text(p: float | None) -> str:
    if p is None:
        return "n/a"
    text = format_p_value(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def pair_text(c: PairComparison) -> str:
    """Holm-adjusted p first (what to read), the raw p in brackets."""
    if c.p_value is None:
        return "n/a"
    return f"{p_text(c.p_holm)} (raw {format_p_value(c.p_value)})"


def omnibus_text(o: Omnibus | None) -> str:
    if o is None or o.q.statistic is None or o.q.p_value is None:
        return "n/a"
    return f"Q={o.q.statistic:.2f} {p_text(o.p_holm)} (raw {format_p_value(o.q.p_value)})"


def _pair_headers(report: Report) -> list[str]:
    if not report.rows:
        return []
    return [report.pair_label(c) for c in report.rows[0].comparisons]


def _has_omnibus(report: Report) -> bool:
    return len(report.policies) > 2


def _pairwise_tests(report: Report) -> int:
    return sum(1 for r in report.rows for c in r.comparisons if c.p_value is not None)


def notes(report: Report) -> list[str]:
    """What the numbers mean, then warnings: planned vs counted and broken pairing."""
    out = [(
        "Cells: success rate [95% interval] n = resolved episodes; disputed and unlabeled "
        "episodes are counted beside n and left out of it. Rows pooling several tasks get a "
        "task-clustered interval (Wilson on the design-effect n); one task: Wilson."
    )]
    if len(report.policies) >= 2:
        out.append(
            f"Pairs: {TEST_NAMES[report.test]}; p is Holm-adjusted across the "
            f"{_pairwise_tests(report)} pairwise tests in this report (raw p in brackets).")
    if _has_omnibus(report):
        out.append("Omnibus: Cochran's Q on blocks where every policy has a resolved outcome; "
                   "Holm-adjusted across rows.")
    for a in report.campaigns:
        short = [f"{report.policies[p.column].header} {p.counted}/{p.planned}"
                 for p in a.policies if p.counted < p.planned]
        if short:
            out.append(f"WARNING {a.name}: counted fewer episodes than planned: "
                       f"{', '.join(short)} (see `campaign show {a.name}`).")
        if a.broken_blocks > 0:
            out.append(f"WARNING {a.name}: pairing broken in {a.broken_blocks} of "
                       f"{a.planned_blocks} blocks (not every policy has a counted, resolved "
                       "episode); paired tests use only complete pairs.")
    return out


def account_rows(report: Report) -> list[dict[str, Any]]:
    """Planned vs counted per campaign and policy."""
    rows = []
    for a in report.campaigns:
        for p in a.policies:
            col = report.policies[p.column]
            rows.append({
                "campaign": a.name,
                "policy": p.code if report.blind else f"{col.header} ({p.code})",
                "code": p.code, "planned": p.planned, "counted": p.counted,
                "resolved": p.resolved, "disputed": p.disputed, "unlabeled": p.unlabeled,
                "blocks planned": a.planned_blocks, "blocks complete": a.complete_blocks,
                "pairing": "broken" if a.broken_blocks else "ok",
            })
    return rows


def render_table(report: Report) -> Table:
    table = Table(title=report.title or None, show_lines=False)
    table.add_column("category")
    for column in report.policies:
        table.add_column(column.header, justify="right")
    for header in _pair_headers(report):
        table.add_column(header, justify="right")
    if _has_omnibus(report):
        table.add_column("omnibus (Cochran's Q)", justify="right")
    for row in report.rows:
        values = [row.label, *(format_cell(c) for c in row.cells),
                  *(pair_text(c) for c in row.comparisons)]
        if _has_omnibus(report):
            values.append(omnibus_text(row.omnibus))
        table.add_row(*values, style="bold" if row.aggregate else None,
                      end_section=row.aggregate or row.key == "seen")
    table.caption = "\n".join(notes(report))
    return table


def render_accounts_table(report: Report) -> Table:
    table = Table(title="planned vs counted")
    rows = account_rows(report)
    headers = ["campaign", "policy", "planned", "counted", "resolved", "disputed",
               "unlabeled", "blocks planned", "blocks complete", "pairing"]
    for h in headers:
        table.add_column(h, justify="left" if h in ("campaign", "policy") else "right")
    for r in rows:
        table.add_row(*(str(r[h]) for h in headers),
                      style="red" if r["pairing"] == "broken" or r["counted"] < r["planned"]
                      else None)
    return table


def _md_table(headers: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |",
            "|" + "|".join(["---", *(["---:"] * (len(headers) - 1))]) + "|",
            *("| " + " | ".join(values) + " |" for values in lines)]


def render_markdown(report: Report) -> str:
    headers = ["category", *(c.header for c in report.policies), *_pair_headers(report)]
    if _has_omnibus(report):
        headers.append("omnibus (Cochran's Q)")
    lines = [f"### {report.title}", ""] if report.title else []
    body = []
    for row in report.rows:
        values = [f"**{row.label}**" if row.aggregate else row.label,
                  *(format_cell(c) for c in row.cells), *(pair_text(c) for c in row.comparisons)]
        if _has_omnibus(report):
            values.append(omnibus_text(row.omnibus))
        body.append(values)
    lines += _md_table(headers, body)
    lines += ["", *notes(report)]
    accounts = account_rows(report)
    if accounts:
        keys = ["campaign", "policy", "planned", "counted", "resolved", "disputed", "unlabeled",
                "blocks planned", "blocks complete", "pairing"]
        lines += ["", "#### Planned vs counted", "",
                  *_md_table(keys, [[str(a[k]) for k in keys] for a in accounts])]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "row", "label", "difficulty", "aggregate", "policy", "policy_codes",
    "successes", "trials", "disputed", "unlabeled", "rate", "ci_low", "ci_high", "ci_method",
    "cell", "omnibus_p", "omnibus_p_holm",
)


def _codes(column: PolicyColumn) -> str:
    return " ".join(f"{campaign}:{code}" for campaign, code in column.codes)


def long_records(report: Report) -> list[dict[str, Any]]:
    """One record per (row, policy): CSV_COLUMNS, then p and Holm p per pair of policies."""
    records = []
    for row in report.rows:
        o = row.omnibus
        for column, cell in zip(report.policies, row.cells, strict=True):
            record: dict[str, Any] = {
                "row": row.key, "label": row.label, "difficulty": row.difficulty or "",
                "aggregate": row.aggregate, "policy": column.header,
                "policy_codes": _codes(column), "successes": cell.k, "trials": cell.n,
                "disputed": cell.disputed, "unlabeled": cell.unlabeled,
                "rate": cell.rate, "ci_low": cell.low, "ci_high": cell.high,
                "ci_method": cell.method, "cell": format_cell(cell),
                "omnibus_p": None if o is None else o.q.p_value,
                "omnibus_p_holm": None if o is None else o.p_holm,
            }
            for c in row.comparisons:
                label = report.pair_label(c)
                record[f"p {label}"] = c.p_value
                record[f"p_holm {label}"] = c.p_holm
            records.append(record)
    return records


def _csv_value(v: object) -> object:
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def render_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    records = long_records(report)
    header = list(records[0]) if records else list(CSV_COLUMNS)
    writer.writerow(header)
    for record in records:
        writer.writerow([_csv_value(record[h]) for h in header])
    return buffer.getvalue()


def _rate_json(rate: SuccessRate) -> dict[str, Any]:
    return {"k": rate.k, "n": rate.n, "rate": rate.rate, "low": rate.low, "high": rate.high,
            "disputed": rate.disputed, "unlabeled": rate.unlabeled, "method": rate.method,
            "clusters": rate.clusters, "design_effect": rate.design_effect,
            "text": format_cell(rate)}


def _pair_json(report: Report, c: PairComparison) -> dict[str, Any]:
    out: dict[str, Any] = {
        "a": report.policies[c.a].key, "b": report.policies[c.b].key, "test": c.test,
        "p_value": c.p_value, "p_holm": c.p_holm, "difference": c.difference,
        "text": pair_text(c),
    }
    if c.paired is not None:
        out["pairs"] = {"both": c.paired.both, "a_only": c.paired.a_only,
                        "b_only": c.paired.b_only, "neither": c.paired.neither}
    return out


def _policy_json(report: Report, column: PolicyColumn) -> dict[str, Any]:
    out: dict[str, Any] = {"key": column.key, "header": column.header, "name": column.name,
                           "codes": [{"campaign": c, "code": code} for c, code in column.codes]}
    if not report.blind:
        out["id"] = column.policy_id
    return out


def render_json(report: Report) -> dict[str, Any]:
    """A json.dumps-able dict (no NaN: missing values are None); cells keyed by policy key."""
    rows = []
    for row in report.rows:
        o = row.omnibus
        rows.append({
            "key": row.key, "label": row.label, "categories": list(row.categories),
            "difficulty": row.difficulty, "aggregate": row.aggregate,
            "cells": {c.key: _rate_json(cell)
                      for c, cell in zip(report.policies, row.cells, strict=True)},
            "comparisons": [_pair_json(report, c) for c in row.comparisons],
            "omnibus": None if o is None else {
                "test": "cochran_q", "statistic": o.q.statistic, "df": o.q.df,
                "p_value": o.q.p_value, "p_holm": o.p_holm, "blocks": o.q.blocks,
                "text": omnibus_text(o)},
        })
    return {
        "title": report.title,
        "test": report.test,
        "test_name": TEST_NAMES[report.test],
        "confidence": 0.95,
        "blind": report.blind,
        "policies": [_policy_json(report, c) for c in report.policies],
        "rows": rows,
        "campaigns": [{
            "name": a.name, "planned_blocks": a.planned_blocks,
            "complete_blocks": a.complete_blocks, "broken_blocks": a.broken_blocks,
            "policies": [{"policy": report.policies[p.column].key, "code": p.code,
                          "planned": p.planned, "counted": p.counted, "resolved": p.resolved,
                          "disputed": p.disputed, "unlabeled": p.unlabeled}
                         for p in a.policies],
        } for a in report.campaigns],
        "notes": notes(report),
    }
