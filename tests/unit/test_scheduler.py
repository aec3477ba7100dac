"""orchestrator.scheduler's pure core: which pending trial goes to which idle arm."""

from __future__ import annotations

import pytest

from orchestrator.scheduler import (
    ArmState,
    Assignment,
    TrialCandidate,
    assign,
    backoff_s,
    can_run,
)

DRAWER = frozenset({"drawer"})


def cand(tid: int, *, campaign: int = 1, priority: int = 0, order: int | None = None,
         scene: str = "s0", needs: tuple[str, ...] = ()) -> TrialCandidate:
    return TrialCandidate(
        trial_id=tid, campaign_id=campaign, campaign_priority=priority,
        campaign_created_ns=campaign, plan_order=tid if order is None else order,
        task_key=f"task-{scene}", station_needs=needs, scene_key=scene,
        policy_name="p", policy_id=1,
    )


def arm(name: str, *, caps: frozenset[str] = DRAWER, online: bool = True, busy: bool = False,
        scene: str | None = None) -> ArmState:
    return ArmState(name=name, station="default", capabilities=caps, online=online, busy=busy,
                    scene_key=scene)


def by_arm(plan: list[Assignment]) -> dict[str, int]:
    return {a.arm: a.trial_id for a in plan}


def test_takes_candidates_in_the_order_given_priority_first() -> None:
    # the store hands candidates sorted by priority, age, plan order; fresh arms take the head
    cands = [cand(10, campaign=2, priority=5), cand(11, campaign=2, priority=5),
             cand(1, campaign=1, priority=0)]
    plan = assign(cands, [arm("a"), arm("b")])
    assert sorted(a.trial_id for a in plan) == [10, 11]
    assert all(not a.reuses_setup for a in plan)


def test_lower_priority_only_when_nothing_higher_fits() -> None:
    cands = [cand(10, campaign=2, priority=5, needs=("drawer",)), cand(1, campaign=1)]
    plan = assign(cands, [arm("plain", caps=frozenset())])
    assert by_arm(plan) == {"plain": 1}
    plan = assign(cands, [arm("plain", caps=frozenset()), arm("kitchen")])
    assert by_arm(plan) == {"plain": 1, "kitchen": 10}


def test_capabilities_must_cover_the_task_needs() -> None:
    c = cand(1, needs=("drawer", "sink"))
    assert not can_run(arm("a"), c)
    assert can_run(arm("a", caps=frozenset({"drawer", "sink", "extra"})), c)
    assert assign([c], [arm("a"), arm("b", caps=frozenset())]) == []


def test_setup_affinity_within_the_lookahead_window() -> None:
    cands = [cand(1, scene="x"), cand(2, scene="y"), cand(3, scene="z")]
    # arm already set up for "z": takes trial 3 (in the window) instead of the head, no reset
    (a,) = assign(cands, [arm("a", scene="z")], lookahead=3)
    assert a == Assignment(3, "a", True)
    # beyond the window the plan order wins
    (a,) = assign(cands, [arm("a", scene="z")], lookahead=2)
    assert a == Assignment(1, "a", False)


def test_affinity_never_jumps_to_another_campaign() -> None:
    cands = [cand(1, campaign=1, priority=5, scene="x"), cand(2, campaign=2, priority=0,
                                                              scene="z")]
    (a,) = assign(cands, [arm("a", scene="z")], lookahead=10)
    assert a.trial_id == 1


def test_arms_with_a_setup_choose_first_and_a_trial_goes_to_one_arm_only() -> None:
    cands = [cand(1, scene="x"), cand(2, scene="y")]
    plan = assign(cands, [arm("fresh"), arm("has-y", scene="y")])
    assert by_arm(plan) == {"has-y": 2, "fresh": 1}
    many = [cand(i, scene="same") for i in range(1, 4)]
    arms = [arm(f"a{i}", scene="same") for i in range(6)]
    plan = assign(many, arms)
    assert sorted(a.trial_id for a in plan) == [1, 2, 3]  # 3 trials, 6 arms: 3 assignments
    assert len({a.arm for a in plan}) == 3


def test_offline_and_busy_arms_are_skipped() -> None:
    cands = [cand(1), cand(2), cand(3)]
    arms = [arm("off", online=False), arm("busy", busy=True), arm("idle")]
    assert by_arm(assign(cands, arms)) == {"idle": 1}
    assert assign(cands, [arm("off", online=False), arm("busy", busy=True)]) == []
    assert assign([], [arm("idle")]) == []


def test_backoff_doubles_from_half_a_second_and_is_capped() -> None:
    assert [backoff_s(n) for n in range(6)] == [0.5, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert backoff_s(50) == 30.0
    assert backoff_s(3, base=1.0, cap=3.0) == 3.0


@pytest.mark.parametrize("n_arms", [1, 3, 8])
def test_assignment_is_a_partial_matching(n_arms: int) -> None:
    cands = [cand(i, campaign=1 + i % 2, priority=i % 2, scene=f"s{i % 3}",
                  needs=("drawer",) if i % 4 == 0 else ()) for i in range(1, 12)]
    arms = [arm(f"a{i}", caps=DRAWER if i % 2 else frozenset(), scene=f"s{i % 3}")
            for i in range(n_arms)]
    plan = assign(cands, arms)
    assert len({a.trial_id for a in plan}) == len(plan) == len({a.arm for a in plan})
    assert len(plan) == min(n_arms, len(cands))
    caps = {a.name: a.capabilities for a in arms}
    needs = {c.trial_id: set(c.station_needs) for c in cands}
    assert all(needs[a.trial_id] <= caps[a.arm] for a in plan)


def test_scheduler_core_is_pure() -> None:
    """Importing the scheduler pulls in no ray, zmq, sqlalchemy, torch or streamlit."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = ("import json, sys, orchestrator.scheduler\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
              "{'ray', 'zmq', 'sqlalchemy', 'torch', 'streamlit'})))")
    out = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2],
                         capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
