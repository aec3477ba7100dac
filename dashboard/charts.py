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


def action_names(label: str | None, capabilities: dict | None) -> tuple[list[str], list[str]]:
    """(dimension names, units) of an action space label such as `joint_position[7]`: the
    arm's declared names when its recorded capabilities declare that space, RT-2's names for
    ee_delta[7], otherwise a0, a1, ... without units."""
    kind, _, rest = (label or "ee_delta[7]").partition("[")
    dim = int(rest.rstrip("]")) if rest.rstrip("]").isdigit() else 0
    declared = ((capabilities or {}).get("spaces") or {}).get("action") or {}
    names, units = declared.get("names") or [], declared.get("units") or []
    if declared.get("kind") == kind and len(names) == dim:
        return [str(n) for n in names], [str(u) for u in units] if len(units) == dim else [""] * dim
    if kind == "ee_delta" and dim == len(ACTION_COLUMNS):
        return list(ACTION_COLUMNS), ["m", "m", "m", "rad", "rad", "rad", "1"]
    return [f"a{i}" for i in range(dim)], [""] * dim


def action_long(df: pd.DataFrame, capabilities: dict | None = None) -> pd.DataFrame:
    """Applied actions over steps, one line per (step, dimension), in whatever space the
    episode used: columns idx, dimension, unit, value, chunk. Steps recorded before the full
    vector was kept (no `action`) fall back to RT-2's dx..gripper columns."""
    cols = ["idx", "dimension", "unit", "value", "chunk"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    label = str(df["action_space"].dropna().iloc[0]) if "action_space" in df and \
        df["action_space"].notna().any() else "ee_delta[7]"
    names, units = action_names(label, capabilities)
    recs: list[tuple[object, ...]] = []
    for _, row in df.iterrows():
        vec = row.get("action")
        if not isinstance(vec, (list, tuple)) or len(vec) != len(names):
            vec = [row.get(c) for c in ACTION_COLUMNS] if len(names) == len(ACTION_COLUMNS) else []
        chunk = row.get("chunk_id")
        for name, unit, v in zip(names, units, vec, strict=False):
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                recs.append((int(row["idx"]), name, unit, float(v), chunk))
    return pd.DataFrame.from_records(recs, columns=cols)


def action_chart(long: pd.DataFrame) -> alt.Chart:
    """One line per action dimension over steps, a panel per unit (m, rad, 1, ...)."""
    dims = list(dict.fromkeys(long["dimension"]))
    units = list(dict.fromkeys(long["unit"]))
    base = alt.Chart(long).mark_line(point=len(long) < 400).encode(
        x=alt.X("idx:Q", title="step"),
        y=alt.Y("value:Q", title=None),
        color=alt.Color("dimension:N", sort=dims, legend=alt.Legend(orient="top", columns=8)),
        tooltip=["idx", "dimension", "unit", "value", "chunk"])
    return base.properties(height=160, width="container").facet(
        row=alt.Row("unit:N", sort=units, title=None)).resolve_scale(y="independent")


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
