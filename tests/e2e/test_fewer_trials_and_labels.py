"""Issue 13 end to end on the sim, through the CLI as a lab runs it.

A campaign (smoke protocol, oracle vs random, 6 trials per task) declares the question
"oracle against random" and a 50% audit rate, and runs on three simulated arms: the question is
decided before the plan is spent, the remaining trials are not leased (`not_needed`), the
campaign ends `done` and `evalfleet report` shows the decision and the trials it saved. Then a
success detector (the sim's predicate with 10% of its answers flipped: a detector that is
right about 90% of the time) labels every counted episode; the Label queue serves an
evaluator exactly the audit sample; they label it; and `report --detector` shows the PPI
estimate with its interval beside the human-only and auto-only ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from orchestrator.simfleet import SimFleet
from orchestrator.store.browse import label_queue
from orchestrator.store.db import Store, make_engine
from orchestrator.store.labels import LabelInput, save_label
from orchestrator.store.models import Campaign, CampaignQuestion, Episode, Label, Trial
from protocols.audit import drawn
from tests.integration.fleet_support import REPO, check_invariants

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

EXE = str(Path(sys.executable).parent / "evalfleet")


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    proc = subprocess.run([EXE, *args], check=False, cwd=REPO, env=env, capture_output=True,
                          text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"evalfleet {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_a_decided_question_stops_the_campaign_and_ppi_combines_detector_and_audit(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if k not in ("EVALFLEET_DATABASE_URL", "RAY_ADDRESS")}
    env.update(EVALFLEET_HOME=str(home), PYTHONUNBUFFERED="1", COLUMNS="160")
    _cli(env, "db", "upgrade")
    for name in ("oracle", "random"):
        _cli(env, "policy", "register", name, "--kind", name)
    _cli(env, "campaign", "create", "--name", "q13", "--protocol", "smoke",
         "--policy", "oracle", "--policy", "random", "--trials", "6", "--seed", "3",
         "--question", "pair:oracle,random", "--audit-rate", "0.5")

    with SimFleet(3, image_size="96x96") as fleet:
        fleet_yaml = tmp_path / "fleet.yaml"
        fleet_yaml.write_text(yaml.safe_dump(fleet.config().model_dump(mode="json")))
        out = _cli(env, "campaign", "run", "q13", "--fleet", str(fleet_yaml), timeout=300)
    assert "trials not needed (its declared questions were decided)" in out, out[-3000:]

    store = Store(make_engine(f"sqlite:///{home / 'evalfleet.db'}"))
    try:
        with store.read() as s:
            campaign = s.scalars(select(Campaign)).one()
            cid, seed = campaign.id, campaign.seed
            assert campaign.status == "done"
            question = s.scalars(select(CampaignQuestion)).one()
            statuses = [t.status for t in s.scalars(select(Trial))]
        audit = check_invariants(store, home / "media", [cid])
        # decided for the oracle before the plan (5 tasks x 6 blocks x 2 policies) was spent
        assert question.state == "a_better", question
        assert question.decided_after is not None and question.decided_after < 30
        saved = statuses.count("not_needed")
        assert saved > 0 and saved == question.trials_saved
        assert statuses.count("done") + saved == len(statuses) == 60
        assert audit.counted == statuses.count("done") < 60

        report = _cli(env, "report", "q13")
        assert "oracle" in report and "not needed" in report.lower(), report

        # a detector right ~90% of the time labels every counted episode
        _cli(env, "detector", "register", "sim-90", "--kind", "sim",
             "-o", "flip_rate=0.1", "-o", "seed=11")
        _cli(env, "detect", "q13", "--detector", "sim-90")
        with store.read() as s:
            counted = s.execute(select(Episode.id, Episode.trial_id)
                                .where(Episode.counted.is_(True))).all()
            auto = set(s.scalars(select(Label.episode_id).where(Label.source == "auto")))
            sim = dict(s.execute(select(Label.episode_id, Label.success)
                                 .where(Label.source == "sim")).all())
        assert auto == {e for e, _ in counted}

        # the Label queue serves exactly the audit sample (known probability 0.5 per trial)
        sample = {e for e, t in counted if drawn(seed, t, 0.5)}
        assert 0 < len(sample) < len(counted)
        with store.read() as s:
            items, total = label_queue(s, evaluator="ann", campaign_ids=[cid], limit=500)
        assert {i.episode_id for i in items} == sample and total == len(sample)
        for eid in sorted(sample):  # the evaluator agrees with the simulator
            save_label(store, LabelInput(eid, "ann", bool(sim[eid]), 1.0 if sim[eid] else 0.0))

        out = json.loads(_cli(env, "report", "q13", "--detector", "sim-90", "-f", "json"))
        text = _cli(env, "report", "q13", "--detector", "sim-90")
    finally:
        store.close()
    assert "human" in text.lower() and "auto" in text.lower(), text
    rows = {(r["policy"], r["category"]): r for r in out["ppi"]["rows"]}
    overall = [r for (policy, _), r in rows.items() if policy == "oracle"]
    assert overall, out["ppi"]
    for r in overall:  # PPI beside the human-only and auto-only estimates, with intervals
        assert r["auto_labels"] == r["episodes"] and r["human_labels"] == r["sampled"]
        for est in ("ppi", "human", "auto"):
            e = r[est]
            if e is not None:
                assert e["low"] <= e["rate"] <= e["high"], (est, r)
    assert any(r["ppi"] is not None for r in overall), overall
    # the question's decision and its saving are in the json too
    assert out["questions"][0]["state"] == "a_better", out["questions"]
