"""ScriptedOracle: the upper bound. Reads the simulator's privileged state (SimDriver
`privileged_state()`), runs the scripted controller of the episode's skill
(policies/scripts.py) with optional Gaussian noise on every motion, verifies each step
(grasp held, can toppled, drawer moved) and retries from the current state when one failed.

Two spaces (option `space`): `ee_delta` (default) emits RT-2's ee_delta[7] actions;
`joint_position` emits joint_position[7] (j1..j6 rad + gripper 0 closed..1 open) for the
sim's UR5e arm: the script's ee delta becomes an ee target (current ee + delta, inside the
workspace box) and the joint target comes from damped-least-squares IK
(robots/sim/kinematics.py) seeded with the arm's current joints (privileged `joints`).
Either way it reads neither a camera nor proprio, and declares RT-2's one external camera
(PolicyIO cameras=(external,), state=()), as policies.registry.policy_io says.
"""

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
from policies.scripts import Episode, ScriptRunner
from robots.protocol_actions import action_values
from robots.spaces import RT2_IO, CameraRole, GripperConvention, PolicyIO, SpaceKind
from robots.types import Action, ActionSpace, Workspace

VERSION = "1"


class OracleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    noise: float = Field(0.0, ge=0.0, description="std (m) of noise on each translation delta")
    seed: int = 0
    tolerance: float = Field(0.006, gt=0.0, description="position tolerance (m) of waypoints")
    max_retries: int = Field(4, ge=0)
    space: Literal["ee_delta", "joint_position"] = Field(
        "ee_delta", description="the action space emitted: ee_delta[7] or joint_position[7]")


def space_io(space: str) -> PolicyIO:
    """The PolicyIO of a privileged sim policy (oracle, random) emitting `space`: 7 values
    (6 + gripper, 0 closed .. 1 open) and, like RT-2's, one external camera (the sim always
    has one; these policies do not look at it) and no state field. ee_delta: RT2_IO."""
    if space == "ee_delta":
        return RT2_IO
    return PolicyIO(emits=SpaceKind(space), action_dim=7, gripper=GripperConvention.OPEN_IS_1,
                    cameras=(CameraRole.EXTERNAL,), state=())


def options_config(kind: str, version: str, options: BaseModel) -> dict:
    """The config dict whose sha256 is the policy's checksum. `space` is left out when it is
    the default (ee_delta), so ee_delta policies keep the checksums they had before."""
    opts = options.model_dump()
    if opts.get("space") == "ee_delta":
        del opts["space"]
    return {"kind": kind, "version": version, "options": opts}


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
        config = options_config("oracle", VERSION, o)
        self.metadata = PolicyMetadata(
            name=name,
            version=VERSION,
            kind="oracle",
            action_space=self.space,
            checksum=sha256_of(config),
            config=config,
            io=space_io(o.space),
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
            assert x.privileged is not None
            a = self.runner.step(ep, x.privileged)
            if self.options.space == "joint_position":
                outs.append(joint_output(a, x.privileged, self.space.control_hz, x.arm))
            else:
                outs.append(PolicyOutput(a))
        return PolicyBatchResult(outs, time.perf_counter() - t0)


def joint_target(action: Action, privileged: dict, arm: str = "") -> tuple[float, ...]:
    """The joint_position[7] command for an ee_delta action from the arm's privileged state:
    IK of (ee + delta, clipped to the workspace box) seeded with the current joints."""
    from robots.sim import kinematics

    q = privileged.get("joints")
    if q is None:
        raise ValueError(f"oracle space joint_position on arm {arm!r}: its privileged state has "
                         "no 'joints'; run it on a sim arm with space: joint_position, or set "
                         "the oracle's space: ee_delta")
    g = action.gripper if np.isfinite(action.gripper) else float(privileged["gripper"])
    if action.terminate:
        return (*(float(v) for v in q), g)
    ee = privileged["ee"]
    box = Workspace()
    pose = [float(ee[i]) + d for i, d in enumerate(action_values(action)[:6])]
    pose[:3] = [min(box.high[i], max(box.low[i], pose[i])) for i in range(3)]
    return (*kinematics.ik(pose, q, iters=50).q, g)


def joint_output(action: Action, privileged: dict, control_hz: float, arm: str = "") -> PolicyOutput:
    values = joint_target(action, privileged, arm)
    chunk = ActionChunk(np.asarray([values]), control_hz,
                        terminate_at=0 if action.terminate else None)
    return PolicyOutput(chunk=chunk, chunk_hz=control_hz)
