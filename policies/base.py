"""The policy interface that the orchestrator's policy workers host.

A policy acts on a batch of inputs, one per arm, in one call (`act`), and reports its own
inference seconds for the call so the orchestrator can separate model time from orchestration
time. `reset(arm, instruction)` starts an episode on an arm. `metadata.checksum` (sha256 of the
weights and the config) identifies exactly which policy ran.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robots.types import Action, ActionSpace


@dataclass(frozen=True)
class PolicyInput:
    """What one arm gives the policy for one step."""

    frames: dict[str, np.ndarray]  # camera name -> HxWx3 uint8 RGB
    proprio: tuple[float, ...]  # ee x y z roll pitch yaw, gripper opening
    instruction: str
    privileged: dict | None = None  # sim ground truth, only for policies that need it
    arm: str = ""


@dataclass(frozen=True)
class PolicyOutput:
    """One arm's step result. `hold_reason` is set when the policy could not produce an action
    (the action is then Action.hold()); `text`/`tokens`/`plan` are what a VLA generated."""

    action: Action
    tokens: tuple[int, ...] | None = None
    text: str | None = None
    plan: str | None = None
    hold_reason: str | None = None


@dataclass(frozen=True)
class PolicyBatchResult:
    """Outputs in input order + the policy's own inference seconds for the whole call.

    Unpacks like a tuple: `outputs, inference_s = policy.act(inputs)`."""

    outputs: list[PolicyOutput]
    inference_s: float

    def __iter__(self) -> Iterator:
        return iter((self.outputs, self.inference_s))


@dataclass(frozen=True)
class PolicyMetadata:
    name: str
    version: str
    kind: str
    action_space: ActionSpace
    checksum: str  # sha256 hex of the weights + config
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "action_space": {
                "low": list(self.action_space.low),
                "high": list(self.action_space.high),
                "control_hz": self.action_space.control_hz,
            },
            "checksum": self.checksum,
            "config": self.config,
        }


class Policy(ABC):
    """Batched across arms. Subclasses set `metadata` and `needs_privileged`."""

    needs_privileged: bool = False
    metadata: PolicyMetadata

    @abstractmethod
    def reset(self, arm: str, instruction: str) -> None:
        """Start an episode on `arm` (clears that arm's controller state)."""

    @abstractmethod
    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        """One action per input, in order, and the inference seconds of this call."""

    def close(self) -> None:
        """Release models/devices (default: nothing)."""


def check_inputs(
    inputs: Sequence[PolicyInput],
    *,
    needs_privileged: bool = False,
    camera: str | None = None,
    where: str = "policy",
) -> None:
    """Shared validation with one clear error per problem."""
    for i, x in enumerate(inputs):
        if not isinstance(x, PolicyInput):
            raise TypeError(f"{where}: inputs[{i}] is {type(x).__name__}, expected PolicyInput")
        if not x.instruction or not x.instruction.strip():
            raise ValueError(
                f"{where}: inputs[{i}] (arm {x.arm!r}) has an empty instruction; "
                "every step needs the task's instruction text"
            )
        if needs_privileged and x.privileged is None:
            raise ValueError(
                f"{where}: inputs[{i}] (arm {x.arm!r}) has no privileged state; this "
                "policy only runs on simulated arms with privileged_state()"
            )
        if camera is not None:
            check_frame(x, i, camera, where)


def check_frame(x: PolicyInput, i: int, camera: str | None, where: str) -> np.ndarray:
    if not x.frames:
        raise ValueError(f"{where}: inputs[{i}] (arm {x.arm!r}) has no camera frames")
    name = camera if camera else next(iter(x.frames))
    if name not in x.frames:
        raise ValueError(
            f"{where}: inputs[{i}] (arm {x.arm!r}) has no camera {name!r}; "
            f"cameras: {sorted(x.frames)}. Set the policy's 'camera' option"
        )
    f = x.frames[name]
    if (
        not isinstance(f, np.ndarray)
        or f.ndim != 3
        or f.shape[2] != 3
        or f.dtype != np.uint8
        or f.shape[0] < 8
        or f.shape[1] < 8
    ):
        shape = getattr(f, "shape", None)
        dtype = getattr(f, "dtype", type(f).__name__)
        raise ValueError(
            f"{where}: inputs[{i}] (arm {x.arm!r}) camera {name!r} frame has shape "
            f"{shape} dtype {dtype}; expected an HxWx3 uint8 RGB image (H, W >= 8)"
        )
    return f


def sha256_of(config: dict, paths: Sequence[Path] = (), extra: bytes = b"") -> str:
    """Checksum of the canonical JSON config, then each file's name and bytes, then `extra`."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    h.update(extra)
    return h.hexdigest()
