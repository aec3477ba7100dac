"""A campaign on a Ray cluster of three nodes started in-process (issue 5): each RobotActor is
placed by its station's custom resource on the node beside its arm, the policy workers run on
another node (the one declaring the "policy" resource), and every trial counts once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.runner import FleetRunner
from orchestrator.simfleet import SimFleet
from tests.integration.fleet_support import (
    IMAGE,
    check_invariants,
    fast_fleet,
    new_campaign,
    run_to_done,
    started,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Head (policy) + node A (station:a) + node B (station:b), one CPU each."""
    import ray
    import ray._private.utils
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        ray.shutdown()
    # Cluster publishes its address in /tmp/ray/ray_current_cluster, where any plain
    # `ray.init()` on this machine (other test runs, other users) would find and join it.
    monkeypatch.setattr(ray._private.utils, "write_ray_address", lambda *a, **k: None)
    c = Cluster(initialize_head=False)
    try:
        c.add_node(num_cpus=1, resources={"policy": 4.0}, include_dashboard=False)
        c.add_node(num_cpus=1, resources={"station:a": 10.0})
        c.add_node(num_cpus=1, resources={"station:b": 10.0})
        c.wait_for_nodes(timeout=60)
        ray.init(address=c.address, log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _node_with(resource: str) -> str:
    import ray

    (node,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and resource in n["Resources"]]
    return node


def test_campaign_on_a_three_node_cluster(cluster, sqlite_store, tmp_path: Path) -> None:
    import ray

    store = sqlite_store
    media = tmp_path / "media"
    cid = new_campaign(store, "multinode")  # 2 policies x 4 tasks = 8 trials
    with SimFleet(2, image_size=IMAGE, stations=("a", "b")) as fleet:
        cfg = fast_fleet(fleet, timeout_ms=3000, resources={"policy": 1.0})
        assert [a.station for a in cfg.arms] == ["a", "b"]
        runner = FleetRunner(store, cfg, media_dir=str(media))
        with started(runner):
            run_to_done(runner, deadline_s=120)
            arm_nodes = {name: arm.info.node_id for name, arm in runner.arms.items()}
            workers = [w for pool in runner.workers.values() for w in pool]
            worker_nodes = {
                ray.get(w.__ray_call__.remote(
                    lambda self: ray.get_runtime_context().get_node_id()), timeout=30)
                for w in workers
            }
    node_a, node_b, head = _node_with("station:a"), _node_with("station:b"), _node_with("policy")
    assert len({node_a, node_b, head}) == 3
    assert arm_nodes == {"sim-1": node_a, "sim-2": node_b}
    assert len(workers) == 2 and worker_nodes == {head}
    audit = check_invariants(store, media, [cid])
    assert audit.trials == 8 and audit.counted == 8 and audit.aborted == []
