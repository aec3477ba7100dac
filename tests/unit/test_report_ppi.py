"""protocols.report_ppi: the report's PPI section from audit episodes (pure, no store)."""

from __future__ import annotations

import io
import json
import random

import pytest
from rich.console import Console

from protocols.audit import drawn
from protocols.ppi import Stratum, agreement, auto_only, human_only, ppi_stratified
from protocols.report_ppi import (
    OVERALL,
    AuditCampaign,
    AuditEpisode,
    AuditPolicy,
    build_ppi_report,
)
from protocols.report_ppi_render import (
    estimate_text,
    render_json,
    render_markdown,
    render_tables,
    section_notes,
)

CATS = ("seen", "unseen_objects", "reasoning")
CAMPAIGN = AuditCampaign(1, "camp-one", 0.3)
POLICIES = (AuditPolicy(1, 10, "alpha-vla", "1", "K7Q", 0),
            AuditPolicy(1, 20, "beta-rt1", "1", "M2X", 1))


def _episodes(seed: int = 3, n: int = 200, rate: float = 0.3,
              false_success: dict[int, float] | None = None) -> list[AuditEpisode]:
    """n episodes per policy x category; truth p by policy; the detector calls a failure a
    success with a policy-dependent probability (alpha's much more often)."""
    rng = random.Random(seed)
    fs = false_success or {10: 0.4, 20: 0.02}
    truth = {10: 0.5, 20: 0.6}
    out = []
    tid = 0
    for pid in (10, 20):
        for cat in CATS:
            for _ in range(n):
                tid += 1
                ok = rng.random() < truth[pid]
                auto = ok or rng.random() < fs[pid]
                d = drawn(7, tid, rate)
                labelled = d and rng.random() < 0.95  # a few sampled ones not labelled yet
                out.append(AuditEpisode(1, pid, cat, d, int(labelled and ok),
                                        int(labelled and not ok), auto))
    return out


def _strata(eps: list[AuditEpisode]) -> Stratum:
    aud = [e for e in eps if e.drawn and e.human is not None]
    un = [e for e in eps if not (e.drawn and e.human is not None)]
    return Stratum([int(bool(e.auto)) for e in un], [int(bool(e.auto)) for e in aud],
                   [int(bool(e.human)) for e in aud])


def test_three_estimates_per_policy_and_category_equal_the_pure_cores() -> None:
    eps = _episodes()
    rep = build_ppi_report(eps, [CAMPAIGN], POLICIES, detector="simdet")
    assert rep.policies == ("alpha-vla", "beta-rt1")
    assert [(r.policy, r.category) for r in rep.rows][:4] == [
        ("alpha-vla", c) for c in (*CATS, OVERALL)]
    for pid, name in ((10, "alpha-vla"), (20, "beta-rt1")):
        mine = [e for e in eps if e.policy_id == pid]
        overall = rep.row(name)
        want = ppi_stratified([_strata([e for e in mine if e.category == c]) for c in CATS])
        assert overall.ppi == want
        aud = [e for e in mine if e.audited]
        assert overall.human == human_only([int(bool(e.human)) for e in aud])
        assert overall.auto == auto_only([int(bool(e.auto)) for e in mine])
        assert overall.agreement == agreement([int(bool(e.human)) for e in aud],
                                              [int(bool(e.auto)) for e in aud])
        assert overall.episodes == 600 and overall.drawn == sum(e.drawn for e in mine)
        assert overall.human_labels == len(aud) and overall.auto_labels == 600
        cat = rep.row(name, "reasoning")
        assert cat.ppi == ppi_stratified([_strata([e for e in mine if e.category == "reasoning"])])
    # the biased detector: auto-only misses alpha's true 50% badly; PPI is near it
    alpha = rep.row("alpha-vla")
    assert alpha.auto is not None and alpha.ppi is not None
    assert alpha.auto.low > 0.6 and alpha.ppi.low < 0.5 < alpha.ppi.high


def test_policy_dependent_disagreement_is_flagged() -> None:
    rep = build_ppi_report(_episodes(), [CAMPAIGN], POLICIES, detector="simdet")
    assert rep.disagreement is not None and rep.disagreement.flagged
    assert any(w.startswith("WARNING simdet disagrees") and "alpha-vla" in w
               for w in rep.warnings)
    fair = build_ppi_report(_episodes(false_success={10: 0.05, 20: 0.05}), [CAMPAIGN],
                            POLICIES, detector="simdet")
    assert fair.disagreement is not None and not fair.disagreement.flagged
    assert not any("disagrees" in w for w in fair.warnings)


def test_audit_progress_line_and_missing_detector_labels() -> None:
    eps = _episodes()
    eps[0] = AuditEpisode(1, 10, "seen", eps[0].drawn, eps[0].human_yes, eps[0].human_no, None)
    rep = build_ppi_report(eps, [CAMPAIGN], POLICIES, detector="simdet",
                           checksums=("aa", "bb"))
    sampled = sum(e.drawn for e in eps)
    labelled = sum(e.drawn and e.human_yes + e.human_no > 0 for e in eps)
    assert (f"audit of camp-one: {labelled} of {sampled} sampled episodes labelled; rate 30%"
            in rep.warnings[0])
    assert any("1 counted episode(s) have no label from simdet" in w for w in rep.warnings)
    assert any("2 detector checksums" in w for w in rep.warnings)
    assert rep.row("alpha-vla").auto_labels == 599


def test_disputed_human_outcomes_are_left_out_of_the_audit() -> None:
    tie = AuditEpisode(1, 10, "seen", True, 1, 1, True)
    assert tie.human is None and not tie.audited
    assert AuditEpisode(1, 10, "seen", True, 2, 1, False).audited
    assert not AuditEpisode(1, 10, "seen", False, 2, 0, False).audited  # not drawn


def test_small_categories_are_pooled_within_the_campaign_else_not_shown() -> None:
    eps = _episodes(n=200)
    # reasoning keeps one audited episode only: categories pool into one stratum
    kept, seen_audited = [], 0
    for e in eps:
        if e.policy_id == 10 and e.category == "reasoning" and e.audited:
            seen_audited += 1
            if seen_audited > 1:
                e = AuditEpisode(1, 10, "reasoning", e.drawn, 0, 0, e.auto)
        kept.append(e)
    rep = build_ppi_report(kept, [CAMPAIGN], POLICIES, detector="simdet")
    alpha = rep.row("alpha-vla")
    assert alpha.ppi == ppi_stratified([_strata([e for e in kept if e.policy_id == 10])])
    assert any("pooled" in n for n in alpha.notes)
    reasoning = rep.row("alpha-vla", "reasoning")
    assert reasoning.ppi is None and reasoning.human is None
    assert any(">= 2 audited" in n for n in reasoning.notes)
    assert not rep.row("beta-rt1").notes


def test_blind_headers_are_codes_and_campaigns_ids() -> None:
    rep = build_ppi_report(_episodes(), [CAMPAIGN], POLICIES, detector="simdet", blind=True)
    assert rep.policies == ("K7Q", "M2X") and rep.campaigns == ("#1",)
    text = json.dumps(render_json(rep)) + render_markdown(rep)
    assert "alpha-vla" not in text and "camp-one" not in text and "K7Q" in text


def test_campaign_without_audit_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="has no audit rate.*--audit-rate") as e:
        build_ppi_report(_episodes(), [AuditCampaign(1, "camp-one", None)], POLICIES,
                         detector="simdet")
    assert "\n" not in str(e.value)


def test_two_campaigns_with_different_rates() -> None:
    rng = random.Random(9)
    eps = []
    for cid, rate in ((1, 0.2), (2, 0.6)):
        for tid in range(1, 601):
            ok = rng.random() < (0.3 if cid == 1 else 0.8)
            d = drawn(cid, tid, rate)
            eps.append(AuditEpisode(cid, 10, CATS[tid % 3], d, int(d and ok), int(d and not ok),
                                    ok))
    camps = [AuditCampaign(1, "one", 0.2), AuditCampaign(2, "two", 0.6)]
    pols = [AuditPolicy(1, 10, "alpha-vla", "1", "K7Q", 0),
            AuditPolicy(2, 10, "alpha-vla", "1", "Z9Z", 0)]
    rep = build_ppi_report(eps, camps, pols, detector="simdet")
    row = rep.row("alpha-vla")
    assert row.human is not None and row.ppi is not None
    # strata campaign x category, each at its campaign's rate; human-only weighted by size
    want = ppi_stratified([_strata([e for e in eps if (e.campaign_id, e.category) == (c, cat)])
                           for c in (1, 2) for cat in CATS])
    assert (row.ppi.rate, row.ppi.std_error) == pytest.approx((want.rate, want.std_error))
    assert (row.ppi.human_labels, row.ppi.auto_labels) == (want.human_labels, want.auto_labels)
    assert row.ppi.std_error < row.human.std_error  # a perfect detector only narrows it
    h = [human_only([int(bool(e.human)) for e in eps if e.campaign_id == c and e.audited])
         for c in (1, 2)]
    assert row.human.rate == pytest.approx((h[0].rate + h[1].rate) / 2)
    assert build_ppi_report(eps, camps, pols, detector="d", blind=True).policies == ("K7Q/Z9Z",)


def test_renderers() -> None:
    rep = build_ppi_report(_episodes(), [CAMPAIGN], POLICIES, detector="simdet")
    data = json.loads(json.dumps(render_json(rep), allow_nan=False))
    assert data["detector"] == "simdet" and len(data["rows"]) == 8
    row = data["rows"][3]
    assert row["category"] == OVERALL and set(row) >= {"human", "auto", "ppi", "agreement"}
    assert row["ppi"]["text"] == estimate_text(rep.rows[3].ppi)
    assert data["disagreement"]["pairs"][0]["flagged"] is True
    md = render_markdown(rep)
    assert "| policy | category |" in md and "PPI" in md and "kappa" in md
    buf = io.StringIO()
    console = Console(file=buf, width=250)
    for t in render_tables(rep):
        console.print(t)
    assert "alpha-vla" in buf.getvalue() and "auto-only (naive)" in buf.getvalue()
    assert section_notes(rep)[0].startswith("Detector simdet on camp-one")
    assert estimate_text(None) == "–"
    e = rep.rows[3].ppi
    assert e is not None and estimate_text(e).endswith(f"n={e.human_labels} N={e.auto_labels}")


def test_ppi_rows_cover_the_true_rate_where_the_naive_one_does_not() -> None:
    """Seeded simulation through the whole section: a detector wrong 15% of the time (biased
    towards success), audit rate 0.2, three categories with different rates."""
    p_true = {"seen": 0.7, "unseen_objects": 0.4, "reasoning": 0.2}
    truth = sum(p_true.values()) / 3
    covered = {"ppi": 0, "auto": 0, "human": 0}
    reps = 150
    for rep in range(reps):
        rng = random.Random(rep)
        eps, tid = [], 0
        for cat, p in p_true.items():
            for _ in range(300):
                tid += 1
                ok = rng.random() < p
                auto = ok if rng.random() < 0.85 else rng.random() < 0.8
                d = drawn(rep, tid, 0.2)
                eps.append(AuditEpisode(1, 10, cat, d, int(d and ok), int(d and not ok), auto))
        row = build_ppi_report(eps, [AuditCampaign(1, "c", 0.2)],
                               [AuditPolicy(1, 10, "a", "1", "X", 0)], detector="d").row("a")
        for name, est in (("ppi", row.ppi), ("auto", row.auto), ("human", row.human)):
            assert est is not None
            covered[name] += est.low <= truth <= est.high
    assert covered["ppi"] / reps >= 0.9 and covered["human"] / reps >= 0.9
    assert covered["auto"] / reps < 0.5
