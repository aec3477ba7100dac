"""Inter-evaluator agreement from human labels (pure; kappas from protocols.stats).

Two evaluators: Cohen's kappa over the episodes both labeled. More: Fleiss' kappa over the
episodes labeled by the most common number of evaluators (>= 2), since Fleiss' kappa needs the
same number of ratings per item.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Protocol

from protocols.stats import cohen_kappa, fleiss_kappa


class VoteLike(Protocol):
    episode_id: int
    evaluator: str
    success: bool


@dataclass(frozen=True)
class Agreement:
    method: str  # "Cohen's kappa" | "Fleiss' kappa" | "none"
    kappa: float | None  # None: undefined or not enough overlap
    evaluators: tuple[str, ...]
    episodes: int  # episodes the kappa is computed over
    raw_agreement: float | None  # share of those episodes on which all evaluators agree
    note: str = ""


@dataclass(frozen=True)
class PairAgreement:
    a: str
    b: str
    episodes: int
    kappa: float | None


def _by_episode(votes: Iterable[VoteLike]) -> dict[int, dict[str, bool]]:
    out: dict[int, dict[str, bool]] = {}
    for v in votes:
        out.setdefault(v.episode_id, {})[v.evaluator] = bool(v.success)
    return out


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


def agreement(votes: Sequence[VoteLike]) -> Agreement:
    multi = {e: r for e, r in _by_episode(votes).items() if len(r) >= 2}
    if not multi:
        return Agreement("none", None, (), 0, None,
                         "no episode has labels from two evaluators yet")
    raters = tuple(sorted({who for r in multi.values() for who in r}))
    if len(raters) == 2:
        a, b = raters
        items = list(multi.values())
        kappa = _finite(cohen_kappa([r[a] for r in items], [r[b] for r in items]))
        raw = sum(r[a] == r[b] for r in items) / len(items)
        note = "" if kappa is not None else "undefined: both gave one and the same answer"
        return Agreement("Cohen's kappa", kappa, raters, len(items), raw, note)
    sizes = Counter(len(r) for r in multi.values())
    k = max(sizes, key=lambda n: (sizes[n], n))
    items = [r for r in multi.values() if len(r) == k]
    table = [[sum(r.values()), k - sum(r.values())] for r in items]
    kappa = _finite(fleiss_kappa(table))
    raw = sum(1 for yes, no in table if yes == 0 or no == 0) / len(items)
    note = f"over the {len(items)} episodes with exactly {k} evaluators"
    if kappa is None:
        note += "; undefined: every answer was the same"
    used = tuple(sorted({who for r in items for who in r}))
    return Agreement("Fleiss' kappa", kappa, used, len(items), raw, note)


def pairwise(votes: Sequence[VoteLike]) -> list[PairAgreement]:
    """Cohen's kappa for every pair of evaluators over the episodes both labeled."""
    by_ep = _by_episode(votes)
    raters = sorted({who for r in by_ep.values() for who in r})
    out = []
    for a, b in combinations(raters, 2):
        both = [r for r in by_ep.values() if a in r and b in r]
        kappa = _finite(cohen_kappa([r[a] for r in both], [r[b] for r in both])) if both else None
        out.append(PairAgreement(a, b, len(both), kappa))
    return out
