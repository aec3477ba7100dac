"""Tables and charts built from store results (pandas + Altair, no Streamlit calls)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import altair as alt
import pandas as pd

from orchestrator.store.browse import ACTION_COLUMNS, LATENCY_COLUMNS, HumanSimCount, StepTable
from protocols.report import Report
from protocols.stats import cohen_kappa, compare_rates, format_cell, format_p_value


def report_long(report: Report) -> pd.DataFrame:
    """One line per (row, policy): the same columns as protocols.report.render_csv."""
    records = []
    for row in report.rows:
        p_value = row.comparison.p_value if row.comparison else None
        for col, cell in zip(report.policies, row.cells, strict=True):
            records.append({
                "row": row.key, "label": row.label, "difficulty": row.difficulty or "",
                "aggregate": row.aggregate, "policy_code": col.code, "policy_name": col.name,
                "successes": cell.k, "trials": cell.n, "rate": cell.rate, "ci_low": cell.low,
                "ci_high": cell.high, "cell": format_cell(cell),
                "test": report.test if row.comparison else "", "p_value": p_value,
            })
    return pd.DataFrame.from_records(records)


def report_wide(report: Report) -> pd.DataFrame:
    """The RT-2-style table: category rows, one column per policy, the comparison last."""
    data: dict[str, list[str]] = {"category": [r.label for r in report.rows]}
    for i, col in enumerate(report.policies):
        data[col.header] = [format_cell(r.cells[i]) for r in report.rows]
    if len(report.policies) >= 2:
        data[report.comparison_header] = [
            "n/a" if r.comparison is None or r.comparison.p_value is None
            else _p_text(r.comparison.p_value) for r in report.rows]
    return pd.DataFrame(data)


def _p_text(p: float) -> str:
    text = format_p_value(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def report_parquet(report: Report) -> bytes:
    buf = io.BytesIO()
    report_long(report).to_parquet(buf, index=False)
    return buf.getvalue()


def success_chart(report: Report) -> alt.Chart:
    """Success rate per category and policy, Wilson 95% error bars; empty cells left out."""
    df = report_long(report)
    df = df[df["trials"] > 0].assign(policy=lambda d: d["policy_name"] + " (" + d["policy_code"] + ")")
    order = [r.label for r in report.rows]
    policies = [f"{c.name} ({c.code})" for c in report.policies]
    x = alt.X("label:N", sort=order, title=None,
              axis=alt.Axis(labelAngle=-30, labelLimit=220, labelOverlap=False))
    offset = alt.XOffset("policy:N", sort=policies)
    color = alt.Color("policy:N", title="policy", sort=policies,
                      scale=alt.Scale(scheme="tableau10"), legend=alt.Legend(orient="top"))
    bars = alt.Chart(df).mark_bar().encode(
        x=x, xOffset=offset, color=color,
        y=alt.Y("rate:Q", title="success rate", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%")),
        tooltip=["label", "policy", "cell", "trials"])
    errors = alt.Chart(df).mark_errorbar(ticks=True, color="#222").encode(
        x=x, xOffset=offset, y=alt.Y("ci_low:Q", title="success rate"), y2="ci_high:Q")
    return (bars + errors).properties(height=340)


def comparison_table(report: Report, a: int, b: int, test: str) -> pd.DataFrame:
    """Policy a vs policy b on every row, with the chosen exact test's p-value."""
    pa, pb = report.policies[a], report.policies[b]
    rows = []
    for row in report.rows:
        ca, cb = row.cells[a], row.cells[b]
        cmp = compare_rates(ca.k, ca.n, cb.k, cb.n, test)  # type: ignore[arg-type]
        rows.append({
            "category": row.label, pa.header: format_cell(ca), pb.header: format_cell(cb),
            "difference": None if cmp.difference is None else round(cmp.difference * 100, 1),
            "p-value": None if cmp.p_value is None else format_p_value(cmp.p_value),
            "significant (5%)": cmp.significant(),
        })
    return pd.DataFrame(rows)


def human_sim_summary(counts: Sequence[HumanSimCount]) -> tuple[pd.DataFrame, float | None, int]:
    """Confusion counts per policy, Cohen's kappa (human majority vs sim) and total episodes."""
    if not counts:
        return pd.DataFrame(), None, 0
    df = pd.DataFrame([c.__dict__ for c in counts])
    df["human"] = df["human_success"].map({True: "success", False: "failure"})
    df["sim"] = df["sim_success"].map({True: "success", False: "failure"})
    table = df.pivot_table(index=["blind_code", "human"], columns="sim", values="n",
                           aggfunc="sum", fill_value=0).reset_index()
    human = [h for c in counts for h in [c.human_success] * c.n]
    sim = [s for c in counts for s in [c.sim_success] * c.n]
    kappa = cohen_kappa(human, sim)
    return table, (None if math.isnan(kappa) else kappa), len(human)


def step_frame(table: StepTable) -> pd.DataFrame:
    return pd.DataFrame(list(table.rows), columns=list(table.columns))


def actions_frames(table: StepTable) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(end-effector deltas over steps, gripper over steps) for st.line_chart."""
    df = step_frame(table).set_index("idx")
    return df[[c for c in ACTION_COLUMNS if c != "gripper"]], df[["gripper"]]


def latency_chart(df: pd.DataFrame) -> alt.Chart:
    """Stacked per-step latency: observation age, inference, orchestration, command."""
    long = df[["idx", *LATENCY_COLUMNS]].melt("idx", var_name="component", value_name="ms")
    return alt.Chart(long).mark_area().encode(
        x=alt.X("idx:Q", title="step"), y=alt.Y("ms:Q", stack="zero", title="ms"),
        color=alt.Color("component:N", sort=list(LATENCY_COLUMNS)),
        tooltip=["idx", "component", "ms"]).properties(height=260)


def latency_summary(df: pd.DataFrame) -> pd.DataFrame:
    cols = list(LATENCY_COLUMNS)
    out = df[cols].describe(percentiles=[0.5, 0.95]).loc[["mean", "50%", "95%", "max"]]
    return out.T.round(2)
