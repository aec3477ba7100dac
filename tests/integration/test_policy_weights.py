"""A policy worker refuses a checkpoint whose weights are not the ones registered: the Ray
actor fails to start, and what the runner records is one line naming the policy and both
checksums (never a traceback, never the other weights running under the old name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.actors.policy import PolicyWorker, worker_start_error
from orchestrator.weights import checksum_path
from tests.integration.fleet_support import ray_local  # noqa: F401 - module-scoped local Ray


@pytest.mark.usefixtures("ray_local")
def test_worker_with_swapped_weights_fails_to_start_with_one_line(tmp_path: Path) -> None:
    import ray

    ckpt = tmp_path / "tiny-vla"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"registered weights")
    expected = checksum_path(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"someone else's weights")
    found = checksum_path(ckpt)
    config = {"name": "tiny-vla", "kind": "vla", "path": str(ckpt), "options": {}}
    worker = PolicyWorker.options(num_cpus=0).remote(config, 4, 2.0, expected)
    with pytest.raises(ray.exceptions.RayError) as e:  # the creation task failed
        ray.get(worker.metadata.remote(), timeout=120)
    line = worker_start_error(e.value)
    assert "\n" not in line
    assert "'tiny-vla'" in line and expected[:16] in line and found[:16] in line
    ray.kill(worker, no_restart=True)


@pytest.mark.usefixtures("ray_local")
def test_worker_without_a_registered_checksum_starts_as_before() -> None:
    import ray

    config = {"name": "r", "kind": "random", "options": {}}
    worker = PolicyWorker.options(num_cpus=0).remote(config, 4, 2.0, None)
    meta = ray.get(worker.metadata.remote(), timeout=120)
    assert meta["kind"] == "random"
    ray.kill(worker, no_restart=True)
