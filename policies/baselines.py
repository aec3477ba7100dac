"""Baseline policies for the simulated arm: the scripted oracle (upper bound), the vision
heuristic (seen-appearance colour matching), and a random policy (lower bound)."""

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
from policies.oracle import OracleOptions, ScriptedOracle
from policies.vision import VisionHeuristic, VisionOptions
from robots.types import Action, ActionSpace

__all__ = [
    "OracleOptions",
    "RandomOptions",
    "RandomPolicy",
    "ScriptedOracle",
    "VisionHeuristic",
    "VisionOptions",
]
VERSION = "1"


class RandomOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = 0
    scale: float = Field(1.0, gt=0.0, le=1.0, description="fraction of the action space used")
    terminate_prob: float = Field(0.0, ge=0.0, le=1.0)


class RandomPolicy(Policy):
    """Uniform random actions within the action space; reproducible per (seed, arm, episode)."""

    needs_privileged = False

    def __init__(
        self,
        options: RandomOptions | dict | None = None,
        name: str = "random",
        action_space: ActionSpace | None = None,
    ) -> None:
        self.options = (
            options if isinstance(options, RandomOptions) else RandomOptions(**(options or {}))
        )
        self.space = action_space or ActionSpace()
        config = {"kind": "random", "version": VERSION, "options": self.options.model_dump()}
        self.metadata = PolicyMetadata(
            name=name,
            version=VERSION,
            kind="random",
            action_space=self.space,
            checksum=sha256_of(config),
            config=config,
        )
        self._rngs: dict[str, np.random.Generator] = {}
        self._episodes = 0

    def reset(self, arm: str, instruction: str) -> None:
        self._episodes += 1
        self._rngs[arm] = np.random.default_rng(
            [self.options.seed, zlib.crc32(arm.encode()), self._episodes]
        )

    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        t0 = time.perf_counter()
        check_inputs(inputs, where="RandomPolicy.act")
        lo, hi = np.asarray(self.space.low), np.asarray(self.space.high)
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * self.options.scale
        outs = []
        for x in inputs:
            if x.arm not in self._rngs:
                self.reset(x.arm, x.instruction)
            rng = self._rngs[x.arm]
            v = mid + half * rng.uniform(-1.0, 1.0, size=len(lo))
            term = bool(rng.random() < self.options.terminate_prob)
            outs.append(PolicyOutput(Action.from_continuous(tuple(v), terminate=term)))
        return PolicyBatchResult(outs, time.perf_counter() - t0)
