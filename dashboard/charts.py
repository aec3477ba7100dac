"""Tables and charts built from store results (pandas + Altair, no Streamlit calls)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import altair as alt
import pandas as pd

from orchestrator.store.browse import ACTION_COLUMNS, LATENCY_COLUMNS, HumanSimCount, StepTable
from protocols.report import Report, account_rows, long_records, omnibus_text, pair_text
from protocols.stats import cohen_kappa, format_cell, format_p_value


def report_long(report: Report) -> pd.DataFrame:
    """One line per (row, policy): the same columns as protocols.report.render_csv."""
    return pd.DataFrame.from_records(long_records(report))


def report_wide(report: Report) -> pd.DataFrame:
    """The RT-2-style table: category rows, one column per policy, then every pair of policies
    (Holm-adjusted p, raw p in brackets) and, with 3+ policies, Cochran's Q."""
    data: dict[str, list[str]] = {"category": [r.label for r in report.rows]}
    for i, col in enumerate(report.policies):
        data[col.header] = [format_cell(r.cells[i]) for r in report.rows]
    if report.rows:
        for k, c in enumerate(report.rows[0].comparisons):
            data[report.pair_label(c)] = [pair_text(r.comparisons[k]) for r in report.rows]
    if len(report.policies) > 2:
        data["omnibus (Cochran's Q)"] = [omnibus_text(r.omnibus) for r in report.rows]
    return pd.DataFrame(data)


def accounts_frame(report: Report) -> pd.DataFrame:
    """Planned vs counted per campaign and policy, with the pairing status."""
    return pd.DataFrame.from_records(account_rows(report))


def report_parquet(report: Report) -> bytes:
    buf = io.BytesIO()
    report_long(report).to_parquet(buf, index=False)
    return buf.getvalue()


def success_chart(report: Report) -> alt.Chart:
    """Success rate per category and policy with its 95% interval; empty cells left out."""
    df = report_long(report)
    if df.empty:
        df = pd.DataFrame(columns=["label", "policy", "rate", "ci_low", "ci_high", "cell",
                                   "trials"])
    df = df[df["trials"] > 0]
    order = [r.label for r in report.rows]
    policies = [c.header for c in report.policies]
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


def comparison_table(report: Report) -> pd.DataFrame:
    """Every pair of policies on every row: the test, matched pairs, difference and p-values."""
    rows = []
    for row in report.rows:
        for c in row.comparisons:
            rows.append({
                "category": row.label, "pair": report.pair_label(c),
                "matched pairs": None if c.paired is None else c.paired.pairs,
                "A only / B only": (None if c.paired is None
                                    else f"{c.paired.a_only} / {c.paired.b_only}"),
                "difference (pp)": None if c.difference is None else round(c.difference * 100, 1),
                "p": None if c.p_value is None else format_p_value(c.p_value),
                "p (Holm)": None if c.p_holm is None else format_p_value(c.p_holm),
                "significant (5%, Holm)": c.p_holm is not None and c.p_holm < 0.05,
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
