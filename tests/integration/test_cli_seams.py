"""The real CLI against bridges that refuse or do not fit:

- `campaign create --fleet` refuses a policy that matches no arm, in one line naming both sides;
- `campaign run` on an arm that refuses every reset (DRIVER_ERROR) exits 3 with 0 episodes
  recorded, saying the code and message;
- `campaign run` of a policy that matches no arm of the fleet exits 5 before leasing a trial.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from orchestrator.fleet_config import ArmConfig, FleetConfig
from orchestrator.store import migrate
from orchestrator.store.campaigns import PolicySpec, register_policy
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import Episode, Trial
from tests.integration.fakes import BridgeProcess
from tests.integration.fleet_support import FAST_PROTOCOL, new_campaign
from tests.integration.test_campaign_lifecycle_fleet import _evalfleet

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
HERE = "tests.integration.test_fleet_seams"
MISMATCH = "policy rand-a emits ee_delta[7]; arm ur5-1 accepts joint_position[7]"


def _fleet_yaml(tmp_path: Path, name: str, bridge: BridgeProcess) -> Path:
    cfg = FleetConfig(arms=(ArmConfig(name=name, endpoint=bridge.endpoint, timeout_ms=1000),),
                      lease_s=30.0)
    p = tmp_path / f"fleet-{name}.yaml"
    p.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return p


def test_create_and_run_refuse_with_the_arm_code_and_the_space_mismatch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(EVALFLEET_HOME=str(tmp_path / "home"), EVALFLEET_DATABASE_URL=url, COLUMNS="200")
    try:
        with store.write() as s:
            register_policy(s, PolicySpec(name="rand-a", kind="random",
                                          config={"kind": "random", "options": {}}))
        with BridgeProcess(tmp_path, driver=f"{HERE}:JointDriver") as joint:
            fleet = _fleet_yaml(tmp_path, "ur5-1", joint)
            code, out = _evalfleet("campaign", "create", "--protocol", str(FAST_PROTOCOL),
                                   "--policy", "rand-a", "--name", "refused-at-create",
                                   "--fleet", str(fleet), env=env)
            assert code == 1 and MISMATCH in out and "Traceback" not in out, out[-3000:]
            assert "refused-at-create" not in _evalfleet("campaign", "list", env=env)[1]
            # created without a fleet (the store knows no arm's spaces yet): `run` refuses
            code, out = _evalfleet("campaign", "create", "--protocol", str(FAST_PROTOCOL),
                                   "--policy", "rand-a", "--name", "nomatch", env=env)
            assert code == 0, out[-3000:]
            code, out = _evalfleet("campaign", "run", "nomatch", "--fleet", str(fleet), env=env)
            assert code == 5 and MISMATCH in out and "Traceback" not in out, out[-3000:]
            with store.read() as s:
                assert s.scalars(select(Trial).where(Trial.attempts > 0)).all() == []
            # now the store knows ur5-1's spaces: create refuses without --fleet too
            code, out = _evalfleet("campaign", "create", "--protocol", str(FAST_PROTOCOL),
                                   "--policy", "rand-a", "--name", "refused-again", env=env)
            assert code == 1 and MISMATCH in out, out[-3000:]

        cid = new_campaign(store, "refused", policies=("rand-a",))
        with BridgeProcess(tmp_path, driver=f"{HERE}:RefusingDriver") as lab:
            fleet = _fleet_yaml(tmp_path, "lab-1", lab)
            code, out = _evalfleet("campaign", "run", "refused", "--fleet", str(fleet), env=env)
        assert code == 3, out[-3000:]
        flat = " ".join(out.split())
        assert "0 episodes recorded, 20 aborted" in flat, out[-3000:]
        assert "campaign refused incomplete: 4 of 4 trials given up" in flat, out[-3000:]
        assert "DRIVER_ERROR" in flat and "gripper calibration lost" in flat, out[-3000:]
        assert "UnserializableException" not in out and "Traceback" not in out
        with store.read() as s:
            reasons = set(s.scalars(select(Episode.abort_reason).join(Trial).where(
                Trial.campaign_id == cid)))
        assert len(reasons) == 1 and "DRIVER_ERROR" in reasons.pop()
    finally:
        engine.dispose()
