"""`evalfleet fleet stop` from a shell latches the bridge's e-stop before the command returns,
by the bridge's own monotonic clock (CLOCK_MONOTONIC is system-wide). How fast is a benchmark
figure, not a test assertion: benchmarks/safety_timing.py, BENCHMARKS.md."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from orchestrator.simfleet import SimFleet
from robots import estop
from robots.client import BridgeClient
from robots.protocol import PROTOCOL_VERSION


def test_fast_path_speaks_the_current_protocol_version() -> None:
    assert estop.PROTOCOL_VERSION == PROTOCOL_VERSION


def test_fleet_stop_from_a_shell_latches_before_the_command_returns(tmp_path: Path) -> None:
    exe = shutil.which("evalfleet", path=str(Path(sys.executable).parent))
    assert exe, "the evalfleet console script is not installed in this venv"
    with SimFleet(2, image_size="64x64") as fleet:
        cfg = fleet.config()
        fleet_yaml = tmp_path / "fleet.yaml"
        fleet_yaml.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        for _ in range(2):
            for arm in cfg.arms:
                with BridgeClient(arm.endpoint, timeout_ms=2000) as c:
                    c.rearm()
                    assert not c.status()["estopped"]
            t0 = time.monotonic_ns()
            res = subprocess.run([exe, "fleet", "stop", "--fleet", str(fleet_yaml)], check=False,
                                 capture_output=True, text=True, timeout=60)
            t_exit = time.monotonic_ns()
            assert res.returncode == 0, res.stdout + res.stderr
            assert "sim-1: e-stopped" in res.stdout and "sim-2: e-stopped" in res.stdout
            for arm in cfg.arms:
                with BridgeClient(arm.endpoint, timeout_ms=2000) as c:
                    st = c.status()
                assert st["estopped"]
                # latched by this command: after it started, before it exited
                assert t0 <= st["estop_since_mono_ns"] <= t_exit, (t0, st, t_exit)


def test_fleet_stop_reports_an_unreachable_arm(tmp_path: Path) -> None:
    fleet_yaml = tmp_path / "fleet.yaml"
    fleet_yaml.write_text(yaml.safe_dump(
        {"arms": [{"name": "ghost", "endpoint": "tcp://127.0.0.1:9"}]}))
    results = estop.estop_all(estop.targets_from_fleet_yaml(fleet_yaml, None), "test", 200)
    assert results["ghost"].startswith("FAILED")
