"""The RT-2-style report, built from the campaign design: cells, paired comparisons, accounts.

Rows (RT-2 order): seen; unseen objects / backgrounds / environments, each easy and hard;
unseen (all); symbol understanding, reasoning, human recognition; emergent (all); overall.
Columns: policies, keyed by policy id (never by blind code), so any set of campaigns can be
reported together; a policy may carry a different code in each campaign. Blind reports show
codes instead of names and campaign ids instead of campaign names.

Input is one BlockCount per distinct (campaign, task, block outcome pattern): a block is a
task, trial index and scene seed that every policy of the campaign runs once. From them:
- cells: resolved outcomes (n), with disputed and unlabeled episodes counted beside n; a row
  pooling several tasks gets a task-clustered interval (protocols.clustered);
- every pair of policies per row: exact McNemar on matched blocks (both resolved), or an
  unpaired exact test on request; Holm-adjusted across all pairwise tests in the report;
- with > 2 policies, Cochran's Q per row on blocks where every policy is resolved (Holm
  across rows, a family of its own);
- per campaign and policy, planned trials vs counted episodes, and blocks whose pairing is
  broken (not every policy of the campaign has a counted, resolved episode).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import combinations

from protocols.clustered import clustered_rate
from protocols.multiplicity import holm
from protocols.paired import CochranQ, PairedCounts, cochrans_q, mcnemar_exact
from protocols.schema import CATEGORIES_BY_SPLIT, Category, Difficulty, Split
from protocols.stats import SuccessRate, TestName, compare_rates

__all__ = [
    "OUTCOMES",
    "ROW_SPECS",
    "TEST_NAMES",
    "BlockCount",
    "CampaignAccount",
    "CampaignDesign",
    "CampaignPolicy",
    "Omnibus",
    "PairComparison",
    "PolicyAccount",
    "PolicyColumn",
    "Report",
    "ReportRow",
    "build_report",
]

OUTCOMES = ("success", "failure", "disputed", "unlabeled")
TEST_NAMES: dict[str, str] = {
    "mcnemar": "exact McNemar test on matched blocks (two-sided)",
    "fisher": "Fisher's exact test, unpaired (two-sided; ignores the blocks)",
    "barnard": "Barnard's exact test, unpaired (two-sided; ignores the blocks)",
}


# --- input -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignPolicy:
    """A policy as one campaign runs it: its code there and the trials planned for it."""

    policy_id: int
    name: str
    version: str
    code: str
    position: int
    planned: int  # trials in the campaign's plan (every status, cancelled included)


@dataclass(frozen=True)
class CampaignDesign:
    campaign_id: int
    name: str
    planned_blocks: int
    policies: tuple[CampaignPolicy, ...]  # in the campaign's position order


@dataclass(frozen=True)
class BlockCount:
    """n blocks of one campaign and task whose counted episodes ended the same way."""

    campaign_id: int
    task: str
    category: str
    difficulty: str | None
    outcomes: tuple[tuple[int, str], ...]  # (policy id, outcome) per counted episode
    n: int


# --- output ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyColumn:
    key: str  # unique in the report: "name@version", or the codes when blind
    header: str  # what tables show: the name (with @version if ambiguous), or codes if blind
    name: str  # the policy name; its codes when blind
    policy_id: int | None  # None when blind
    codes: tuple[tuple[str, str], ...]  # (campaign, code) for each campaign that ran it


@dataclass(frozen=True)
class PairComparison:
    a: int  # column indexes, a < b
    b: int
    test: str
    p_value: float | None  # None when there is nothing to test
    p_holm: float | None  # Holm-adjusted across every pairwise test in the report
    difference: float | None  # a - b: paired (on matched blocks) for mcnemar, else pooled
    paired: PairedCounts | None  # the matched blocks (mcnemar only)


@dataclass(frozen=True)
class Omnibus:
    q: CochranQ
    p_holm: float | None  # Holm-adjusted across the rows' omnibus tests


@dataclass(frozen=True)
class ReportRow:
    key: str  # stable id: "seen", "unseen_objects/easy", "unseen", "overall", ...
    label: str
    categories: tuple[str, ...]  # what the row pools
    difficulty: str | None  # set only on easy/hard rows
    aggregate: bool
    cells: tuple[SuccessRate, ...]  # one per policy, in Report.policies order
    comparisons: tuple[PairComparison, ...]  # every pair of policies
    omnibus: Omnibus | None  # Cochran's Q; None with < 3 policies

    def comparison(self, a: int, b: int) -> PairComparison:
        for c in self.comparisons:
            if (c.a, c.b) == (a, b):
                return c
        raise KeyError(f"row {self.key!r} has no comparison of columns {a} and {b}")


@dataclass(frozen=True)
class PolicyAccount:
    column: int
    code: str
    planned: int
    counted: int
    resolved: int
    disputed: int
    unlabeled: int


@dataclass(frozen=True)
class CampaignAccount:
    campaign_id: int
    name: str
    planned_blocks: int
    complete_blocks: int  # every policy of the campaign counted and resolved
    policies: tuple[PolicyAccount, ...]

    @property
    def broken_blocks(self) -> int:
        return self.planned_blocks - self.complete_blocks

    @property
    def incomplete(self) -> bool:
        return self.broken_blocks > 0 or any(p.counted < p.planned for p in self.policies)


@dataclass(frozen=True)
class Report:
    policies: tuple[PolicyColumn, ...]
    rows: tuple[ReportRow, ...]
    test: str
    title: str = ""
    blind: bool = False
    campaigns: tuple[CampaignAccount, ...] = ()

    def row(self, key: str) -> ReportRow:
        for row in self.rows:
            if row.key == key:
                return row
        raise KeyError(f"report has no row {key!r} (rows: {', '.join(r.key for r in self.rows)})")

    def pair_label(self, c: PairComparison) -> str:
        return f"{self.policies[c.a].header} vs {self.policies[c.b].header}"


# --- rows --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RowSpec:
    key: str
    label: str
    categories: tuple[str, ...]
    difficulty: str | None = None
    aggregate: bool = False


def _row_specs() -> tuple[_RowSpec, ...]:
    unseen = tuple(c.value for c in CATEGORIES_BY_SPLIT[Split.UNSEEN])
    emergent = tuple(c.value for c in CATEGORIES_BY_SPLIT[Split.EMERGENT])
    specs = [_RowSpec("seen", "seen", (Category.SEEN.value,))]
    for category in unseen:
        for difficulty in Difficulty:
            specs.append(_RowSpec(
                f"{category}/{difficulty.value}", f"{category} / {difficulty.value}",
                (category,), difficulty.value,
            ))
    specs.append(_RowSpec("unseen", "unseen (all)", unseen, aggregate=True))
    specs.extend(_RowSpec(category, category, (category,)) for category in emergent)
    specs.append(_RowSpec("emergent", "emergent (all)", emergent, aggregate=True))
    specs.append(_RowSpec("overall", "overall", tuple(c.value for c in Category), aggregate=True))
    return tuple(specs)


ROW_SPECS = _row_specs()
_KNOWN_CATEGORIES = frozenset(c.value for c in Category)


def _campaign_label(design: CampaignDesign, blind: bool) -> str:
    """Blind reports name campaigns by id: a campaign's name may name its policies."""
    return f"#{design.campaign_id}" if blind else design.name


def _columns(designs: Sequence[CampaignDesign], blind: bool) -> list[PolicyColumn]:
    order: dict[int, CampaignPolicy] = {}
    codes: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for design in designs:
        for p in sorted(design.policies, key=lambda p: p.position):
            order.setdefault(p.policy_id, p)
            codes[p.policy_id].append((_campaign_label(design, blind), p.code))
    names = [p.name for p in order.values()]
    columns = []
    for pid, p in order.items():
        pcodes = tuple(codes[pid])
        if blind:
            label = "/".join(dict.fromkeys(code for _, code in pcodes))
            columns.append(PolicyColumn(label, label, label, None, pcodes))
        else:
            header = p.name if names.count(p.name) == 1 else f"{p.name}@{p.version}"
            columns.append(PolicyColumn(f"{p.name}@{p.version}", header, p.name, pid, pcodes))
    if blind and len({c.key for c in columns}) != len(columns):  # legacy non-unique codes
        columns = [
            PolicyColumn(lbl, lbl, lbl, None, c.codes)
            for c in columns
            for lbl in ["/".join(f"{camp}:{code}" for camp, code in c.codes)]
        ]
    return columns


def _check_blocks(blocks: Sequence[BlockCount], designs: Sequence[CampaignDesign]) -> None:
    known = {d.campaign_id: {p.policy_id for p in d.policies} for d in designs}
    for b in blocks:
        if b.category not in _KNOWN_CATEGORIES:
            raise ValueError(
                f"task {b.task!r} has unknown category {b.category!r} "
                f"(expected one of: {', '.join(c.value for c in Category)})")
        if b.campaign_id not in known:
            raise ValueError(f"episodes of campaign #{b.campaign_id}, which is not in the report")
        for pid, outcome in b.outcomes:
            if pid not in known[b.campaign_id]:
                raise ValueError(f"episode of policy #{pid} in campaign #{b.campaign_id}, "
                                 "which does not run it")
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r} (expected: {', '.join(OUTCOMES)})")
        if b.n < 0:
            raise ValueError(f"block counts must be >= 0, got {b.n}")


def _in_row(spec: _RowSpec, b: BlockCount) -> bool:
    return b.category in spec.categories and (
        spec.difficulty is None or b.difficulty == spec.difficulty)


def _cell(blocks: Sequence[BlockCount], pid: int) -> SuccessRate:
    per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    disputed = unlabeled = 0
    for b in blocks:
        for p, outcome in b.outcomes:
            if p != pid:
                continue
            if outcome in ("success", "failure"):
                tally = per_task[b.task]
                tally[0] += b.n if outcome == "success" else 0
                tally[1] += b.n
            elif outcome == "disputed":
                disputed += b.n
            else:
                unlabeled += b.n
    return clustered_rate([(k, n) for k, n in per_task.values()],
                          disputed=disputed, unlabeled=unlabeled)


def _resolved(b: BlockCount) -> dict[int, bool]:
    return {p: o == "success" for p, o in b.outcomes if o in ("success", "failure")}


def _paired(blocks: Sequence[BlockCount], pa: int, pb: int) -> PairedCounts:
    counts = [0, 0, 0, 0]  # both, a only, b only, neither
    for b in blocks:
        r = _resolved(b)
        if pa not in r or pb not in r:
            continue
        a, o = r[pa], r[pb]
        counts[0 if a and o else 1 if a else 2 if o else 3] += b.n
    return PairedCounts(*counts)


def _omnibus(blocks: Sequence[BlockCount], pids: Sequence[int]) -> CochranQ:
    patterns: dict[tuple[bool, ...], int] = defaultdict(int)
    for b in blocks:
        r = _resolved(b)
        if all(p in r for p in pids):
            patterns[tuple(r[p] for p in pids)] += b.n
    return cochrans_q([(k, v) for k, v in sorted(patterns.items()) if v > 0])


def _accounts(blocks: Sequence[BlockCount], designs: Sequence[CampaignDesign],
              column_of: dict[int, int], blind: bool) -> list[CampaignAccount]:
    out = []
    for d in designs:
        mine = [b for b in blocks if b.campaign_id == d.campaign_id]
        pids = {p.policy_id for p in d.policies}
        complete = sum(b.n for b in mine if pids <= set(_resolved(b)))
        accounts = []
        for p in sorted(d.policies, key=lambda p: p.position):
            tally = dict.fromkeys(OUTCOMES, 0)
            for b in mine:
                for pid, outcome in b.outcomes:
                    if pid == p.policy_id:
                        tally[outcome] += b.n
            accounts.append(PolicyAccount(
                column_of[p.policy_id], p.code, p.planned, sum(tally.values()),
                tally["success"] + tally["failure"], tally["disputed"], tally["unlabeled"]))
        out.append(CampaignAccount(d.campaign_id, _campaign_label(d, blind), d.planned_blocks,
                                   complete,
                                   tuple(accounts)))
    return out


def build_report(
    blocks: Iterable[BlockCount],
    designs: Sequence[CampaignDesign],
    *,
    test: str = "mcnemar",
    blind: bool = False,
    title: str = "",
) -> Report:
    """Tabulate the campaigns' counted episodes (as block patterns) into the report."""
    if test not in TEST_NAMES:
        raise ValueError(f"unknown test {test!r} (expected one of: {', '.join(TEST_NAMES)})")
    if len({d.campaign_id for d in designs}) != len(designs):
        raise ValueError("each campaign may appear once in a report")
    all_blocks = [b for b in blocks if b.n]
    _check_blocks(all_blocks, designs)
    columns = _columns(designs, blind)
    pids: list[int] = []
    for d in designs:
        for cp in sorted(d.policies, key=lambda cp: cp.position):
            if cp.policy_id not in pids:
                pids.append(cp.policy_id)
    column_of = {pid: i for i, pid in enumerate(pids)}

    raw_rows: list[tuple[_RowSpec, tuple[SuccessRate, ...], list[PairComparison],
                         CochranQ | None]] = []
    for spec in ROW_SPECS:
        mine = [b for b in all_blocks if _in_row(spec, b)]
        cells = tuple(_cell(mine, pid) for pid in pids)
        pairs: list[PairComparison] = []
        for i, j in combinations(range(len(pids)), 2):
            if test == "mcnemar":
                counts = _paired(mine, pids[i], pids[j])
                p_value = mcnemar_exact(counts.a_only, counts.b_only) if counts.pairs else None
                pairs.append(PairComparison(i, j, test, p_value, None, counts.difference, counts))
            else:
                unpaired: TestName = "fisher" if test == "fisher" else "barnard"
                cmp = compare_rates(cells[i].k, cells[i].n, cells[j].k, cells[j].n, unpaired)
                pairs.append(PairComparison(i, j, test, cmp.p_value, None, cmp.difference, None))
        q = _omnibus(mine, pids) if len(pids) > 2 else None
        raw_rows.append((spec, cells, pairs, q))

    pair_holm = iter(holm([c.p_value for _, _, pairs, _ in raw_rows for c in pairs]))
    q_holm = iter(holm([q.p_value for *_, q in raw_rows if q is not None]))
    rows = []
    for spec, cells, pairs, q in raw_rows:
        comparisons = tuple(replace(c, p_holm=next(pair_holm)) for c in pairs)
        omnibus = Omnibus(q, next(q_holm)) if q is not None else None
        rows.append(ReportRow(spec.key, spec.label, spec.categories, spec.difficulty,
                              spec.aggregate, cells, comparisons, omnibus))
    accounts = _accounts(all_blocks, designs, column_of, blind)
    return Report(tuple(columns), tuple(rows), test, title, blind, tuple(accounts))
