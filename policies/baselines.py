"""Baseline policies for the simulated arm: the scripted oracle (upper bound), the vision
heuristic (seen-appearance colour matching), and a random policy (lower bound)."""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from policies.base import (
    ActionChunk,
    Policy,
    PolicyBatchResult,
    PolicyInput,
    PolicyMetadata,
    PolicyOutput,
    check_inputs,
    sha256_of,
)
from policies.oracle import OracleOptions, ScriptedOracle, options_config, space_io
from policies.vision import VisionHeuristic, VisionOptions
from robots.protocol_actions import action_of
from robots.types import ActionSpace

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
    space: Literal["ee_delta", "joint_position"] = Field(
        "ee_delta", description="ee_delta[7] (RT-2) or joint_position[7] (the sim's UR5e)")


class RandomPolicy(Policy):
    """Uniform random actions within the action space; reproducible per (seed, arm, episode).

    `space: joint_position`: uniform joint targets within the sim UR5e's joint ranges (scaled
    about their middle) and a uniform gripper, as joint_position[7] chunks of length 1."""

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
        config = options_config("random", VERSION, self.options)
        self.metadata = PolicyMetadata(
            name=name,
            version=VERSION,
            kind="random",
            action_space=self.space,
            checksum=sha256_of(config),
            config=config,
            io=space_io(self.options.space),
        )
        self._joint = self.options.space == "joint_position"
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
        if self._joint:
            from robots.sim.kinematics import JOINT_HIGH, JOINT_LOW

            lo, hi = np.asarray((*JOINT_LOW, 0.0)), np.asarray((*JOINT_HIGH, 1.0))
        else:
            lo, hi = np.asarray(self.space.low), np.asarray(self.space.high)
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * self.options.scale
        outs = []
        for x in inputs:
            if x.arm not in self._rngs:
                self.reset(x.arm, x.instruction)
            rng = self._rngs[x.arm]
            v = mid + half * rng.uniform(-1.0, 1.0, size=len(lo))
            term = bool(rng.random() < self.options.terminate_prob)
            if self._joint:
                hz = self.space.control_hz
                chunk = ActionChunk(v.reshape(1, -1), hz, terminate_at=0 if term else None)
                outs.append(PolicyOutput(chunk=chunk, chunk_hz=hz))
            else:
                outs.append(PolicyOutput(action_of(tuple(v), terminate=term)))
        return PolicyBatchResult(outs, time.perf_counter() - t0)
