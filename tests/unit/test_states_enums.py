"""Every status, event kind and termination reason written or compared in orchestrator/ and
protocols/ comes from an enum (orchestrator.store.states), and the enums admit exactly what
the tables' CHECK constraints admit. A new bare literal fails here, naming file and line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from orchestrator.faults import AbortCause
from orchestrator.store import models
from orchestrator.store.states import (
    CampaignStatus,
    EpisodeStatus,
    EventKind,
    QuestionKind,
    QuestionState,
    RobotStatus,
    TerminationReason,
    TrialStatus,
    check_values,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "protocols", "dashboard")
STATE_VALUES = {m.value for e in (CampaignStatus, TrialStatus, EpisodeStatus, RobotStatus,
                                  TerminationReason) for m in e}
KIND_VALUES = {m.value for m in EventKind}
# attributes and keywords that hold a status / an event kind / a termination reason
STATUS_NAMES = {"status", "terminated_by"}
KIND_NAMES = {"kind"}


@pytest.mark.parametrize(("model", "enum"), [
    (models.Campaign, CampaignStatus), (models.Trial, TrialStatus),
    (models.Episode, EpisodeStatus)])
def test_enum_members_are_what_the_check_constraint_admits(model, enum) -> None:
    checks = [str(c.sqltext) for c in model.__table__.constraints
              if c.__class__.__name__ == "CheckConstraint" and c.name.endswith("status")]
    assert checks == [check_values(enum)]
    admitted = re.findall(r"'([a-z_]+)'", checks[0])
    assert admitted == [m.value for m in enum]


def test_the_latest_migration_chain_admits_the_same_statuses() -> None:
    """The CHECKs the migrations write (0001, widened by 0007 and 0012) equal the enums."""
    text = (REPO / "migrations" / "versions" / "0007_campaign_lifecycle.py").read_text()
    assert f'NEW_CAMPAIGN = "{check_values(CampaignStatus)}"' in text
    text = (REPO / "migrations" / "versions" / "0012_questions_detectors_audit.py").read_text()
    assert f'NEW_TRIAL = "{check_values(TrialStatus)}"' in text
    assert f'QUESTION_STATE = "{check_values(QuestionState, "state")}"' in text
    assert f'QUESTION_KIND = "{check_values(QuestionKind, "kind")}"' in text
    assert f'NEW_SOURCE = "{models.LABEL_SOURCE_CHECK}"' in text


def test_event_kinds_for_every_status_change_exist() -> None:
    for c in CampaignStatus:
        assert EventKind.campaign(c) == f"campaign_{c.value}"
    for r in RobotStatus:
        assert EventKind.robot(r) == f"robot_{r.value}"


def test_stored_strings_are_unchanged() -> None:
    assert TrialStatus.GIVEN_UP == "given_up" and EpisodeStatus.ABORTED == "aborted"
    assert f"{CampaignStatus.INCOMPLETE}" == "incomplete"  # formats as the stored string
    assert AbortCause.ROBOT_ACTOR == "robot_actor"


def _name_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _strs(node: ast.AST) -> list[str]:
    """The string constants of a constant, or of a tuple/list/set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for e in node.elts for s in _strs(e)]
    if isinstance(node, ast.Call) and _name_of(node.func) == "in_" and node.args:
        return _strs(node.args[0])
    return []


def stray_literals(path: Path) -> list[str]:
    """file:line of every bare status / event-kind literal written or compared."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(REPO)
    out = []

    def flag(node: ast.AST, what: str) -> None:
        out.append(f"{rel}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = _name_of(node.func)
            if fn == "log_event" and len(node.args) >= 2:
                kind = node.args[1]
                if isinstance(kind, ast.Constant | ast.JoinedStr):
                    flag(node, "log_event with a literal kind (use EventKind)")
            for kw in node.keywords:
                vals = _strs(kw.value)
                if kw.arg in STATUS_NAMES and set(vals) & STATE_VALUES:
                    flag(node, f"{kw.arg}={vals} (use the status enum)")
                if kw.arg in KIND_NAMES and set(vals) & KIND_VALUES:
                    flag(node, f"kind={vals} (use EventKind)")
            if fn == "in_" and isinstance(node.func, ast.Attribute):
                col = _name_of(node.func.value)
                vals = _strs(node.args[0]) if node.args else []
                if col in STATUS_NAMES and set(vals) & STATE_VALUES:
                    flag(node, f"{col}.in_({vals})")
                if col in KIND_NAMES and set(vals) & KIND_VALUES:
                    flag(node, f"{col}.in_({vals})")
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            names = {_name_of(s) for s in sides}
            vals = {v for s in sides for v in _strs(s)}
            if names & STATUS_NAMES and vals & STATE_VALUES:
                flag(node, f"status compared with {sorted(vals & STATE_VALUES)}")
            if names & KIND_NAMES and vals & KIND_VALUES:
                flag(node, f"kind compared with {sorted(vals & KIND_VALUES)}")
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if value is None:
                continue
            for t in targets:
                tnames = [_name_of(e) for e in t.elts] if isinstance(t, ast.Tuple) else [_name_of(t)]
                vals = ([v for e in value.elts for v in _strs(e)] if isinstance(value, ast.Tuple)
                        else _strs(value))
                if set(tnames) & STATUS_NAMES and set(vals) & STATE_VALUES:
                    flag(node, f"status assigned {vals}")
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if (isinstance(k, ast.Constant) and k.value in STATUS_NAMES
                        and set(_strs(v)) & STATE_VALUES):
                    flag(node, f"{{{k.value!r}: {_strs(v)}}}")
    return out


def test_the_detector_catches_each_form(tmp_path: Path) -> None:
    bad = REPO / "tests" / "unit" / "_stray_probe.py"
    src = (
        'log_event(s, "trial_gave_up")\n'
        'log_event(s, f"campaign_{x}")\n'
        'ep.status = "aborted"\n'
        'q = Trial.status == "leased"\n'
        'u = update(Trial).values(status="pending")\n'
        'e = Event(kind="operator_confirmed")\n'
        'w = Campaign.status.in_(("pending", "running"))\n'
        'r = {"status": "pending"}\n'
        'ok = Label.source == "human"\n'
    )
    bad.write_text(src)
    try:
        found = stray_literals(bad)
    finally:
        bad.unlink()
    assert len(found) == 8, found


def test_no_stray_status_or_event_literals_in_the_packages() -> None:
    problems = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            if path.name == "states.py":
                continue
            problems += stray_literals(path)
    assert not problems, "bare status/event literals (use orchestrator.store.states):\n" + \
        "\n".join(problems)
