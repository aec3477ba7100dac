"""The report's section on a campaign's declared questions (pure rendering): per question, the
question in words, its state, the e-value against its boundary, the outcomes used and those
that came late, and the trials saved against the fixed plan.

`evalfleet report` (table, markdown, json) and the dashboard's Results page both render from
QuestionLine (orchestrator.store.questions.question_lines builds them). docs/statistics.md
explains the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table

from protocols.sequential import Decision, Question, QuestionKind, SequentialState, trials_saved

__all__ = [
    "COLUMNS",
    "QuestionLine",
    "question_text",
    "render_json",
    "render_markdown",
    "render_table",
    "rows",
    "saved_vs_fixed",
    "state_text",
]


@dataclass(frozen=True)
class QuestionLine:
    """One declared question with its stored standing."""

    campaign_id: int
    campaign: str
    position: int
    question: Question
    policy_a: str
    code_a: str
    policy_b: str | None
    code_b: str | None
    category: str | None  # None: overall
    fixed_n: int
    state: Decision
    outcomes: int  # outcomes the test used (blocks for a pair)
    late: int  # resolved after the decision
    e_value: float  # futility e-value for no difference, else the efficacy e-value
    decided_after: int | None
    not_needed: int  # trials marked not needed for it (never leased)

    def a(self, blind: bool) -> str:
        return self.code_a if blind else self.policy_a

    def b(self, blind: bool) -> str:
        return (self.code_b if blind else self.policy_b) or ""

    @property
    def unit(self) -> str:
        return "blocks" if self.question.kind is QuestionKind.PAIR else "trials"


def _num(x: float) -> str:
    return f"{x:g}"


def question_text(line: QuestionLine, blind: bool = False) -> str:
    """'oracle vs random, overall, alpha 0.05, power 0.8, min effect 0.2'."""
    q = line.question
    if q.kind is QuestionKind.PAIR:
        who = f"{line.a(blind)} vs {line.b(blind)}"
    else:
        who = f"{line.a(blind)} against success rate {_num(q.threshold or 0.0)}"
    scope = line.category.replace("_", " ") if line.category else "overall"
    sided = "" if q.two_sided else ", one-sided"
    return (f"{who}, {scope}, alpha {_num(q.alpha)}, power {_num(q.power)}, "
            f"min effect {_num(q.min_effect)}{sided}")


def state_text(line: QuestionLine, blind: bool = False) -> str:
    """running / decided A > B / decided no difference / cap reached."""
    q = line.question
    pair = q.kind is QuestionKind.PAIR
    if line.state is Decision.RUNNING:
        return "running"
    if line.state is Decision.CAP_REACHED:
        return "cap reached"
    if line.state is Decision.NO_DIFFERENCE:
        return "decided no difference"
    better = line.state is Decision.A_BETTER
    if pair:
        hi, lo = (line.a(blind), line.b(blind)) if better else (line.b(blind), line.a(blind))
        return f"decided {hi} > {lo}"
    side = "above" if better else "below"
    return f"decided {line.a(blind)} {side} {_num(q.threshold or 0.0)}"


def boundary(line: QuestionLine) -> float:
    """The e-value that decides: 1/(1 - power) for no difference, else 1/alpha."""
    q = line.question
    if line.state is Decision.NO_DIFFERENCE:
        return 1 / (1 - q.power)
    return 1 / q.alpha


def evidence_text(line: QuestionLine) -> str:
    what = "futility e-value" if line.state is Decision.NO_DIFFERENCE else "e-value"
    return f"{what} {line.e_value:.3g} (decides at {boundary(line):.3g})"


def saved_vs_fixed(line: QuestionLine) -> int | None:
    """protocols.sequential.trials_saved: what the fixed plan would still have run after the
    decision (blocks for a pair; negative when the test used more); None while running."""
    used = line.decided_after if line.decided_after is not None else line.outcomes
    state = SequentialState(line.question, trials=used, decided=line.state)
    return trials_saved(state, line.fixed_n)


def _saved_text(line: QuestionLine) -> str:
    saved = saved_vs_fixed(line)
    if saved is None:
        return f"fixed plan {line.fixed_n} {line.unit}"
    return f"{saved} of {line.fixed_n} {line.unit}"


COLUMNS = ("campaign", "question", "state", "evidence", "outcomes used", "late",
           "saved vs fixed plan", "trials not needed")


def rows(lines: list[QuestionLine], blind: bool = False) -> list[dict[str, str]]:
    """One row of text per question, keyed by COLUMNS."""
    out = []
    for line in lines:
        out.append({
            "campaign": f"#{line.campaign_id}" if blind else line.campaign,
            "question": question_text(line, blind),
            "state": state_text(line, blind),
            "evidence": evidence_text(line),
            "outcomes used": f"{line.outcomes} of cap {line.question.cap} {line.unit}",
            "late": str(line.late),
            "saved vs fixed plan": _saved_text(line),
            "trials not needed": str(line.not_needed),
        })
    return out


NOTE = ("Sequential questions (anytime-valid; docs/statistics.md): a decision is final; "
        "late outcomes (resolved after it) are not used. Saved vs fixed plan: the classical "
        "fixed-n design at the same alpha and power minus what the test used.")


def render_table(lines: list[QuestionLine], blind: bool = False) -> Table:
    table = Table(title="Declared questions", caption=NOTE)
    for col in COLUMNS:
        table.add_column(col)
    for row in rows(lines, blind):
        table.add_row(*(row[c] for c in COLUMNS))
    return table


def render_markdown(lines: list[QuestionLine], blind: bool = False) -> str:
    out = ["## Declared questions", "", "| " + " | ".join(COLUMNS) + " |",
           "|" + "---|" * len(COLUMNS)]
    for row in rows(lines, blind):
        out.append("| " + " | ".join(row[c].replace("|", "\\|") for c in COLUMNS) + " |")
    out += ["", NOTE]
    return "\n".join(out)


def render_json(lines: list[QuestionLine], blind: bool = False) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        q = line.question
        out.append({
            "campaign": f"#{line.campaign_id}" if blind else line.campaign,
            "position": line.position,
            "kind": q.kind.value,
            "policy_a": line.a(blind),
            "policy_b": line.b(blind) or None,
            "threshold": q.threshold,
            "category": line.category,
            "alpha": q.alpha, "power": q.power, "min_effect": q.min_effect, "cap": q.cap,
            "two_sided": q.two_sided,
            "text": question_text(line, blind),
            "state": line.state.value,
            "state_text": state_text(line, blind),
            "e_value": line.e_value,
            "boundary": boundary(line),
            "outcomes": line.outcomes,
            "late": line.late,
            "decided_after": line.decided_after,
            "fixed_n": line.fixed_n,
            "saved_vs_fixed": saved_vs_fixed(line),
            "trials_not_needed": line.not_needed,
        })
    return out
