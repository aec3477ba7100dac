"""Campaign planning: deterministic, paired, balanced, interleaved, blind (property tests)."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.loader import SHIPPED_PROTOCOLS_DIR, load_protocol
from protocols.planning import (
    BLIND_CODE_ALPHABET,
    CampaignPlan,
    PlanningError,
    check_blind_codes,
    draw_blind_codes,
    summarize_plan,
)
from protocols.planning import plan_campaign as _plan_campaign
from protocols.schema import Protocol

RT2: Protocol = load_protocol(SHIPPED_PROTOCOLS_DIR / "rt2_generalization.yaml").protocol
REPO_ROOT = Path(__file__).resolve().parents[2]
CODE_PATTERN = re.compile(rf"^P-[{BLIND_CODE_ALPHABET}]{{4}}$")

def plan_campaign(protocol, policies, trials=None, seed=0, code_seed=0):  # type: ignore[no-untyped-def]
    """The pure planner with blind codes drawn from a seeded stand-in for the store's CSPRNG."""
    codes = draw_blind_codes(policies, random.Random(code_seed).choice)
    return _plan_campaign(protocol, policies, trials, seed, blind_codes=codes)


policy_names = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=10),
    min_size=1, max_size=5, unique=True,
)
seeds = st.integers(min_value=-(2**40), max_value=2**40)
trial_counts = st.integers(min_value=1, max_value=4)


@st.composite
def protocols(draw: st.DrawFn) -> Protocol:
    keys = draw(st.lists(st.sampled_from([t.key for t in RT2.tasks]), min_size=1, max_size=8,
                         unique=True))
    return RT2.model_copy(update={"tasks": tuple(RT2.task(k) for k in keys)})


def _fingerprint(plan: CampaignPlan) -> list:
    return [[t.order, t.task_key, t.policy, t.blind_code, t.trial_index, t.scene_seed]
            for t in plan.trials]


PROPERTY = settings(max_examples=60, deadline=None)


@PROPERTY
@given(protocols(), policy_names, trial_counts, seeds)
def test_same_inputs_give_the_same_plan(protocol, policies, trials, seed) -> None:
    assert plan_campaign(protocol, policies, trials, seed) == plan_campaign(
        protocol, list(policies), trials, seed
    )


@PROPERTY
@given(protocols(), policy_names, trial_counts, seeds, seeds)
def test_different_seeds_give_different_plans(protocol, policies, trials, seed, other) -> None:
    if seed == other:
        return
    first = plan_campaign(protocol, policies, trials, seed)
    second = plan_campaign(protocol, policies, trials, other)
    assert _fingerprint(first) != _fingerprint(second)
    assert {t.scene_seed for t in first.trials} != {t.scene_seed for t in second.trials}


@PROPERTY
@given(protocols(), policy_names, trial_counts, seeds)
def test_plan_is_paired_and_balanced(protocol, policies, trials, seed) -> None:
    plan = plan_campaign(protocol, policies, trials, seed)
    n_tasks = len(protocol.tasks)
    assert len(plan.trials) == n_tasks * trials * len(policies)
    assert [t.order for t in plan.trials] == list(range(len(plan.trials)))
    per_policy = {
        p: Counter((t.task_key, t.trial_index, t.scene_seed) for t in plan.trials if t.policy == p)
        for p in policies
    }
    reference = per_policy[policies[0]]
    assert all(counter == reference for counter in per_policy.values())
    assert sum(reference.values()) == n_tasks * trials
    assert Counter((key, index) for key, index, _ in reference) == Counter(
        (task.key, i) for task in protocol.tasks for i in range(trials)
    )
    for task in protocol.tasks:  # distinct scenes within a task
        task_seeds = [s for key, _, s in reference if key == task.key]
        assert len(set(task_seeds)) == trials
        assert all(0 <= s < 2**31 for s in task_seeds)


@PROPERTY
@given(protocols(), policy_names, trial_counts, seeds)
def test_every_block_runs_all_policies_on_one_scene(protocol, policies, trials, seed) -> None:
    plan = plan_campaign(protocol, policies, trials, seed)
    blocks = plan.blocks()
    assert len(blocks) == len(protocol.tasks) * trials
    for block in blocks:
        assert sorted(t.policy for t in block) == sorted(policies)
        assert len({(t.task_key, t.trial_index, t.scene_seed) for t in block}) == 1
    if len(policies) > 1:  # interleaved: never more than two trials of a policy in a row
        run, longest = 1, 1
        for before, after in zip(plan.trials, plan.trials[1:], strict=False):
            run = run + 1 if before.policy == after.policy else 1
            longest = max(longest, run)
        assert longest <= 2


@PROPERTY
@given(protocols(), policy_names, trial_counts, seeds)
def test_blind_codes_are_unique_and_reveal_nothing(protocol, policies, trials, seed) -> None:
    plan = plan_campaign(protocol, policies, trials, seed)
    codes = plan.blind_codes
    assert list(codes) == list(policies)
    assert len(set(codes.values())) == len(policies)
    for code in codes.values():
        assert CODE_PATTERN.match(code), code
        for name in policies:
            assert name.lower() not in code[2:].lower()
            if len(name) > 2:
                assert name.lower() not in code.lower()
    for trial in plan.trials:
        assert trial.blind_code == codes[trial.policy]


@PROPERTY
@given(protocols(), trial_counts, seeds)
def test_trials_carry_their_tasks_category(protocol, trials, seed) -> None:
    plan = plan_campaign(protocol, ["a1", "b2"], trials, seed)
    for trial in plan.trials:
        task = protocol.task(trial.task_key)
        assert trial.category == task.category.value
        assert trial.difficulty == (task.difficulty.value if task.difficulty else None)


@PROPERTY
@given(protocols(), trial_counts, seeds)
def test_scene_seeds_do_not_depend_on_the_policies(protocol, trials, seed) -> None:
    alone = plan_campaign(protocol, ["solo"], trials, seed)
    together = plan_campaign(protocol, ["solo", "rival", "third"], trials, seed)

    def scenes(plan: CampaignPlan) -> set:
        return {(t.task_key, t.trial_index, t.scene_seed) for t in plan.trials}

    assert scenes(alone) == scenes(together)


def test_order_is_shuffled_across_tasks_and_within_blocks() -> None:
    plan = plan_campaign(RT2, ["alpha", "beta"], 4, seed=7)
    block_tasks = [b[0].task_key for b in plan.blocks()]
    protocol_order = [t.key for t in RT2.tasks for _ in range(4)]
    assert block_tasks != protocol_order
    firsts = Counter(b[0].policy for b in plan.blocks())
    assert firsts["alpha"] > 20 and firsts["beta"] > 20  # 132 blocks, ~66 each


def test_plan_is_the_same_in_another_process() -> None:
    plan = plan_campaign(RT2, ["rt1", "openvla", "pi0"], 2, seed=2024)
    script = (
        "import json; from protocols.loader import load_protocol; "
        "import random; from protocols.planning import plan_campaign, draw_blind_codes; "
        "p = load_protocol('protocols/rt2_generalization.yaml').protocol; "
        "names = ['rt1', 'openvla', 'pi0']; "
        "codes = draw_blind_codes(names, random.Random(0).choice); "
        "plan = plan_campaign(p, names, 2, seed=2024, blind_codes=codes); "
        "print(json.dumps([[t.order, t.task_key, t.policy, t.blind_code, t.trial_index, "
        "t.scene_seed] for t in plan.trials]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(result.stdout) == _fingerprint(plan)


def test_default_trials_come_from_the_protocol() -> None:
    plan = plan_campaign(RT2, ["a1"], seed=1)
    assert len(plan.trials) == len(RT2.tasks) * RT2.trials_per_task


@pytest.mark.parametrize(
    ("policies", "trials", "message"),
    [
        ([], 2, "at least one policy"),
        (["a1", "a1"], 2, "unique; repeated: a1"),
        (["a1", ""], 2, "non-empty strings"),
        ("a1", 2, "list of names"),
        (["a1"], 0, "must be >= 1, got 0"),
        (["a1"], -3, "must be >= 1"),
        (["a1"], True, "must be an integer"),
        (["a1"], 2.5, "must be an integer"),
    ],
)
def test_invalid_inputs_are_refused(policies, trials, message) -> None:
    with pytest.raises(PlanningError, match=re.escape(message)):
        plan_campaign(RT2, policies, trials, seed=0)


def test_summary_counts() -> None:
    plan = plan_campaign(RT2, ["a1", "b2", "c3"], 2, seed=3)
    summary = summarize_plan(plan)
    n_tasks = len(RT2.tasks)
    assert summary.total_trials == n_tasks * 2 * 3
    assert summary.tasks == n_tasks and summary.blocks == n_tasks * 2
    assert summary.trials_per_task == 2
    assert summary.trials_per_policy == {"a1": n_tasks * 2, "b2": n_tasks * 2, "c3": n_tasks * 2}
    assert sum(g.trials for g in summary.groups) == summary.total_trials
    assert sum(g.tasks for g in summary.groups) == n_tasks
    assert summary.groups[0].category == "seen"
    assert [(g.category, g.difficulty) for g in summary.groups[1:3]] == [
        ("unseen_objects", "easy"), ("unseen_objects", "hard"),
    ]
    text = "\n".join(summary.lines())
    assert f"{summary.total_trials} trials" in text and plan.blind_codes["a1"] in text


# --- blind codes: an input drawn at random, never derived from the seed -------------------------


@PROPERTY
@given(protocols(), policy_names, trial_counts, seeds, st.integers(0, 2**32), st.integers(0, 2**32))
def test_the_plan_does_not_depend_on_the_codes(protocol, policies, trials, seed, a, b) -> None:
    first = plan_campaign(protocol, policies, trials, seed, code_seed=a)
    second = plan_campaign(protocol, policies, trials, seed, code_seed=b)

    def shape(plan: CampaignPlan) -> list:
        return [(t.order, t.task_key, t.policy, t.trial_index, t.scene_seed) for t in plan.trials]

    assert shape(first) == shape(second)
    if a != b:  # the codes come from the code source, not from the seed
        assert first.blind_codes != second.blind_codes


def test_same_seed_with_fresh_codes_gives_other_codes() -> None:
    """Two campaigns with the default seed: the codes differ as soon as the draws differ."""
    import secrets

    codes = [draw_blind_codes(["alpha", "beta"], secrets.choice) for _ in range(20)]
    assert len({c["alpha"] for c in codes}) > 15  # 32**4 codes: repeats are rare


@PROPERTY
@given(policy_names, st.integers(0, 2**32))
def test_drawn_codes_avoid_the_taken_ones(policies, n) -> None:
    taken = set(draw_blind_codes(policies, random.Random(n).choice).values())
    codes = draw_blind_codes(policies, random.Random(n).choice, avoid=taken)  # same draws
    assert not taken & set(codes.values())
    assert check_blind_codes(policies, codes) == codes


def test_an_exhausted_code_source_is_a_clear_error() -> None:
    only = itertools.cycle("2")  # always "P-2222"
    with pytest.raises(PlanningError, match="cannot draw a free blind code"):
        draw_blind_codes(["a1"], lambda _alphabet: next(only), avoid={"P-2222"})


def test_codes_never_spell_a_policy_name() -> None:
    letters = itertools.cycle("ABCD2345")  # P-ABCD first, which spells the policy "abcd"
    codes = draw_blind_codes(["abcd"], lambda _alphabet: next(letters))
    assert codes["abcd"] != "P-ABCD" and "abcd" not in codes["abcd"].lower()


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        ({"a1": "P-2345"}, "missing: b2"),
        ({"a1": "P-2345", "b2": "P-2346", "c3": "P-2347"}, "unknown: c3"),
        ({"a1": "P-2345", "b2": "P-2345"}, "repeated: P-2345"),
        ({"a1": "P-23O5", "b2": "P-2346"}, "not of the form P-XXXX"),
        ({"a1": "X-2345", "b2": "P-2346"}, "not of the form P-XXXX"),
        ({"a1": "P-2345", "b2": "P-XY9C"}, None),
    ],
)
def test_given_codes_are_checked(codes, message) -> None:
    if message is None:
        assert check_blind_codes(["a1", "b2"], codes) == codes
        return
    with pytest.raises(PlanningError, match=re.escape(message)):
        _plan_campaign(RT2, ["a1", "b2"], 1, 0, blind_codes=codes)


def test_a_revealing_code_is_refused() -> None:
    with pytest.raises(PlanningError, match="reveals a policy name"):
        check_blind_codes(["abc", "zz"], {"abc": "P-ABC2", "zz": "P-2345"})
