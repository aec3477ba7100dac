"""Who may see what on the dashboard (dashboard/visibility.py): pure rules, no Streamlit."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dashboard.visibility import (
    STAFF_ONLY,
    Action,
    CampaignControls,
    EpisodeView,
    NotAllowed,
    Role,
    StaffConfig,
    Viewer,
    campaign_controls,
    campaign_title,
    check,
    episode_view,
    evaluator_aliases,
    has_labelled,
    policy_title,
    redact,
    results_view,
    role_of,
    visible_labels,
    vote_text,
)

STAFF = StaffConfig.parse("Alice, bob@lab.example", "evalfleet-staff,PIs")


@pytest.mark.parametrize(
    ("user", "groups", "role"),
    [
        ("alice", [], Role.STAFF),  # names compare case-insensitively
        ("BOB@lab.example", [], Role.STAFF),
        ("carol", [], Role.EVALUATOR),  # a plain name: evaluator
        ("carol", ["pis"], Role.STAFF),  # an OIDC group listed as staff
        ("carol", ["evaluators"], Role.EVALUATOR),
        (None, ["evalfleet-staff"], Role.EVALUATOR),  # nobody signed in: never staff
        ("  ", [], Role.EVALUATOR),
    ],
)
def test_role_of(user, groups, role) -> None:
    assert role_of(user, groups, STAFF) is role


def test_no_staff_configured_means_everyone_is_blind() -> None:
    config = StaffConfig.parse("", "")
    assert config == StaffConfig()
    assert role_of("alice", ["evalfleet-staff"], config) is Role.EVALUATOR
    assert StaffConfig.parse().groups == frozenset({"evalfleet-staff"})  # the default group


@pytest.mark.parametrize("labelled", [False, True])
def test_staff_see_everything(labelled) -> None:
    assert episode_view(Role.STAFF, labelled) == EpisodeView(True, True, True, True, True, True)


def test_an_evaluator_sees_the_verdicts_only_after_labelling_and_never_names() -> None:
    before = episode_view(Role.EVALUATOR, labelled_by_viewer=False)
    after = episode_view(Role.EVALUATOR, labelled_by_viewer=True)
    for view in (before, after):  # never: one name would unblind the code for the campaign
        assert not view.policy_identity and not view.campaign_name
        assert not view.evaluator_names and not view.audit_events
    assert not before.sim_verdict and not before.other_labels
    assert after.sim_verdict and after.other_labels


def test_results_are_blind_for_evaluators_whatever_they_ask() -> None:
    assert results_view(Role.EVALUATOR).blind
    assert results_view(Role.EVALUATOR, blind_requested=False).blind
    assert not results_view(Role.EVALUATOR).can_unblind
    assert not results_view(Role.STAFF).blind  # staff: names by default
    assert results_view(Role.STAFF, blind_requested=True).blind
    assert results_view(Role.STAFF).can_unblind


def test_titles() -> None:
    assert campaign_title(Role.STAFF, 3, "zebra-vs-okapi", "smoke") == "zebra-vs-okapi (#3)"
    assert campaign_title(Role.EVALUATOR, 3, "zebra-vs-okapi", "smoke") == "#3 · smoke"
    assert policy_title(Role.STAFF, "zebra", "P-2345") == "zebra (P-2345)"
    assert policy_title(Role.EVALUATOR, "zebra", "P-2345") == "P-2345"


def test_redact_replaces_every_policy_name_for_evaluators() -> None:
    text = "policy Zebra-XQ failed to start: zebra-xq.yaml missing; zebra is fine"
    names = ["zebra", "zebra-xq"]
    assert redact(text, names, Role.STAFF) == text
    assert redact(text, names, Role.EVALUATOR) == (
        "policy [policy] failed to start: [policy].yaml missing; [policy] is fine")
    assert redact("", names, Role.EVALUATOR) == ""
    assert redact("a.b", ["a.b", ""], Role.EVALUATOR) == "[policy]"  # names are not regexes
    assert redact("axb", ["a.b"], Role.EVALUATOR) == "axb"


def test_votes_without_names_for_evaluators() -> None:
    votes = (("ann", True), ("bob", False), ("cyd", True))
    assert vote_text(votes, Role.STAFF, "ann") == "ann: ✓, bob: ✗, cyd: ✓"
    shown = vote_text(votes, Role.EVALUATOR, "bob")
    assert shown == "you: ✗, ✓, ✓"
    assert not any(who in shown for who in ("ann", "cyd"))
    assert vote_text(votes, Role.EVALUATOR, None) == "✓, ✓, ✗"


@dataclass(frozen=True)
class Lab:
    source: str
    evaluator: str
    success: bool = True


LABELS = [Lab("sim", "sim"), Lab("human", "ann"), Lab("human", "bob", False)]


def test_visible_labels() -> None:
    staff = visible_labels(LABELS, episode_view(Role.STAFF, False), "ann")
    assert [who for who, _ in staff] == ["simulator", "ann", "bob"]
    assert visible_labels(LABELS, episode_view(Role.EVALUATOR, False), "cyd") == []
    assert not has_labelled(LABELS, "cyd") and has_labelled(LABELS, "bob")
    assert not has_labelled([Lab("sim", "bob")], "bob")  # only a human label of one's own
    after = visible_labels(LABELS, episode_view(Role.EVALUATOR, True), "bob")
    assert [(who, lab.evaluator) for who, lab in after] == [
        ("simulator", "sim"), ("another evaluator", "ann"), ("you", "bob")]


def test_only_staff_steer_and_everyone_may_stop_an_arm() -> None:
    assert set(Action) - STAFF_ONLY == {Action.ESTOP}
    for action in Action:
        check(Viewer("ann", Role.STAFF), action)  # staff may do everything
    check(Viewer("eve", Role.EVALUATOR), Action.ESTOP)
    check(Viewer(None, Role.EVALUATOR), Action.ESTOP)  # safety: not even a name needed
    for action in STAFF_ONLY:
        with pytest.raises(NotAllowed, match=f"eve is an evaluator and only staff may "
                                             f"{action.value}"):
            check(Viewer("eve", Role.EVALUATOR), action)
    with pytest.raises(NotAllowed, match="not signed in"):
        check(Viewer(None, Role.EVALUATOR), Action.PAUSE)
    assert Viewer(None, Role.EVALUATOR).actor == "dashboard" and Viewer("ann", Role.STAFF).actor == "ann"


@pytest.mark.parametrize(
    ("status", "given_up", "want"),
    [
        ("pending", 0, CampaignControls(True, False, None, False, True, True, None)),
        ("running", 2, CampaignControls(True, False, None, False, True, True, None)),
        ("paused", 0, CampaignControls(False, True, None, False, True, True, None)),
        ("done", 0, CampaignControls(False, False, None, False, False, True, None)),
        ("cancelled", 0, CampaignControls(False, False, None, False, False, True, None)),
        # incomplete: re-queue instead of Resume (the store refuses to resume it)
        ("incomplete", 3, CampaignControls(False, False, "Re-queue 3 given-up trials", True,
                                           True, True, None)),
        ("incomplete", 1, CampaignControls(False, False, "Re-queue 1 given-up trial", True,
                                           True, True, None)),
        ("incomplete", 0, CampaignControls(False, False, None, False, True, True, None)),
    ],
)
def test_campaign_controls_for_staff(status, given_up, want) -> None:
    assert campaign_controls(Role.STAFF, status, given_up) == want


@pytest.mark.parametrize("status", ["pending", "running", "paused", "done", "incomplete"])
def test_an_evaluator_gets_every_campaign_control_disabled_with_a_reason(status) -> None:
    ctl = campaign_controls(Role.EVALUATOR, status, 2)
    assert not (ctl.pause or ctl.resume or ctl.requeue_enabled or ctl.cancel or ctl.priority)
    assert ctl.why and "Staff only" in ctl.why
    assert (ctl.requeue is not None) == (status == "incomplete")  # shown, disabled


def test_evaluator_aliases() -> None:
    names = ["ann", "bob", "cyd", "ann", "eve"]
    assert evaluator_aliases(names, Role.STAFF, "ann") == {n: n for n in names}
    assert evaluator_aliases(names, Role.EVALUATOR, "cyd") == {
        "ann": "evaluator 1", "bob": "evaluator 2", "cyd": "you", "eve": "evaluator 3"}
    assert evaluator_aliases(names, Role.EVALUATOR, None) == {
        "ann": "evaluator 1", "bob": "evaluator 2", "cyd": "evaluator 3", "eve": "evaluator 4"}
    assert evaluator_aliases([], Role.EVALUATOR, "eve") == {}


def test_the_rule_is_pure() -> None:
    """dashboard.visibility imports neither Streamlit nor SQL (checked in a fresh interpreter)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = ("import json, sys; import dashboard.visibility; "
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
              "{'streamlit', 'sqlalchemy', 'ray', 'zmq', 'torch'})))")
    out = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
