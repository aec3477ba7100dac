"""Pure parts of the dashboard: agreement between evaluators, report tables and exports."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import pandas as pd
import pytest

from dashboard import agreement, charts
from orchestrator.store.browse import HumanSimCount, StepTable
from protocols.paired import mcnemar_exact
from protocols.report import BlockCount, CampaignDesign, CampaignPolicy, build_report, render_csv
from protocols.stats import cohen_kappa, fleiss_kappa


@dataclass(frozen=True)
class V:
    episode_id: int
    evaluator: str
    success: bool


def votes(table: dict[int, dict[str, bool]]) -> list[V]:
    return [V(e, who, ok) for e, r in table.items() for who, ok in r.items()]


def test_two_evaluators_use_cohen_on_shared_episodes() -> None:
    table = {1: {"a": True, "b": True}, 2: {"a": False, "b": True}, 3: {"a": False, "b": False},
             4: {"a": True, "b": True}, 5: {"a": True}}
    got = agreement.agreement(votes(table))
    shared = [table[e] for e in (1, 2, 3, 4)]
    assert got.method == "Cohen's kappa" and got.episodes == 4
    assert got.kappa == pytest.approx(cohen_kappa([r["a"] for r in shared], [r["b"] for r in shared]))
    assert got.raw_agreement == 0.75


def test_more_evaluators_use_fleiss_on_the_common_rater_count() -> None:
    table = {1: {"a": True, "b": True, "c": False}, 2: {"a": False, "b": False, "c": False},
             3: {"a": True, "b": True, "c": True}, 4: {"a": True, "b": False}}
    got = agreement.agreement(votes(table))
    assert got.method == "Fleiss' kappa" and got.episodes == 3 and "3 evaluators" in got.note
    assert got.kappa == pytest.approx(fleiss_kappa([[2, 1], [0, 3], [3, 0]]))
    pairs = {(p.a, p.b): p for p in agreement.pairwise(votes(table))}
    assert pairs[("a", "b")].episodes == 4 and pairs[("a", "c")].episodes == 3


def test_no_overlap_and_undefined_kappa() -> None:
    assert agreement.agreement(votes({1: {"a": True}, 2: {"b": False}})).kappa is None
    same = agreement.agreement(votes({1: {"a": True, "b": True}, 2: {"a": True, "b": True}}))
    assert same.kappa is None and same.raw_agreement == 1.0 and "undefined" in same.note


def _report():  # type: ignore[no-untyped-def]
    def block(task: str, category: str, difficulty: str | None, a: str, b: str,
              n: int) -> BlockCount:
        return BlockCount(1, task, category, difficulty, ((1, a), (2, b)), n)

    s, f = "success", "failure"
    blocks = [block("t1", "seen", None, s, s, 2), block("t1", "seen", None, s, f, 5),
              block("t1", "seen", None, f, f, 3),
              block("t2", "unseen_objects", "hard", s, "unlabeled", 2)]
    design = CampaignDesign(1, "c1", 12, (CampaignPolicy(1, "alpha", "1", "P-A", 0, 12),
                                          CampaignPolicy(2, "beta", "1", "P-B", 1, 12)))
    return build_report(blocks, [design])


def test_report_tables_and_exports_match_the_csv() -> None:
    report = _report()
    wide = charts.report_wide(report)
    assert wide.loc[0, "alpha"] == "70% [40-89] n=10 (0 disputed, 0 unlabeled)"
    assert wide.iloc[0, -1].startswith("p=")
    csv_df = pd.read_csv(io.StringIO(render_csv(report)), keep_default_na=False)
    parquet = pd.read_parquet(io.BytesIO(charts.report_parquet(report)))
    assert list(parquet.columns) == list(csv_df.columns)
    assert list(parquet["cell"]) == list(csv_df["cell"])
    assert list(parquet["trials"]) == list(csv_df["trials"])
    cmp = charts.comparison_table(report)
    assert cmp.loc[0, "p"] == f"{mcnemar_exact(5, 0):.3f}" and cmp.loc[0, "difference (pp)"] == 50.0
    assert cmp.loc[0, "matched pairs"] == 10
    assert list(charts.accounts_frame(report)["counted"]) == [12, 12]
    assert charts.success_chart(report).to_dict()["layer"]


def test_human_vs_sim_summary() -> None:
    counts = [HumanSimCount("alpha", "P-A", True, True, 5), HumanSimCount("alpha", "P-A", False,
              True, 1), HumanSimCount("beta", "P-B", False, False, 4)]
    table, kappa, n = charts.human_sim_summary(counts)
    assert n == 10 and kappa == pytest.approx(
        cohen_kappa([True] * 5 + [False] * 5, [True] * 6 + [False] * 4))
    assert int(table["success"].sum()) == 6
    empty, none, zero = charts.human_sim_summary([])
    assert empty.empty and none is None and zero == 0


def test_step_frames_and_latency() -> None:
    cols = ("idx", "dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper", "obs_age_ms",
            "inference_ms", "orchestration_ms", "command_ms")
    table = StepTable(cols, tuple((i, 0.01, 0, 0, 0, 0, 0, 1.0, 2.0, 30.0 + i, 1.0, 0.5)
                                  for i in range(5)))
    long = charts.action_long(charts.step_frame(table))
    assert list(long[long["dimension"] == "gripper"]["value"]) == [1.0] * 5
    summary = charts.latency_summary(charts.step_frame(table))
    assert summary.loc["inference_ms", "max"] == 34.0
    assert not math.isnan(summary.loc["command_ms", "mean"])
