"""`evalfleet campaign run`, as a lab runs it against its own robot side: when the arm refuses
every reset (DRIVER_ERROR with a message), every trial gives up, and the command exits
non-zero saying why (the arm's code and message), instead of "done" with 0 episodes.
The command starts (and stops) its own local Ray; it runs once for the module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.config import get_settings
from orchestrator.store import migrate
from orchestrator.store.db import Store, make_engine
from tests.integration.fleet_support import new_campaign
from tests.labside.conftest import LAB_PROTOCOL, lab_fleet
from tests.labside.lab_bridge import LabBridge, LabConfig
from tests.labside.support import campaign_status, trial_statuses

pytestmark = pytest.mark.timeout(180)

REFUSAL = "the table is not clear; remove the tools and confirm at the pendant"


@dataclass
class CliRun:
    exit_code: int
    output: str  # whitespace collapsed (rich wraps long lines)
    raw: str
    trials: list[str]
    campaign: str
    bridge: LabBridge


@pytest.fixture(scope="module")
def refused_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliRun]:
    import ray

    from orchestrator.cli import app

    if ray.is_initialized():  # left by an earlier module: the command starts its own Ray
        ray.shutdown()
    tmp = tmp_path_factory.mktemp("lab-cli")
    engine = make_engine(f"sqlite:///{tmp / 'store.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    bridge = LabBridge(LabConfig(versions=(1, 2), refuse_reset=REFUSAL)).start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVALFLEET_HOME", str(tmp / "home"))
        mp.setenv("EVALFLEET_DATABASE_URL", str(engine.url))
        mp.setenv("RAY_AUTH_MODE", "disabled")
        get_settings.cache_clear()
        try:
            fleet_yaml = tmp / "fleet.yaml"
            fleet_yaml.write_text(yaml.safe_dump(lab_fleet(bridge).model_dump(mode="json")))
            cid = new_campaign(store, "lab-cli-refuse", policies=("rand-a",),
                               protocol=LAB_PROTOCOL)
            res = CliRunner().invoke(app, ["campaign", "run", "lab-cli-refuse",
                                           "--fleet", str(fleet_yaml)])
            yield CliRun(res.exit_code, " ".join(res.output.split()), res.output,
                         trial_statuses(store, cid), campaign_status(store, cid), bridge)
        finally:
            if ray.is_initialized():
                ray.shutdown()
            bridge.close()
            store.close()
            get_settings.cache_clear()


def test_campaign_run_exits_non_zero_with_the_arms_code_when_every_trial_gave_up(
        refused_run: CliRun) -> None:
    assert refused_run.exit_code != 0, refused_run.raw
    assert "DRIVER_ERROR" in refused_run.output, refused_run.raw
    assert set(refused_run.trials) == {"given_up"}
    assert refused_run.campaign != "done"
    assert refused_run.bridge.log
    assert all(h["type"] != "act" for h in refused_run.bridge.log)  # nothing ever moved


def test_campaign_run_shows_the_arms_message(refused_run: CliRun) -> None:
    """Issue 10: errors from the arm keep their code *and message* all the way to the CLI."""
    assert REFUSAL in refused_run.output, refused_run.raw
