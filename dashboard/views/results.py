"""Results: success per generalization category (RT-2 style), built by the same function as
`evalfleet report` (orchestrator.reporting.build_report_for_ids), so the numbers are equal.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import streamlit as st

from dashboard import charts, data, ui
from dashboard.data import ReportQuery
from dashboard.identity import current_role
from dashboard.views import results_ppi, results_questions
from dashboard.visibility import Role, campaign_title, results_view
from orchestrator.reporting import ReportFilters
from protocols.report import TEST_NAMES, notes, render_csv


def _default_campaigns(camps: list) -> list[int]:  # type: ignore[type-arg]
    with_results = [c.id for c in camps if c.done > 0]
    return with_results[:1] or [c.id for c in camps[:1]]


def _date_bounds(picked: object) -> tuple[datetime | None, datetime | None]:
    if not isinstance(picked, tuple | list) or len(picked) != 2:
        return None, None
    start, end = picked
    since = datetime.combine(start, time.min, tzinfo=UTC) if isinstance(start, date) else None
    until = (datetime.combine(end, time.min, tzinfo=UTC) + timedelta(days=1)
             if isinstance(end, date) else None)
    return since, until


def _filters(ids: tuple[int, ...]) -> tuple[ReportFilters, str | None]:
    opts = data.filter_options(ids)
    with st.expander("Filters", expanded=False):
        c1, c2, c3 = st.columns(3)
        robots = c1.multiselect("Arms", opts.robots, key="res_robots")
        stations = c2.multiselect("Stations", opts.stations, key="res_stations")
        source = c3.selectbox("Label source", [None, "human", "sim"], key="res_source",
                              format_func=lambda s: "any (human overrides sim)" if s is None
                              else f"only outcomes decided by {s} labels")
        c4, c5 = st.columns(2)
        evaluator = c4.selectbox("Evaluator", [None, *opts.evaluators], key="res_evaluator",
                                 format_func=lambda e: "all (majority vote)" if e is None
                                 else f"only {e}'s labels")
        since = until = None
        if opts.first is not None and opts.last is not None:
            use_dates = c5.checkbox("Filter by date", key="res_use_dates")
            if use_dates:
                picked = c5.date_input("Episodes ended between",
                                       (opts.first.date(), opts.last.date()), key="res_dates")
                since, until = _date_bounds(picked)
    f = ReportFilters(robots=tuple(robots), stations=tuple(stations), since=since, until=until,
                      source=source if evaluator is None else None)
    return f, evaluator


def _downloads(report, name: str) -> None:  # type: ignore[no-untyped-def]
    c1, c2, _ = st.columns([1, 1, 3])
    c1.download_button("CSV", lambda: render_csv(report), f"{name}.csv", "text/csv",
                       key="dl_csv", icon=":material/download:", on_click="ignore")
    c2.download_button("Parquet", lambda: charts.report_parquet(report), f"{name}.parquet",
                       "application/vnd.apache.parquet", key="dl_parquet",
                       icon=":material/download:", on_click="ignore")


def _comparison(report) -> None:  # type: ignore[no-untyped-def]
    if len(report.policies) < 2:
        st.caption("Add a second policy to compare.")
        return
    table = charts.comparison_table(report)
    st.dataframe(table, hide_index=True, height=min(35 * (len(table) + 1) + 3, 600))
    st.caption(f"{TEST_NAMES[report.test]} for every pair of policies on every row; difference "
               "in percentage points (A − B; on matched blocks for McNemar); p (Holm) is "
               "adjusted across all the pairwise tests shown. docs/statistics.md explains.")


def _accounts(report) -> None:  # type: ignore[no-untyped-def]
    """Planned vs counted per campaign and policy; warnings for losses and broken pairing."""
    for line in notes(report):
        if line.startswith("WARNING "):
            st.warning(line.removeprefix("WARNING "))
    if report.campaigns:
        st.dataframe(charts.accounts_frame(report), hide_index=True)


def _human_vs_sim(ids: tuple[int, ...], f: ReportFilters, blind: bool) -> None:
    table, kappa, n = charts.human_sim_summary(data.human_vs_sim(ids, f))
    if n == 0:
        st.caption("No episode has both a resolved human outcome and a sim label.")
        return
    agree = sum(int(r.get("success", 0)) for _, r in table[table["human"] == "success"].iterrows())
    agree += sum(int(r.get("failure", 0)) for _, r in table[table["human"] == "failure"].iterrows())
    c1, c2, c3 = st.columns(3)
    c1.metric("episodes with both", n)
    c2.metric("human = sim", f"{agree / n:.0%}")
    c3.metric("Cohen's kappa (human vs sim)", "–" if kappa is None else f"{kappa:.2f}")
    st.dataframe(table.rename(columns={"blind_code": "policy", "human": "human says",
                                       "success": "sim: success", "failure": "sim: failure"}),
                 hide_index=True)


def _blind_toggle(where, role: Role) -> bool:  # type: ignore[no-untyped-def]
    """Staff see names unless they toggle blind; evaluators are always blind (visibility.py)."""
    if results_view(role).can_unblind:
        return results_view(role, where.toggle("Blind (policy codes only)", key="res_blind")).blind
    where.toggle("Blind (policy codes only)", value=True, disabled=True, key="res_blind_locked",
                 help="Evaluators see policies by blind code only.")
    return results_view(role).blind


def render() -> None:
    ui.start("Results")
    camps = data.campaigns()
    if not camps:
        st.info("No campaigns yet: create one on the Campaigns page or with "
                "`evalfleet campaign create`.")
        return
    role = current_role()
    names = {c.id: c.name for c in camps}
    titles = {c.id: campaign_title(role, c.id, c.name, c.protocol) for c in camps}
    picked = st.multiselect("Campaigns", list(names), default=_default_campaigns(camps),
                            format_func=titles.__getitem__, key="res_campaigns")
    if not picked:
        st.info("Pick one or more campaigns.")
        return
    ids = tuple(picked)
    c1, c2 = st.columns([1, 3])
    test = c1.selectbox("Test", list(TEST_NAMES), format_func=TEST_NAMES.__getitem__,
                        key="res_test")
    blind = _blind_toggle(c2, role)
    filters, evaluator = _filters(ids)
    report = data.report(ReportQuery(ids, test, blind, filters, evaluator))
    overall = report.row("overall")
    st.caption(f"{sum(c.n for c in overall.cells)} counted episodes with a resolved outcome; "
               f"{sum(c.disputed for c in overall.cells)} disputed and "
               f"{sum(c.unlabeled for c in overall.cells)} unlabeled are shown beside n, not in "
               "it. " + " ".join(line for line in notes(report) if not line.startswith("WARNING")))
    st.dataframe(charts.report_wide(report), hide_index=True, height=35 * (len(report.rows) + 1) + 3)
    _downloads(report, ("-".join(names[i] for i in ids)[:80] if role is Role.STAFF
                        else "campaigns-" + "-".join(map(str, ids))[:80]) or "report")
    st.altair_chart(charts.success_chart(report), width="stretch")
    st.subheader("Planned vs counted")
    _accounts(report)
    st.subheader("Policy comparison")
    _comparison(report)
    st.subheader("Human labels vs the simulator")
    _human_vs_sim(ids, filters, blind)
    results_ppi.render(ids, blind)  # a success detector's PPI section, when it has labels
    results_questions.render(ids, blind)  # declared sequential questions, when there are any


render()
