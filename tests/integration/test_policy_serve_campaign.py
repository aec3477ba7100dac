"""A campaign whose policy runs behind `evalfleet policy serve` (issue 11): sim arms, the
policy kind `openpi` (one websocket per arm, in the Ray policy worker) pointing at the
server hosting a `random` policy in this process. The campaign completes, every trial has
exactly one counted episode, and the steps applied exactly the action rows the server sent
(one query per step: the served random policy answers chunks of one row)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.runner import FleetRunner
from orchestrator.simfleet import SimFleet
from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
from orchestrator.store.models import Episode, Step, Trial
from policies.base import PolicyBatchResult, PolicyInput
from policies.baselines import RandomPolicy
from policies.remote.openpi_server import OpenpiPolicyServer, ServeOptions
from policies.remote.presets import preset
from protocols.loader import load_protocol
from tests.integration.fleet_support import (
    FAST_PROTOCOL,
    IMAGE,
    check_invariants,
    fast_fleet,
    ray_local,  # noqa: F401 - pytest fixture (module-scoped local Ray)
    run_to_done,
    started,
)
from tests.integration.test_policy_serve import SIM_MAPPING

pytestmark = pytest.mark.timeout(240)


class RecordingRandom(RandomPolicy):
    """The random policy, remembering every action row it answered and each batch's size."""

    def __init__(self) -> None:
        super().__init__({"seed": 5, "scale": 0.5}, name="served-random")
        self.rows: list[tuple[float, ...]] = []
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        result = super().act(inputs)
        with self._lock:
            self.batch_sizes.append(len(inputs))
            for out in result.outputs:
                self.rows.extend(out.the_chunk.row(i) for i in range(out.the_chunk.horizon))
        return result


@pytest.mark.usefixtures("ray_local")
def test_a_campaign_on_sim_arms_runs_a_policy_served_over_openpi(sqlite_store,
                                                                  tmp_path: Path) -> None:
    store = sqlite_store
    media = tmp_path / "media"
    hosted = RecordingRandom()
    opts = ServeOptions(host="127.0.0.1", port=0, batch_wait_s=0.02)
    with OpenpiPolicyServer(hosted, preset("generic", SIM_MAPPING), opts) as server:
        server.wait_ready(30)
        spec = PolicySpec(name="remote-random", kind="openpi", config={
            "kind": "openpi",
            "options": {"url": server.url, "preset": "generic", "mapping": SIM_MAPPING,
                        "control_hz": 10.0, "horizon": 1, "execute_steps": 1,
                        "call_timeout_s": 20.0}})
        with store.write() as s:
            register_policy(s, spec)
            cid = create_campaign(s, name="served", loaded=load_protocol(FAST_PROTOCOL),
                                  policy_names=["remote-random"], trials_per_task=1, seed=1).id
        with SimFleet(2, image_size=IMAGE) as fleet:
            runner = FleetRunner(store, fast_fleet(fleet, timeout_ms=3000), media_dir=str(media))
            with started(runner):
                run_to_done(runner, deadline_s=150)
        stats = server.stats

    audit = check_invariants(store, media, [cid])
    assert audit.trials == 4 and audit.counted == 4 and audit.recorded == 4
    assert audit.aborted == []
    with store.read() as s:
        eids = list(s.scalars(select(Episode.id).join(Trial, Trial.id == Episode.trial_id)
                              .where(Trial.campaign_id == cid)))
        applied = [tuple(st.action) for st in s.scalars(
            select(Step).where(Step.episode_id.in_(eids)).order_by(Step.episode_id, Step.idx))]
    assert applied, "no steps were recorded"
    # one query per step (chunks of one row): the steps applied exactly the rows sent
    assert Counter(applied) == Counter(hosted.rows)
    assert stats.requests == sum(hosted.batch_sizes) == len(applied)
    assert stats.errors == 0 and stats.refused == 0
