"""Pure campaign planning: protocol x policies x trials x seed -> an ordered list of trials.

Design (paired, blocked, blind):
- every policy gets the same set of (task, trial index, scene seed): a policy-vs-policy
  difference is never a difference in scenes;
- a *block* is one (task, trial index, scene seed) with every policy once, in random
  order; blocks are shuffled. Consecutive trials therefore alternate between policies, so
  drift over time (lighting, robot wear, battery) hits all policies alike;
- each policy gets a blind code ("P-7K2Q") so evaluators never see policy names.

Blind codes are an *input* (`blind_codes=`), never derived from the seed: the store draws them
per campaign with a CSPRNG (`draw_blind_codes(names, secrets.choice, avoid=...)`) and keeps
them unique store-wide, so a code learnt in one campaign says nothing about another.

Determinism: only `random.Random` seeded with integers derived through SHA-256 (never
`hash()`, which is salted per process), so the same inputs give the same plan in any
process. Scene seeds depend only on (seed, task key, trial index): adding a policy to a
campaign leaves the scenes unchanged.
"""

from __future__ import annotations

import hashlib
import operator
import random
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from protocols.schema import Category, Protocol

__all__ = [
    "BLIND_CODE_ALPHABET",
    "CampaignPlan",
    "GroupCount",
    "PlanSummary",
    "PlannedTrial",
    "PlanningError",
    "check_blind_codes",
    "draw_blind_codes",
    "plan_campaign",
    "summarize_plan",
]

#: No 0/O or 1/I: codes are read aloud and typed by people.
BLIND_CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
BLIND_CODE_LENGTH = 4
SCENE_SEED_BITS = 31  # fits a signed 32-bit SQL integer
BLIND_CODE_PATTERN = re.compile(rf"^P-[{BLIND_CODE_ALPHABET}]{{{BLIND_CODE_LENGTH}}}$")
_MAX_DRAWS = 10_000

#: One character from the alphabet it is given: `secrets.choice` in the store (a CSPRNG),
#: `random.Random(n).choice` in tests.
CharSource = Callable[[str], str]


class PlanningError(ValueError):
    """The campaign cannot be planned as asked (the message says which input is wrong)."""


@dataclass(frozen=True)
class PlannedTrial:
    order: int  # position in the campaign's run order, 0-based
    task_key: str
    policy: str
    blind_code: str
    trial_index: int  # 0-based, per (task, policy)
    scene_seed: int
    category: str
    difficulty: str | None


@dataclass(frozen=True)
class CampaignPlan:
    seed: int
    trials: tuple[PlannedTrial, ...]
    blind_codes: Mapping[str, str]  # policy name -> blind code, in the order given

    @property
    def policies(self) -> tuple[str, ...]:
        return tuple(self.blind_codes)

    def blocks(self) -> tuple[tuple[PlannedTrial, ...], ...]:
        """The trials grouped by block: consecutive runs of len(policies) trials."""
        size = len(self.blind_codes)
        return tuple(self.trials[i : i + size] for i in range(0, len(self.trials), size))


@dataclass(frozen=True)
class GroupCount:
    category: str
    difficulty: str | None
    tasks: int
    trials: int


@dataclass(frozen=True)
class PlanSummary:
    seed: int
    total_trials: int
    tasks: int
    blocks: int
    trials_per_task: int
    blind_codes: Mapping[str, str]
    trials_per_policy: Mapping[str, int]
    groups: tuple[GroupCount, ...]  # RT-2 order: category, then easy before hard

    def lines(self) -> list[str]:
        """Plain-text lines for printing."""
        out = [
            (
                f"seed {self.seed}: {self.total_trials} trials = {self.tasks} tasks x "
                f"{self.trials_per_task} trials x {len(self.blind_codes)} policies "
                f"({self.blocks} blocks)"
            ),
        ]
        for policy, code in self.blind_codes.items():
            out.append(f"  {code}  {policy}: {self.trials_per_policy.get(policy, 0)} trials")
        for group in self.groups:
            label = group.category + (f" / {group.difficulty}" if group.difficulty else "")
            out.append(f"  {label:<34} {group.tasks:>3} tasks {group.trials:>6} trials")
        return out


def plan_campaign(
    protocol: Protocol,
    policies: Sequence[str],
    trials_per_task: int | None = None,
    seed: int = 0,
    *,
    blind_codes: Mapping[str, str],
) -> CampaignPlan:
    """Plan every trial of a campaign. `trials_per_task` defaults to the protocol's.

    `blind_codes` (policy name -> code, one per policy) come from the caller (the store draws
    them at random, unique store-wide); the plan's order and scenes never depend on them.
    """
    names = _validated_policies(policies)
    trials = _as_int(
        protocol.trials_per_task if trials_per_task is None else trials_per_task,
        "trials per task",
    )
    if trials < 1:
        raise PlanningError(f"trials per task must be >= 1, got {trials}")
    seed = _as_int(seed, "seed")

    codes = check_blind_codes(names, blind_codes)
    blocks = [
        (task, index, scene_seed)
        for task in protocol.tasks
        for index, scene_seed in enumerate(_scene_seeds(seed, task.key, trials))
    ]
    rng = random.Random(_derive(seed, "order"))
    rng.shuffle(blocks)
    planned: list[PlannedTrial] = []
    for task, index, scene_seed in blocks:
        for policy in rng.sample(names, len(names)):
            planned.append(PlannedTrial(
                order=len(planned),
                task_key=task.key,
                policy=policy,
                blind_code=codes[policy],
                trial_index=index,
                scene_seed=scene_seed,
                category=task.category.value,
                difficulty=task.difficulty.value if task.difficulty else None,
            ))
    return CampaignPlan(seed=seed, trials=tuple(planned), blind_codes=codes)


def summarize_plan(plan: CampaignPlan) -> PlanSummary:
    per_policy = Counter(t.policy for t in plan.trials)
    group_trials = Counter((t.category, t.difficulty) for t in plan.trials)
    group_tasks = Counter(
        (category, difficulty)
        for category, difficulty, _ in {(t.category, t.difficulty, t.task_key) for t in plan.trials}
    )
    tasks = len({t.task_key for t in plan.trials})
    n_policies = max(len(plan.blind_codes), 1)
    blocks = len(plan.trials) // n_policies
    return PlanSummary(
        seed=plan.seed,
        total_trials=len(plan.trials),
        tasks=tasks,
        blocks=blocks,
        trials_per_task=blocks // tasks if tasks else 0,
        blind_codes=dict(plan.blind_codes),
        trials_per_policy={p: per_policy.get(p, 0) for p in plan.blind_codes},
        groups=tuple(
            GroupCount(category, difficulty, group_tasks[(category, difficulty)], n)
            for (category, difficulty), n in sorted(group_trials.items(), key=_group_order)
        ),
    )


def draw_blind_codes(
    policies: Sequence[str], choose: CharSource, *, avoid: Collection[str] = ()
) -> dict[str, str]:
    """A fresh blind code per policy, each drawn character by character from `choose`.

    Codes are distinct, not in `avoid` (e.g. the codes the store has already handed out) and
    reveal no policy name. Pure given `choose`: pass `secrets.choice` for real campaigns.
    """
    names = _validated_policies(policies)
    lowered = [n.lower() for n in names]
    taken = set(avoid)
    codes: dict[str, str] = {}
    for name in names:
        for _ in range(_MAX_DRAWS):
            code = "P-" + "".join(choose(BLIND_CODE_ALPHABET) for _ in range(BLIND_CODE_LENGTH))
            if code not in taken and not _reveals(code, lowered):
                codes[name] = code
                taken.add(code)
                break
        else:  # absurd names (one policy per letter), or a broken / exhausted code source
            raise PlanningError(
                f"cannot draw a free blind code that avoids every policy name for {name!r} "
                f"in {_MAX_DRAWS} draws; use longer policy names"
            )
    return codes


def check_blind_codes(policies: Sequence[str], codes: Mapping[str, str]) -> dict[str, str]:
    """The codes in policy order, or PlanningError naming what is wrong with them."""
    names = _validated_policies(policies)
    missing = [n for n in names if n not in codes]
    extra = sorted(set(codes) - set(names))
    if missing or extra:
        raise PlanningError(
            "blind codes must name exactly the campaign's policies; "
            + "; ".join(part for part in (
                f"missing: {', '.join(missing)}" if missing else "",
                f"unknown: {', '.join(extra)}" if extra else "") if part)
        )
    ordered = {n: codes[n] for n in names}
    lowered = [n.lower() for n in names]
    for name, code in ordered.items():
        if not isinstance(code, str) or not BLIND_CODE_PATTERN.match(code):
            raise PlanningError(
                f"blind code {code!r} for {name!r} is not of the form P-XXXX "
                f"(characters from {BLIND_CODE_ALPHABET})"
            )
        if _reveals(code, lowered):
            raise PlanningError(f"blind code {code} reveals a policy name; draw another")
    repeated = sorted({c for c in ordered.values() if list(ordered.values()).count(c) > 1})
    if repeated:
        raise PlanningError(f"blind codes must differ per policy; repeated: {', '.join(repeated)}")
    return ordered


# --- helpers ------------------------------------------------------------------------------


def _reveals(code: str, lowered_names: Sequence[str]) -> bool:
    body = code[2:].lower()
    return any(n in body or (len(n) > 2 and n in code.lower()) for n in lowered_names)


def _validated_policies(policies: Sequence[str]) -> list[str]:
    if isinstance(policies, str):
        raise PlanningError("policies must be a list of names, not one string")
    names = list(policies)
    if not names:
        raise PlanningError("a campaign needs at least one policy")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise PlanningError(f"policy names must be non-empty strings, got {name!r}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PlanningError(f"policy names must be unique; repeated: {', '.join(duplicates)}")
    return names


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise PlanningError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise PlanningError(f"{what} must be an integer, got {value!r}") from None


def _derive(seed: int, *labels: object) -> int:
    """A 64-bit integer from the seed and labels, stable across processes and platforms."""
    text = "\x1f".join([str(seed), *(str(label) for label in labels)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _scene_seeds(seed: int, task_key: str, count: int) -> list[int]:
    """`count` distinct scene seeds for one task."""
    seeds: list[int] = []
    attempt = 0
    while len(seeds) < count:
        value = _derive(seed, "scene", task_key, len(seeds), attempt) >> (64 - SCENE_SEED_BITS)
        if value in seeds:
            attempt += 1
            continue
        seeds.append(value)
    return seeds


_CATEGORY_RANK = {c.value: i for i, c in enumerate(Category)}
_DIFFICULTY_RANK = {None: 0, "easy": 1, "hard": 2}


def _group_order(item: tuple[tuple[str, str | None], int]) -> tuple[int, int, str]:
    (category, difficulty), _ = item
    return (
        _CATEGORY_RANK.get(category, len(_CATEGORY_RANK)),
        _DIFFICULTY_RANK.get(difficulty, 3),
        category,
    )
