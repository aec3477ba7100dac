"""The report's prediction-powered section (pure): one detector's success rates beside the
humans' on a campaign's random audit (protocols.audit), per policy and category.

For each policy, per category and overall, three estimates (protocols.ppi), each with its
95% interval and its label counts:

* human-only: the audited (drawn) episodes with a resolved human outcome (the majority of
  their human labels; ties are disputed and left out), stratified by campaign (each campaign
  has its own audit rate; within one, Bernoulli sampling at one rate is self-weighting);
* auto-only (naive): the detector's labels on every counted episode, taken as the truth;
* PPI: protocols.ppi.ppi_stratified, strata = campaign x category within the policy
  (weights N_h / N). The population is the counted episodes the detector labelled; the
  audit is its drawn episodes with a resolved human outcome; the rest (including drawn
  episodes not labelled yet) are unaudited. A stratum with fewer than 2 audited or no
  unaudited episodes cannot stand alone: then the campaign's categories are pooled into one
  stratum (valid: every episode of a campaign has the same inclusion probability), and if
  that is still too small the estimate is not shown, with the reason.

Beside them, the detector against the humans on the audit (protocols.ppi.agreement:
confusion matrix and Cohen's kappa) and, over the policies' overall rows,
protocols.ppi.disagreement_check: a warning when the detector disagrees with humans more
for some policies than others. Blind reports name policies by blind code only.
Rendering: protocols.report_ppi_render.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from math import sqrt
from statistics import NormalDist
from typing import TypeVar

from protocols.ppi import (
    Agreement,
    DisagreementCheck,
    Estimate,
    Stratum,
    agreement,
    auto_only,
    disagreement_check,
    human_only,
    ppi_stratified,
)
from protocols.schema import Category

__all__ = [
    "OVERALL",
    "AuditCampaign",
    "AuditEpisode",
    "AuditPolicy",
    "PpiReport",
    "PpiRow",
    "build_ppi_report",
]

OVERALL = "overall"
K = TypeVar("K", bound=Hashable)
_CATEGORY_ORDER = {c.value: i for i, c in enumerate(Category)}


@dataclass(frozen=True)
class AuditCampaign:
    campaign_id: int
    name: str
    audit_rate: float | None  # campaigns.audit_rate


@dataclass(frozen=True)
class AuditPolicy:
    """A policy of a campaign (campaign_policies): who ran the episodes, for the headers."""

    campaign_id: int
    policy_id: int
    name: str
    version: str
    blind_code: str
    position: int


@dataclass(frozen=True)
class AuditEpisode:
    """One counted episode: its stratum, whether its trial is drawn for the audit, its human
    votes and the detector's label (None: the detector has not labelled it)."""

    campaign_id: int
    policy_id: int
    category: str
    drawn: bool
    human_yes: int
    human_no: int
    auto: bool | None

    @property
    def human(self) -> bool | None:
        """The human majority; None when unlabelled or tied (disputed)."""
        if self.human_yes == self.human_no:
            return None
        return self.human_yes > self.human_no

    @property
    def audited(self) -> bool:
        return self.drawn and self.human is not None


@dataclass(frozen=True)
class PpiRow:
    policy: str  # header: the name, or blind codes
    category: str  # a category, or OVERALL
    episodes: int  # counted episodes
    auto_labels: int  # of them labelled by the detector
    drawn: int  # of them in the audit sample
    human_labels: int  # drawn with a resolved human outcome
    human: Estimate | None
    auto: Estimate | None
    ppi: Estimate | None
    agreement: Agreement  # on audited episodes the detector labelled
    notes: tuple[str, ...] = ()  # why an estimate is missing, pooled strata


@dataclass(frozen=True)
class PpiReport:
    detector: str
    blind: bool
    confidence: float
    campaigns: tuple[str, ...]  # names, or #ids when blind
    policies: tuple[str, ...]  # headers, in column order
    rows: tuple[PpiRow, ...]
    disagreement: DisagreementCheck | None
    warnings: tuple[str, ...]

    def row(self, policy: str, category: str = OVERALL) -> PpiRow:
        for r in self.rows:
            if r.policy == policy and r.category == category:
                return r
        raise KeyError(f"no PPI row for policy {policy!r}, category {category!r}")


# --- headers (as protocols.report_model names its columns) --------------------------------


def _campaign_label(c: AuditCampaign, blind: bool) -> str:
    return f"#{c.campaign_id}" if blind else c.name


def _headers(campaigns: Sequence[AuditCampaign], policies: Sequence[AuditPolicy],
             blind: bool) -> dict[int, str]:
    """policy id -> header: the name (with @version when two versions share it), or, blind,
    the policy's codes in the campaigns joined by '/' (campaign-qualified if not unique)."""
    order = {c.campaign_id: i for i, c in enumerate(campaigns)}
    label = {c.campaign_id: _campaign_label(c, blind) for c in campaigns}
    first: dict[int, AuditPolicy] = {}
    codes: dict[int, list[tuple[str, str]]] = {}
    for p in sorted(policies, key=lambda p: (order.get(p.campaign_id, len(order)), p.position)):
        first.setdefault(p.policy_id, p)
        codes.setdefault(p.policy_id, []).append((label.get(p.campaign_id, "?"), p.blind_code))
    if blind:
        out = {pid: "/".join(dict.fromkeys(code for _, code in cs)) for pid, cs in codes.items()}
        if len(set(out.values())) != len(out):  # legacy non-unique codes
            out = {pid: "/".join(f"{camp}:{code}" for camp, code in cs)
                   for pid, cs in codes.items()}
        return out
    names = [p.name for p in first.values()]
    return {pid: p.name if names.count(p.name) == 1 else f"{p.name}@{p.version}"
            for pid, p in first.items()}


# --- estimates ----------------------------------------------------------------------------


def _labels(eps: Sequence[AuditEpisode], what: str) -> list[int]:
    if what == "human":
        return [int(bool(e.human)) for e in eps]
    return [int(bool(e.auto)) for e in eps]


def _stratum(eps: Sequence[AuditEpisode]) -> Stratum:
    """PPI's stratum over the detector-labelled episodes: audited ones give both labels."""
    labelled = [e for e in eps if e.auto is not None]
    audited = [e for e in labelled if e.audited]
    unaudited = [e for e in labelled if not e.audited]
    return Stratum(_labels(unaudited, "auto"), _labels(audited, "auto"), _labels(audited, "human"))


def _stands_alone(s: Stratum) -> bool:
    return len(s.human) >= 2 and len(s.auto_unaudited) >= 1


def _by(eps: Sequence[AuditEpisode], key: Callable[[AuditEpisode], K]
        ) -> dict[K, list[AuditEpisode]]:
    out: dict[K, list[AuditEpisode]] = {}
    for e in eps:
        out.setdefault(key(e), []).append(e)
    return out


def _ppi(eps: Sequence[AuditEpisode], names: Mapping[int, str], confidence: float
         ) -> tuple[Estimate | None, tuple[str, ...]]:
    """PPI over strata campaign x category; a campaign whose categories cannot each stand
    alone is pooled into one stratum."""
    strata: list[Stratum] = []
    notes: list[str] = []
    for cid, camp in _by(eps, lambda e: e.campaign_id).items():
        per_cat = [_stratum(g) for g in _by(camp, lambda e: e.category).values()]
        if all(_stands_alone(s) for s in per_cat):
            strata.extend(per_cat)
            continue
        pooled = _stratum(camp)
        if not _stands_alone(pooled):
            return None, ((f"PPI needs >= 2 audited and >= 1 unaudited detector-labelled "
                           f"episodes in {names.get(cid, cid)} (has {len(pooled.human)} and "
                           f"{len(pooled.auto_unaudited)}): label more of the audit sample"),)
        if len(per_cat) > 1:
            notes.append(f"{names.get(cid, cid)}: categories pooled into one stratum (too few "
                         "audited episodes per category)")
        strata.append(pooled)
    if not strata:
        return None, ("no counted episodes",)
    return ppi_stratified(strata, confidence), tuple(notes)


def _human(eps: Sequence[AuditEpisode], confidence: float) -> Estimate | None:
    """Human-only: each campaign's audited outcomes (Bernoulli at one rate: self-weighting),
    campaigns weighted by their share of the counted episodes."""
    parts = []
    for camp in _by(eps, lambda e: e.campaign_id).values():
        audited = [e for e in camp if e.audited]
        if len(audited) < 2:  # that campaign's share of the population would go unestimated
            return None
        parts.append((len(camp), human_only(_labels(audited, "human"), confidence)))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0][1]
    total = sum(n for n, _ in parts)
    rate = sum(n / total * e.rate for n, e in parts)
    se = sqrt(sum((n / total * e.std_error) ** 2 for n, e in parts))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return Estimate("human", rate, se, rate - z * se, rate + z * se,
                    sum(e.human_labels for _, e in parts), 0)


def _row(policy: str, category: str, eps: Sequence[AuditEpisode], names: Mapping[int, str],
         confidence: float) -> PpiRow:
    labelled = [e for e in eps if e.auto is not None]
    audited = [e for e in labelled if e.audited]
    notes: list[str] = []
    human = _human(eps, confidence)
    if human is None:
        notes.append("human-only needs >= 2 audited episodes with a resolved human outcome "
                     "in each campaign")
    auto = auto_only(_labels(labelled, "auto"), confidence) if len(labelled) >= 2 else None
    if auto is None:
        notes.append("auto-only needs >= 2 detector labels")
    est, ppi_notes = _ppi(eps, names, confidence)
    notes.extend(ppi_notes)
    if est is not None and not 0.0 <= est.rate <= 1.0:
        notes.append(f"PPI's point estimate {est.rate:.2f} lies outside [0, 1] (few audited "
                     "episodes): shown clipped; label more of the audit sample")
    agree = agreement(_labels(audited, "human"), _labels(audited, "auto"))
    return PpiRow(policy, category, len(eps), len(labelled), sum(e.drawn for e in eps),
                  sum(e.audited for e in eps), _clipped(human), _clipped(auto), _clipped(est),
                  agree, tuple(notes))


def _clipped(e: Estimate | None) -> Estimate | None:
    """A success rate and its interval cut to [0, 1], where the rate lies: the cut interval
    covers the true rate whenever the normal one does, and a clipped point is never further
    from it (the standard errors are the estimators' own)."""
    if e is None:
        return None
    return replace(e, rate=min(1.0, max(0.0, e.rate)), low=max(0.0, e.low),
                   high=min(1.0, e.high))


def build_ppi_report(
    episodes: Sequence[AuditEpisode],
    campaigns: Sequence[AuditCampaign],
    policies: Sequence[AuditPolicy],
    *,
    detector: str,
    blind: bool = False,
    confidence: float = 0.95,
    checksums: Sequence[str] = (),
    alpha: float = 0.05,
) -> PpiReport:
    """The PPI section for these campaigns' counted episodes and one detector. Campaigns
    without an audit rate are refused (ValueError): their human labels are no random sample."""
    unaudited = [c for c in campaigns if c.audit_rate is None]
    if unaudited:
        names = ", ".join(_campaign_label(c, blind) for c in unaudited)
        raise ValueError(f"campaign {names} has no audit rate, so its human labels are no "
                         "random sample: PPI needs a campaign created with --audit-rate")
    headers = _headers(campaigns, policies, blind)
    cnames = {c.campaign_id: _campaign_label(c, blind) for c in campaigns}
    rows: list[PpiRow] = []
    by_policy = _by(episodes, lambda e: e.policy_id)
    for pid, header in headers.items():
        mine = by_policy.get(pid, [])
        cats = sorted(_by(mine, lambda e: e.category),
                      key=lambda c: (_CATEGORY_ORDER.get(c, len(_CATEGORY_ORDER)), c))
        for cat in cats:
            rows.append(_row(header, cat, [e for e in mine if e.category == cat], cnames,
                             confidence))
        rows.append(_row(header, OVERALL, mine, cnames, confidence))
    overall = {r.policy: r.agreement for r in rows if r.category == OVERALL}
    check = disagreement_check(overall, alpha) if len(overall) >= 2 else None
    return PpiReport(detector, blind, confidence, tuple(cnames.values()),
                     tuple(headers.values()), tuple(rows), check,
                     tuple(_warnings(episodes, campaigns, blind, detector, checksums, check)))


def _warnings(episodes: Sequence[AuditEpisode], campaigns: Sequence[AuditCampaign],
              blind: bool, detector: str, checksums: Sequence[str],
              check: DisagreementCheck | None) -> list[str]:
    out = []
    for c in campaigns:
        mine = [e for e in episodes if e.campaign_id == c.campaign_id]
        sampled = sum(e.drawn for e in mine)
        labelled = sum(e.drawn and (e.human_yes + e.human_no) > 0 for e in mine)
        line = (f"audit of {_campaign_label(c, blind)}: {labelled} of {sampled} sampled "
                f"episodes labelled; rate {c.audit_rate:.0%}")
        if labelled < sampled:
            line += (" (PPI treats the unlabelled ones as unaudited; label them all so the "
                     "audit stays a random sample)")
        out.append(line)
    missing = sum(e.auto is None for e in episodes)
    if missing:
        out.append(f"WARNING {missing} counted episode(s) have no label from {detector}: "
                   "auto-only and PPI leave them out (run the detector on them)")
    if len(set(checksums)) > 1:
        out.append(f"WARNING {detector}'s labels come from {len(set(checksums))} detector "
                   "checksums: the estimates mix detector versions")
    if check is not None:
        for p in check.flagged:
            ra = "–" if p.rate_a is None else f"{p.rate_a:.0%}"
            rb = "–" if p.rate_b is None else f"{p.rate_b:.0%}"
            out.append(f"WARNING {detector} disagrees with humans at different rates for "
                       f"{p.policy_a} ({ra}) and {p.policy_b} ({rb}), Holm p={p.p_holm:.3g}: "
                       "a naive auto-label comparison of them is biased; use PPI or humans")
    return out
