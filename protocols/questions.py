"""A campaign's declared questions, the pure part: the `--question` SPEC parser, which trials a
question covers, the order outcomes reach the test, and a question's standing (pure).

SPEC (`evalfleet campaign create --question SPEC`, repeatable):

    pair:A,B[;key=value...]         A against B on matched blocks (protocols.sequential)
    threshold:A@P0[;key=value...]   A's success rate against P0 in (0, 1)

keys: category (a task category; default: every task), alpha, power, min_effect, cap,
discordance (pairs' planning P(a != b)), one_sided (a flag: A better than B / above P0 only).
A policy is written as given to `--policy` (`name` or `name@version`); the threshold follows
the last `@`.

The orchestrator (orchestrator.store.questions) reads the outcomes and writes the standing;
everything that decides something is here and in protocols.sequential.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from protocols.sequential import (
    Decision,
    Question,
    QuestionKind,
    SequentialState,
    start,
    update,
)

__all__ = [
    "SPEC_KEYS",
    "QuestionSpec",
    "ResolvedOutcome",
    "Scope",
    "SpecError",
    "Standing",
    "StoredStanding",
    "covered",
    "late_count",
    "not_needed",
    "ordered_outcomes",
    "parse_spec",
    "resolved_success",
    "scope_cap",
    "standing",
]

SPEC_KEYS = ("category", "alpha", "power", "min_effect", "cap", "discordance", "one_sided")
_FLOAT_KEYS = ("alpha", "power", "min_effect", "discordance")
DEFAULT_CAP = 200  # protocols.sequential.Question's; lowered to what the plan has
DEFAULT_DISCORDANCE = 0.4


class SpecError(ValueError):
    """A bad --question SPEC: one line naming the bad part and what is accepted."""


@dataclass(frozen=True)
class QuestionSpec:
    """A parsed SPEC: policies as written, the scope and the error rates given (None: the
    default of protocols.sequential.Question)."""

    kind: QuestionKind
    policy_a: str
    policy_b: str | None = None
    threshold: float | None = None
    category: str | None = None  # None: overall
    alpha: float | None = None
    power: float | None = None
    min_effect: float | None = None
    cap: int | None = None
    discordance: float | None = None
    two_sided: bool = True

    def question(self, cap: int) -> Question:
        """The sequential question with this cap (protocols.sequential validates the rates)."""
        given = {k: v for k, v in (("alpha", self.alpha), ("power", self.power),
                                   ("min_effect", self.min_effect)) if v is not None}
        if self.kind is QuestionKind.PAIR:
            effect = self.min_effect if self.min_effect is not None else 0.2
            disc = (self.discordance if self.discordance is not None
                    else max(DEFAULT_DISCORDANCE, effect))
            return Question.pair(cap=cap, two_sided=self.two_sided, discordance=disc, **given)
        assert self.threshold is not None
        return Question.against_threshold(self.threshold, cap=cap, two_sided=self.two_sided,
                                          **given)


def _number(spec: str, key: str, raw: str, kind: type) -> float:
    try:
        return float(kind(raw))
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise SpecError(f"--question {spec!r}: {key}={raw!r} is not {what}") from None


def parse_spec(spec: str) -> QuestionSpec:
    """Parse one --question SPEC; SpecError (one line) names the bad part."""
    head, *options = [p.strip() for p in spec.split(";")]
    kind_text, sep, who = head.partition(":")
    kinds = [k.value for k in QuestionKind]
    if not sep or kind_text.strip() not in kinds:
        raise SpecError(f"--question {spec!r}: starts with pair:A,B or threshold:A@P0 "
                        f"(kinds: {', '.join(kinds)})")
    kind = QuestionKind(kind_text.strip())
    fields: dict[str, object] = {}
    if kind is QuestionKind.PAIR:
        names = [n.strip() for n in who.split(",")]
        if len(names) != 2 or not all(names):
            raise SpecError(f"--question {spec!r}: pair takes two policies, pair:A,B")
        if names[0] == names[1]:
            raise SpecError(f"--question {spec!r}: pair compares two different policies")
        fields.update(policy_a=names[0], policy_b=names[1])
    else:
        name, at, p0 = who.rpartition("@")
        if not at or not name.strip():
            raise SpecError(f"--question {spec!r}: threshold takes one policy and a rate, "
                            "threshold:A@0.5")
        fields.update(policy_a=name.strip(), threshold=_number(spec, "threshold", p0, float))
    for opt in options:
        if not opt:
            continue
        key, eq, value = (x.strip() for x in opt.partition("="))
        if key not in SPEC_KEYS:
            raise SpecError(f"--question {spec!r}: unknown key {key!r} (keys: "
                            f"{', '.join(SPEC_KEYS)})")
        if key in fields or (key == "one_sided" and "two_sided" in fields):
            raise SpecError(f"--question {spec!r}: {key} given twice")
        if key == "one_sided":
            if eq:
                raise SpecError(f"--question {spec!r}: one_sided is a flag, without a value")
            fields["two_sided"] = False
            continue
        if not eq or not value:
            raise SpecError(f"--question {spec!r}: {key} needs a value, {key}=...")
        if key == "category":
            fields[key] = value
        elif key == "cap":
            cap = int(_number(spec, key, value, int))
            if cap < 1:
                raise SpecError(f"--question {spec!r}: cap={value} must be >= 1")
            fields[key] = cap
        else:
            fields[key] = _number(spec, key, value, float)
    return QuestionSpec(kind, **fields)  # type: ignore[arg-type]


# --- which trials a question covers ----------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Which trials a question covers: its policies (campaign policy ids) and its category
    (None: every task), and whether it is still running."""

    question_id: int
    policies: frozenset[int]
    category: str | None
    running: bool
    decided_at: float = 0.0  # when it was decided (a timestamp); the later one wins ties


def covered(scope: Scope, policy: int, category: str) -> bool:
    """A trial is covered by a question if its policy is one of the question's and its task is
    in the question's category (or the question is overall)."""
    return policy in scope.policies and (scope.category is None or scope.category == category)


def not_needed(scopes: Sequence[Scope], policy: int, category: str) -> int | None:
    """The question a pending trial is no longer needed for, or None: a trial is not needed
    once it is covered by at least one question and every question covering it is decided;
    trials no question covers are the fixed plan and still run. Returns the covering question
    decided last (its `trials_saved` counts the trial)."""
    mine = [sc for sc in scopes if covered(sc, policy, category)]
    if not mine or any(sc.running for sc in mine):
        return None
    return max(mine, key=lambda sc: (sc.decided_at, sc.question_id)).question_id


def scope_cap(given: int | None, planned: int) -> int:
    """The question's cap: the given cap (default DEFAULT_CAP), but never more than the plan
    has in the question's scope (blocks for pairs, trials for a threshold)."""
    return max(1, min(given if given is not None else DEFAULT_CAP, planned))


# --- outcomes in the order they resolved -----------------------------------------------------


def resolved_success(human_yes: int, human_no: int, sim_yes: int, sim_no: int) -> bool | None:
    """The report's rule (v_episode_outcomes, protocols.stats.resolve_outcome): human labels
    override the simulator's, the majority decides, a tie is disputed (None), no votes is
    unlabeled (None). Auto labels never enter here."""
    if human_yes + human_no > 0:
        return None if human_yes == human_no else human_yes > human_no
    if sim_yes + sim_no > 0:
        return None if sim_yes == sim_no else sim_yes > sim_no
    return None


@dataclass(frozen=True)
class ResolvedOutcome:
    """A counted episode of a question's scope with a resolved outcome, and when it resolved
    (the human label deciding it, else the episode's end)."""

    episode_id: int
    policy: int  # campaign policy id
    task_id: int
    trial_index: int
    success: bool
    resolved_at: datetime


def ordered_outcomes(kind: QuestionKind, policy_a: int, policy_b: int | None,
                     outcomes: Iterable[ResolvedOutcome]) -> list[bool | tuple[bool, bool]]:
    """What the test is fed, in the order it resolved: a threshold question policy a's
    outcomes; a pair question its matched blocks (task, trial index: both resolved), at the
    later of the two. Ties are broken by episode ids, so the order is deterministic."""
    if kind is QuestionKind.THRESHOLD:
        mine = sorted((o for o in outcomes if o.policy == policy_a),
                      key=lambda o: (o.resolved_at, o.episode_id))
        return [o.success for o in mine]
    sides: dict[tuple[int, int], dict[int, ResolvedOutcome]] = {}
    for o in outcomes:
        if o.policy in (policy_a, policy_b):
            sides.setdefault((o.task_id, o.trial_index), {})[o.policy] = o
    blocks = []
    for pair in sides.values():
        if policy_a in pair and policy_b in pair:
            a, b = pair[policy_a], pair[policy_b]
            later = max((a.resolved_at, a.episode_id), (b.resolved_at, b.episode_id))
            blocks.append((later, min(a.episode_id, b.episode_id), (a.success, b.success)))
    blocks.sort(key=lambda x: (x[0], x[1]))
    return [ab for _, _, ab in blocks]


# --- a question's standing -------------------------------------------------------------------


@dataclass(frozen=True)
class StoredStanding:
    """What the store holds of a question's standing."""

    state: Decision
    outcomes: int
    decided_after: int | None


@dataclass(frozen=True)
class Standing:
    """A question's standing after its resolved outcomes: what the store writes."""

    state: Decision
    outcomes: int  # outcomes the test used
    late: int  # resolved after the decision (not used)
    e_value: float  # the deciding e-process's: futility for no difference, else efficacy
    decided_after: int | None
    newly_decided: bool  # decided now (log it once)


def _evidence(state: SequentialState) -> float:
    if state.decided is Decision.NO_DIFFERENCE:
        return state.futility_e_value
    return state.e_value


def standing(question: Question, stored: StoredStanding,
             outcomes: Sequence[bool | tuple[bool, bool]]) -> Standing | None:
    """The new standing, replaying every resolved outcome in order while the question runs;
    None for a decided question (sticky: the caller only updates its `late` count,
    `late_count`)."""
    if stored.state is not Decision.RUNNING:
        return None
    state = start(question)
    for outcome in outcomes:
        state = update(state, outcome)
    decided = state.decided is not Decision.RUNNING
    return Standing(state.decided, state.trials, state.late, _evidence(state),
                    state.trials if decided else None, decided)


def late_count(stored: StoredStanding, resolved: int) -> int:
    """A decided question's late outcomes: resolved ones beyond those it was decided on."""
    used = stored.decided_after if stored.decided_after is not None else stored.outcomes
    return max(0, resolved - used)

