"""fleet.yaml: the arms of a fleet and how policy workers are served. Parsed with pydantic.

    arms:
      - name: arm-1
        endpoint: tcp://10.0.0.11:5555        # the arm's BridgeServer (ROUTER)
        station: kitchen-1                      # Ray custom resource "station:kitchen-1"
        capabilities: [drawer]
        curve:                                  # optional: CurveZMQ keys
          client_secret: keys/orchestrator.key_secret
          server_public: keys/arm-1.key
      - name: sim-ur5-1                         # a simulated arm (SimFleet starts its bridge)
        endpoint: tcp://127.0.0.1:*             # '*': any free port
        sim:
          space: joint_position                 # ee_delta (default) | joint_position
          cameras: [front, {name: wrist, size: 128x128}]   # sizes WIDTHxHEIGHT, default 256x256
          max_joint_speed: 1.57                 # rad/s (joint_position)
    policy_workers:
      replicas: 1
      num_gpus: 0
      max_batch: 32
      batch_wait_ms: 2
      resources: {policy: 1}                    # optional: Ray custom resources (placement)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class FleetConfigError(ValueError):
    pass


class CurveKeys(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    client_secret: Path
    server_public: Path


class SimCamera(BaseModel):
    """One camera of a simulated arm: main/front (external) or wrist, size WIDTHxHEIGHT."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["main", "front", "wrist"]
    size: str = Field(default="256x256", pattern=r"^[0-9]+x[0-9]+$")

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        w, h = (int(x) for x in v.split("x"))
        if not (16 <= w <= 3840 and 16 <= h <= 2160):
            raise ValueError(f"camera size {v!r} out of range (16..3840 x 16..2160)")
        return v

    @property
    def arg(self) -> str:
        """The bridge CLI's --camera value."""
        return f"{self.name}={self.size}"


class SimArm(BaseModel):
    """A simulated arm's options (robots.drivers.sim.SimOptions): its action space and cameras.
    A camera is a name (size 256x256) or {name, size}."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    space: Literal["ee_delta", "joint_position"] = "ee_delta"
    cameras: tuple[SimCamera, ...] = Field(default=(SimCamera(name="main"),), min_length=1)
    max_joint_speed: float | None = Field(default=None, gt=0, le=10)

    @field_validator("cameras", mode="before")
    @classmethod
    def _names(cls, v: object) -> object:
        if isinstance(v, list | tuple):
            return tuple({"name": c} if isinstance(c, str) else c for c in v)
        return v

    @field_validator("cameras")
    @classmethod
    def _unique(cls, v: tuple[SimCamera, ...]) -> tuple[SimCamera, ...]:
        names = [c.name for c in v]
        if len(set(names)) != len(names) or {"main", "front"} <= set(names):
            raise ValueError(f"cameras {names}: each camera once (main and front are one view)")
        return v

    def bridge_args(self) -> tuple[str, ...]:
        """The `bridge serve` options that start this arm."""
        args = ["--space", self.space]
        for c in self.cameras:
            args += ["--camera", c.arg]
        if self.max_joint_speed is not None:
            args += ["--max-joint-speed", repr(self.max_joint_speed)]
        return tuple(args)


class ArmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    endpoint: str
    station: str = "default"
    capabilities: tuple[str, ...] = ()
    curve: CurveKeys | None = None
    timeout_ms: int = Field(default=2000, ge=50)
    sim: SimArm | None = None  # a simulated arm: SimFleet starts its bridge with these options

    @field_validator("endpoint")
    @classmethod
    def _zmq_endpoint(cls, v: str) -> str:
        if not v.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"endpoint {v!r} must be a ZeroMQ address like tcp://host:5555")
        return v


class PolicyWorkerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    replicas: int = Field(default=1, ge=1)
    num_gpus: float = Field(default=0, ge=0)
    num_cpus: float = Field(default=0.5, ge=0)
    max_batch: int = Field(default=32, ge=1)
    batch_wait_ms: float = Field(default=2.0, ge=0)
    # Ray custom resources each worker needs, e.g. {"policy": 1} to place workers on the
    # nodes that declare them (a GPU box) rather than next to the arms.
    resources: dict[str, float] = Field(default_factory=dict)


class FleetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    arms: tuple[ArmConfig, ...] = Field(min_length=1)
    policy_workers: PolicyWorkerConfig = PolicyWorkerConfig()
    lease_s: float = Field(default=120.0, gt=0)
    # how many arms of one station share one RobotHost process (orchestrator/actors/robot.py):
    # more per process cost less CPU (benchmarks/fleet.py: 4 per process, 1.8 vs 2.3 ms per
    # arm-step) but share a GIL and a fate: one arm's heavy Python work (an episode's result
    # being serialized) can delay the others' steps, and a host that dies aborts all its
    # arms' episodes (re-queued, not counted). 1 (the default) isolates every arm.
    arms_per_process: int = Field(default=1, ge=1, le=16)

    @field_validator("arms")
    @classmethod
    def _unique(cls, arms: tuple[ArmConfig, ...]) -> tuple[ArmConfig, ...]:
        names = [a.name for a in arms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(dupes)}")
        return arms


def load_fleet(path: Path) -> FleetConfig:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise FleetConfigError(f"{path}: cannot read fleet file: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise FleetConfigError(f"{path}: YAML syntax error: {e}".splitlines()[0]) from e
    try:
        return FleetConfig.model_validate(data or {})
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise FleetConfigError(f"{path}: field '{loc}': {err['msg']}") from e
