"""The `bridge check` report: a rich table of the checks, then one line per failing check."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from robots.check.results import CheckResult, failure_lines, summary_line

_STYLE = {"pass": "green", "skip": "yellow", "fail": "bold red"}


def results_table(results: Sequence[CheckResult], title: str) -> Table:
    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for r in results:
        shown = "FAIL" if r.status == "fail" else r.status
        table.add_row(r.name, f"[{_STYLE[r.status]}]{shown}[/]", r.detail)
    return table


def print_report(console: Console, results: Sequence[CheckResult], *, driver: str, dry_run: bool) -> None:
    title = f"bridge check: {driver}" + (" (dry run: no motion sent)" if dry_run else "")
    console.print(results_table(results, title))
    for line in failure_lines(results):
        console.print(line, style="red", markup=False, highlight=False, soft_wrap=True)
    console.print(summary_line(results), markup=False, highlight=False)
