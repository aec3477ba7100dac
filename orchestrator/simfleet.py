"""SimFleet: N simulated arms, each its own BridgeServer process, for the demo, tests and
benchmarks. The very same bridge and client code paths as a real fleet.

    with SimFleet(4) as fleet:
        cfg = fleet.config()   # a FleetConfig pointing at the running bridges

A mixed fleet (per-arm action space and cameras) comes from a fleet.yaml whose arms carry a
`sim:` block (orchestrator/fleet_config.py SimArm):

    with SimFleet.from_yaml(Path("fleet.yaml")) as fleet:   # or SimFleet(arms=cfg.arms)
        cfg = fleet.config()   # the same arms, endpoints of the running bridges
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from orchestrator.fleet_config import ArmConfig, FleetConfig, PolicyWorkerConfig, load_fleet


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
        arms: Sequence[ArmConfig] = (),
        policy_workers: PolicyWorkerConfig | None = None,
    ) -> None:
        """`n_arms` default sim arms named sim-1.., or, with `arms`, exactly those arms: each
        one's `sim` options (space, cameras), station, capabilities; its endpoint is where
        its bridge binds (tcp://127.0.0.1:* picks a free port)."""
        missing = [a.name for a in arms if a.sim is None]
        if missing:
            raise SimFleetError(f"SimFleet: arms {missing} have no `sim:` block; SimFleet only "
                                "starts simulated arms")
        self._arms = {a.name: a for a in arms}
        self.n = len(arms) if arms else n_arms
        self._workers = policy_workers
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

    @classmethod
    def from_config(cls, cfg: FleetConfig, **kwargs: object) -> SimFleet:
        """The arms of a fleet config that have a `sim:` block (the others are left out)."""
        arms = tuple(a for a in cfg.arms if a.sim is not None)
        if not arms:
            raise SimFleetError("SimFleet: no arm of the fleet config has a `sim:` block")
        return cls(len(arms), arms=arms, policy_workers=cfg.policy_workers,
                   **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_yaml(cls, path: Path, **kwargs: object) -> SimFleet:
        return cls.from_config(load_fleet(path), **kwargs)

    def arm_names(self) -> list[str]:
        if self._arms:
            return list(self._arms)
        return [f"sim-{i + 1}" for i in range(self.n)]

    def start_arm(
        self, name: str, bind: str | None = None, pub_bind: str = "tcp://127.0.0.1:*"
    ) -> None:
        arm = self._arms.get(name)
        if bind is None:
            bind = arm.endpoint if arm is not None else "tcp://127.0.0.1:*"
        sim_args = arm.sim.bridge_args() if arm is not None and arm.sim is not None else ()
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
            *sim_args,
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
        if self._arms:
            workers = (PolicyWorkerConfig(**policy_workers) if policy_workers or self._workers is None
                       else self._workers)
            return FleetConfig(arms=tuple(
                a.model_copy(update={"endpoint": self.endpoints[n]["endpoint"]})
                for n, a in self._arms.items()), policy_workers=workers)
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

    def __enter__(self) -> Self:
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
