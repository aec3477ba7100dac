"""`evalfleet demo` end to end, as a user runs it: simulated arms (bridge processes), local Ray,
the SQLite store under a fresh EVALFLEET_HOME; it completes, prints the report, and the store
holds exactly one counted (sim-labelled) episode per trial, each with its checksummed video."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import (
    Campaign,
    CampaignPolicy,
    Episode,
    Label,
    Policy,
    Task,
    Trial,
)
from tests.integration.fleet_support import REPO, check_invariants

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_demo_on_smoke_protocol_with_two_arms(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if k not in ("EVALFLEET_DATABASE_URL", "RAY_ADDRESS")}
    env.update(EVALFLEET_HOME=str(home), PYTHONUNBUFFERED="1", COLUMNS="120")
    cmd = [str(Path(sys.executable).parent / "evalfleet"), "demo", "--protocol", "smoke",
           "--arms", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=200)
    finally:  # the demo's bridges and Ray live in its session: nothing may outlive the test
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    assert proc.returncode == 0, out[-4000:]
    assert "15 trials" in out and "on 2 simulated" in out
    for line in ("overall", "oracle", "random", "episodes/h", "evalfleet dashboard",
                 "Detector sim-90 labelled 15 episodes", "--detector sim-90"):
        assert line in out, out[-4000:]

    store = Store(make_engine(f"sqlite:///{home / 'evalfleet.db'}"))
    try:
        with store.read() as s:
            (cid,) = s.scalars(select(Campaign.id))
            assert s.get(Campaign, cid).status == "done"
            rows = s.execute(
                select(Policy.name, Task.split, Label.success)
                .select_from(Episode)
                .join(Trial, Trial.id == Episode.trial_id)
                .join(Task, Task.id == Trial.task_id)
                .join(CampaignPolicy, CampaignPolicy.id == Trial.campaign_policy_id)
                .join(Policy, Policy.id == CampaignPolicy.policy_id)
                .join(Label, (Label.episode_id == Episode.id) & (Label.source == "sim"))
                .where(Episode.counted.is_(True))
            ).all()
            # the demo's detector labelled every counted episode (label source auto)
            auto = s.scalars(select(Label.detector_checksum).where(Label.source == "auto")).all()
            assert len(auto) == 15 and all(auto)
            assert s.get(Campaign, cid).audit_rate == 0.2
        audit = check_invariants(store, home / "media", [cid])
    finally:
        store.close()
    # 5 tasks x 3 policies x 1 trial: one counted episode each, every one labelled by the sim
    assert audit.trials == 15 and audit.counted == 15 and len(rows) == 15
    assert audit.media_files == 15
    rate: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for policy, split, success in rows:
        rate[(policy, split)].append(bool(success))
        rate[(policy, "all")].append(bool(success))

    def r(policy: str, split: str) -> float:
        v = rate[(policy, split)]
        return sum(v) / len(v)

    # the numbers come from real episodes: the scripted oracle leads on seen tasks and overall,
    # the vision heuristic falls on unseen ones, the random policy trails
    assert r("oracle", "seen") == 1.0
    assert r("oracle", "all") >= r("vision-heuristic", "all") > r("random", "all")
    assert r("vision-heuristic", "unseen") < r("vision-heuristic", "seen")
