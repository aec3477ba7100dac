"""ScriptedOracle: the upper bound. Reads the simulator's privileged state (SimDriver
`privileged_state()`), runs the scripted controller of the episode's skill
(policies/scripts.py) with optional Gaussian noise on every motion, verifies each step
(grasp held, can toppled, drawer moved) and retries from the current state when one failed.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from policies.base import (
    Policy,
    PolicyBatchResult,
    PolicyInput,
    PolicyMetadata,
    PolicyOutput,
    check_inputs,
    sha256_of,
)
from policies.scripts import Episode, ScriptRunner
from robots.types import ActionSpace

VERSION = "1"


class OracleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    noise: float = Field(0.0, ge=0.0, description="std (m) of noise on each translation delta")
    seed: int = 0
    tolerance: float = Field(0.006, gt=0.0, description="position tolerance (m) of waypoints")
    max_retries: int = Field(4, ge=0)


def catalog_dims(name: str) -> tuple[float, float, bool]:
    """(footprint radius, height, tall) of a simulator catalogue object (ground truth)."""
    from robots.sim.catalog import OBJECTS

    k = OBJECTS[name]
    return k.size, k.height, k.uprightable


class ScriptedOracle(Policy):
    needs_privileged = True

    def __init__(
        self,
        options: OracleOptions | dict | None = None,
        name: str = "oracle",
        action_space: ActionSpace | None = None,
    ) -> None:
        self.options = o = (
            options if isinstance(options, OracleOptions) else OracleOptions(**(options or {}))
        )
        self.space = action_space or ActionSpace()
        self.runner = ScriptRunner(
            self.space,
            catalog_dims,
            tolerance=o.tolerance,
            noise=o.noise,
            verify=True,
            max_retries=o.max_retries,
        )
        config = {"kind": "oracle", "version": VERSION, "options": o.model_dump()}
        self.metadata = PolicyMetadata(
            name=name,
            version=VERSION,
            kind="oracle",
            action_space=self.space,
            checksum=sha256_of(config),
            config=config,
        )
        self._episodes: dict[str, Episode] = {}
        self._count = 0

    def reset(self, arm: str, instruction: str) -> None:
        self._count += 1
        seed = [self.options.seed, zlib.crc32(arm.encode()), self._count]
        self._episodes[arm] = Episode(instruction, np.random.default_rng(seed))

    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        t0 = time.perf_counter()
        check_inputs(inputs, needs_privileged=True, where="ScriptedOracle.act")
        outs = []
        for x in inputs:
            ep = self._episodes.get(x.arm)
            if ep is None or ep.instruction != x.instruction:
                self.reset(x.arm, x.instruction)
                ep = self._episodes[x.arm]
            outs.append(PolicyOutput(self.runner.step(ep, x.privileged)))
        return PolicyBatchResult(outs, time.perf_counter() - t0)
