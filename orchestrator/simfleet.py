"""SimFleet: N simulated arms, each its own BridgeServer process, for the demo, tests and
benchmarks. The very same bridge and client code paths as a real fleet.

    with SimFleet(4) as fleet:
        cfg = fleet.config()   # a FleetConfig pointing at the running bridges
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.fleet_config import ArmConfig, FleetConfig, PolicyWorkerConfig


class SimFleetError(RuntimeError):
    pass


class SimFleet:
    def __init__(
        self,
        n_arms: int,
        *,
        image_size: str = "256x256",
        watchdog_ms: float = 1000.0,
        driver: str = "sim",
        stations: tuple[str, ...] = ("default",),
        capabilities: tuple[str, ...] = ("drawer",),
        start_timeout_s: float = 60.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.n = n_arms
        self.image_size = image_size
        self.watchdog_ms = watchdog_ms
        self.driver = driver
        self.stations = stations
        self.capabilities = capabilities
        self.start_timeout_s = start_timeout_s
        self.extra_args = extra_args
        self.procs: dict[str, subprocess.Popen] = {}
        self.endpoints: dict[str, dict] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="evalfleet-simfleet-")

    def arm_names(self) -> list[str]:
        return [f"sim-{i + 1}" for i in range(self.n)]

    def start_arm(
        self, name: str, bind: str = "tcp://127.0.0.1:*", pub_bind: str = "tcp://127.0.0.1:*"
    ) -> None:
        ready = Path(self._tmp.name) / f"{name}.json"
        ready.unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "robots.cli", "bridge", "serve",
            "--driver", self.driver,
            "--bind", bind,
            "--pub-bind", pub_bind,
            "--watchdog-ms", str(self.watchdog_ms),
            "--image-size", self.image_size,
            "--ready-file", str(ready),
            "--log-level", "WARNING",
            *self.extra_args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(Path(self._tmp.name) / f"{name}.log", "ab") as log:  # the child keeps a copy
            self.procs[name] = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if ready.exists():
                try:
                    self.endpoints[name] = json.loads(ready.read_text())
                    return
                except json.JSONDecodeError:
                    pass  # being written
            if self.procs[name].poll() is not None:
                raise SimFleetError(
                    f"bridge for {name} exited with {self.procs[name].returncode}: see "
                    f"{Path(self._tmp.name) / (name + '.log')}"
                )
            time.sleep(0.05)
        raise SimFleetError(f"bridge for {name} did not start within {self.start_timeout_s} s")

    def kill_arm(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            os.killpg(p.pid, sig)
            p.wait(timeout=10)

    def restart_arm(self, name: str) -> None:
        """Kill an arm's bridge and bring a new one up on the same endpoints."""
        self.kill_arm(name)
        old = self.endpoints[name]
        self.start_arm(name, old["endpoint"], old.get("pub_endpoint") or "tcp://127.0.0.1:*")

    def config(self, **policy_workers: float) -> FleetConfig:
        arms = []
        for i, name in enumerate(self.arm_names()):
            arms.append(
                ArmConfig(
                    name=name,
                    endpoint=self.endpoints[name]["endpoint"],
                    station=self.stations[i % len(self.stations)],
                    capabilities=self.capabilities,
                )
            )
        return FleetConfig(arms=tuple(arms), policy_workers=PolicyWorkerConfig(**policy_workers))

    def __enter__(self) -> SimFleet:
        try:
            for name in self.arm_names():
                self.start_arm(name)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for name in list(self.procs):
            p = self.procs[name]
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=5)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait(timeout=5)
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        pass
        self.procs.clear()
        self._tmp.cleanup()

    def __exit__(self, *exc: object) -> None:
        self.close()
