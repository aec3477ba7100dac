"""Renderers of the report's PPI section (protocols.report_ppi builds it): rich tables for the
CLI, markdown and JSON; the dashboard's Results page shows the same rows (records())."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from protocols.ppi import Agreement, Estimate
from protocols.report_ppi import PpiReport, PpiRow
from protocols.stats import percent_half_up

__all__ = ["agreement_records", "estimate_text", "records", "render_json", "render_markdown",
           "render_tables", "section_notes"]

ESTIMATE_COLUMNS = ("human-only", "auto-only (naive)", "PPI")


def estimate_text(e: Estimate | None) -> str:
    """'62% [55-69]' with its label counts; the interval shown clipped to [0, 100]."""
    if e is None:
        return "–"
    low, high = max(0.0, e.low), min(1.0, e.high)
    text = f"{percent_half_up(e.rate)}% [{percent_half_up(low)}-{percent_half_up(high)}]"
    if e.method == "human":
        return f"{text} n={e.human_labels}"
    if e.method == "auto":
        return f"{text} N={e.auto_labels}"
    return f"{text} n={e.human_labels} N={e.auto_labels}"


def _kappa(a: Agreement) -> str:
    return "–" if a.kappa is None else f"{a.kappa:.2f}"


def _rate(x: float | None) -> str:
    return "–" if x is None else f"{percent_half_up(x)}%"


def records(report: PpiReport) -> list[dict[str, Any]]:
    """One flat record per row: what the tables show."""
    return [{"policy": r.policy, "category": r.category, "episodes": r.episodes,
             "sampled": r.drawn, "human-only": estimate_text(r.human),
             "auto-only (naive)": estimate_text(r.auto), "PPI": estimate_text(r.ppi),
             "kappa": _kappa(r.agreement), "note": "; ".join(r.notes)} for r in report.rows]


def agreement_records(report: PpiReport) -> list[dict[str, Any]]:
    return [{"policy": r.policy, "category": r.category, "audited": r.agreement.n,
             "both success": r.agreement.both_success,
             "auto success, human failure": r.agreement.auto_only,
             "human success, auto failure": r.agreement.human_only,
             "both failure": r.agreement.both_failure,
             "disagree": _rate(r.agreement.disagreement_rate), "kappa": _kappa(r.agreement)}
            for r in report.rows]


def section_notes(report: PpiReport) -> list[str]:
    """What the numbers mean, then the audit's state and warnings (prefixed WARNING)."""
    meaning = (
        f"Detector {report.detector} on {', '.join(report.campaigns)}: success rate "
        f"[{report.confidence:.0%} interval]; n = audited human outcomes (human majority, "
        "ties left out), N = detector labels. Auto-only takes the detector as the truth (its "
        "interval is wrong when the detector is biased); PPI corrects it with the audit "
        "(docs/statistics.md).")
    return [meaning, *report.warnings]


def render_tables(report: PpiReport) -> list[Table]:
    est = Table(title=f"success rates: humans, detector {report.detector}, PPI")
    for col in ("policy", "category", "episodes", "sampled", *ESTIMATE_COLUMNS, "kappa"):
        est.add_column(col, justify="right" if col in ("episodes", "sampled") else "left")
    for rec in records(report):
        est.add_row(*(str(rec[c]) for c in ("policy", "category", "episodes", "sampled",
                                            *ESTIMATE_COLUMNS, "kappa")))
    agree = Table(title=f"{report.detector} vs humans on the audit")
    recs = agreement_records(report)
    for col in recs[0] if recs else ("policy",):
        agree.add_column(col)
    for rec in recs:
        agree.add_row(*(str(v) for v in rec.values()))
    return [est, agree]


def _md(recs: list[dict[str, Any]]) -> list[str]:
    if not recs:
        return ["(no episodes)"]
    cols = list(recs[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |" for r in recs]
    return lines


def render_markdown(report: PpiReport) -> str:
    lines = [f"## Prediction-powered estimates: detector {report.detector}", ""]
    lines += _md([{k: v for k, v in r.items() if k != "note"} for r in records(report)])
    lines += ["", f"### {report.detector} vs humans on the audit", ""]
    lines += _md(agreement_records(report))
    row_notes = [f"{r.policy} / {r.category}: {n}" for r in report.rows for n in r.notes]
    lines += ["", *(f"- {n}" for n in section_notes(report) + row_notes)]
    return "\n".join(lines) + "\n"


def _estimate_json(e: Estimate | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"rate": e.rate, "std_error": e.std_error, "low": e.low, "high": e.high,
            "human_labels": e.human_labels, "auto_labels": e.auto_labels,
            "text": estimate_text(e)}


def _agreement_json(a: Agreement) -> dict[str, Any]:
    return {"n": a.n, "both_success": a.both_success, "auto_only": a.auto_only,
            "human_only": a.human_only, "both_failure": a.both_failure,
            "disagreement_rate": a.disagreement_rate, "kappa": a.kappa}


def _row_json(r: PpiRow) -> dict[str, Any]:
    return {"policy": r.policy, "category": r.category, "episodes": r.episodes,
            "auto_labels": r.auto_labels, "sampled": r.drawn, "human_labels": r.human_labels,
            "human": _estimate_json(r.human), "auto": _estimate_json(r.auto),
            "ppi": _estimate_json(r.ppi), "agreement": _agreement_json(r.agreement),
            "notes": list(r.notes)}


def render_json(report: PpiReport) -> dict[str, Any]:
    """A json.dumps-able dict (missing values None)."""
    check = report.disagreement
    return {
        "detector": report.detector, "blind": report.blind, "confidence": report.confidence,
        "campaigns": list(report.campaigns), "policies": list(report.policies),
        "rows": [_row_json(r) for r in report.rows],
        "disagreement": None if check is None else {
            "alpha": check.alpha,
            "pairs": [{"policy_a": p.policy_a, "policy_b": p.policy_b, "rate_a": p.rate_a,
                       "rate_b": p.rate_b, "p_value": p.p_value, "p_holm": p.p_holm,
                       "flagged": p in check.flagged} for p in check.pairs]},
        "notes": section_notes(report),
    }
