"""The declared questions in the CLI: `campaign create --question`'s help, and the section
`campaign show` and `evalfleet report` print (protocols.report_questions renders it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from orchestrator.store.db import Store
    from protocols.report_questions import QuestionLine

QUESTION_HELP = (
    "Declare a sequential question (repeat for more); it stops leasing the trials only it "
    "needs once decided. 'pair:A,B' (A against B on matched blocks) or 'threshold:A@0.5' (A's "
    "success rate against 0.5), then ';key=value' for any of category (default: every task), "
    "alpha (0.05), power (0.8), min_effect (0.2), cap (default and at most: the plan's "
    "blocks/trials in scope), discordance (pairs' planning P(A != B), 0.4), one_sided (a "
    "flag). Example: 'pair:oracle,random;category=unseen_objects;alpha=0.05;cap=60'. "
    "docs/statistics.md explains.")


def question_lines_of(store: Store, campaigns: Sequence[str | int]) -> list[QuestionLine]:
    """The declared questions of these campaigns (names or ids) with their standing."""
    from orchestrator.store.campaigns import get_campaign
    from orchestrator.store.questions import question_lines

    with store.read() as s:
        ids = list(dict.fromkeys(get_campaign(s, c).id for c in campaigns))
        return question_lines(s, ids)


def print_questions(console: Console, lines: list[QuestionLine], format: str, *,
                    blind: bool) -> None:
    """The section as a table or markdown; nothing without questions."""
    from protocols import report_questions as rq

    if not lines:
        return
    if format == "markdown":
        typer.echo(rq.render_markdown(lines, blind))
    else:
        console.print(rq.render_table(lines, blind))


def add_questions_json(out: dict[str, Any], lines: list[QuestionLine], blind: bool) -> None:
    """`report --format json`'s key `questions` (absent without any)."""
    from protocols.report_questions import render_json

    if lines:
        out["questions"] = render_json(lines, blind)
