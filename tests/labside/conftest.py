"""Fixtures for the lab-side tests: the lab's own bridge on a thread (closed after the test),
a fleet config pointing at it, campaigns on the lab protocol."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.labside.lab_bridge import LabBridge, LabConfig

LAB_PROTOCOL = Path(__file__).with_name("lab_protocol.yaml")


@pytest.fixture
def lab() -> Iterator[Callable[..., LabBridge]]:
    """lab(**LabConfig fields) -> a started LabBridge; every one is closed at teardown."""
    made: list[LabBridge] = []

    def make(**kw: Any) -> LabBridge:
        b = LabBridge(LabConfig(**kw)).start()
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def lab_fleet(bridge: LabBridge, *, name: str = "lab-1", timeout_ms: int = 1000,
              lease_s: float = 30.0) -> Any:
    """The fleet.yaml a lab writes for its one arm (as a FleetConfig)."""
    from orchestrator.fleet_config import FleetConfig

    return FleetConfig.model_validate({
        "arms": [{"name": name, "endpoint": bridge.endpoint, "timeout_ms": timeout_ms}],
        "policy_workers": {"replicas": 1, "num_cpus": 0},
        "lease_s": lease_s,
    })
