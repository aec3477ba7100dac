"""The policy interface that the orchestrator's policy workers host.

A policy acts on a batch of inputs, one per arm, in one call (`act`), and reports its own
inference seconds for the call so the orchestrator can separate model time from orchestration
time. `reset(arm, instruction)` starts an episode on an arm. `metadata.checksum` (sha256 of the
weights and the config) identifies exactly which policy ran.

Every output is an action chunk (`PolicyOutput.chunk`, H x D at the policy's control rate):
a chunked policy (pi0, ACT, ...) sets it; a single-step policy (RT-2) sets `action` and its
chunk is that action, a chunk of length 1, so the episode loop has one code path.
`metadata.io` declares the space the policy emits and what it reads (robots/spaces.py);
`metadata.chunking` how many of a chunk's steps the loop executes before the next one.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robots.protocol_actions import action_values
from robots.spaces import RT2_IO, PolicyIO
from robots.types import Action, ActionSpace


@dataclass(frozen=True, eq=False)
class ActionChunk:
    """H actions of D values in the policy's declared space, computed for one policy step.

    `values` is a read-only float64 (H, D) array; `control_hz` the rate its rows are meant
    for; `step` the episode step whose observation it was computed from (set by the episode
    loop; 0 from a policy); `terminate_at` the row at which the policy asks to end the
    episode (None: never). NaN in a gripper value means "keep the gripper as it is"
    (Action.hold())."""

    values: np.ndarray
    control_hz: float
    step: int = 0
    terminate_at: int | None = None

    def __post_init__(self) -> None:
        v = np.array(self.values, dtype=np.float64, copy=True)
        if v.ndim == 1:
            v = v.reshape(1, -1)
        if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
            raise ValueError(f"action chunk: values must be H x D with H, D >= 1, got shape "
                             f"{np.shape(self.values)}")
        if not self.control_hz > 0:
            raise ValueError(f"action chunk: control_hz must be > 0, got {self.control_hz}")
        if self.terminate_at is not None and not 0 <= self.terminate_at < v.shape[0]:
            raise ValueError(f"action chunk: terminate_at {self.terminate_at} outside 0..{v.shape[0] - 1}")
        v.flags.writeable = False
        object.__setattr__(self, "values", v)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActionChunk):
            return NotImplemented
        return (self.control_hz, self.step, self.terminate_at) == (
            other.control_hz, other.step, other.terminate_at) and bool(
            np.array_equal(self.values, other.values, equal_nan=True))

    __hash__ = None  # type: ignore[assignment]

    @property
    def horizon(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    def row(self, i: int) -> tuple[float, ...]:
        return tuple(float(x) for x in self.values[i])

    def terminates(self, i: int) -> bool:
        return self.terminate_at is not None and i >= self.terminate_at

    def at_step(self, step: int) -> ActionChunk:
        """The same chunk, stamped with the episode step it was computed for."""
        return ActionChunk(self.values, self.control_hz, step, self.terminate_at)

    @classmethod
    def of_action(cls, action: Action, control_hz: float) -> ActionChunk:
        """A single RT-2 action as a chunk of length 1 (ee_delta[7])."""
        return cls(np.asarray([action_values(action)], dtype=np.float64), control_hz,
                   terminate_at=0 if action.terminate else None)


@dataclass(frozen=True)
class Chunking:
    """How the episode loop executes a policy's chunks: `horizon` rows per chunk, of which
    the first `execute_steps` run open-loop before the next chunk takes over (1, 1: one
    query per step, RT-2). `temporal_ensemble`: ACT-style averaging over every chunk that
    covers a step, weights exp(-ensemble_k * i), i = 0 for the oldest chunk."""

    horizon: int = 1
    execute_steps: int = 1
    temporal_ensemble: bool = False
    ensemble_k: float = 0.01

    def __post_init__(self) -> None:
        if self.horizon < 1 or not 1 <= self.execute_steps <= self.horizon:
            raise ValueError(f"chunking: need 1 <= execute_steps ({self.execute_steps}) <= "
                             f"horizon ({self.horizon})")
        if self.ensemble_k < 0:
            raise ValueError("chunking: ensemble_k must be >= 0")

    @classmethod
    def from_dict(cls, d: dict | None) -> Chunking:
        """From `PolicyMetadata.to_dict()["chunking"]` (None: one query per step)."""
        if not d:
            return SINGLE_STEP
        return cls(int(d["horizon"]), int(d["execute_steps"]), bool(d["temporal_ensemble"]),
                   float(d["ensemble_k"]))


SINGLE_STEP = Chunking()


@dataclass(frozen=True)
class PolicyInput:
    """What one arm gives the policy for one step."""

    frames: dict[str, np.ndarray]  # camera name -> HxWx3 uint8 RGB
    proprio: tuple[float, ...]  # ee x y z roll pitch yaw, gripper opening
    instruction: str
    privileged: dict | None = None  # sim ground truth, only for policies that need it
    arm: str = ""
    state_names: tuple[str, ...] = ()  # the arm's name of each proprio value; (): not known


@dataclass(frozen=True)
class PolicyOutput:
    """One arm's step result. `hold_reason` is set when the policy could not produce an action
    (the action is then Action.hold()); `text`/`tokens`/`plan` are what a VLA generated.

    A single-step policy sets `action` (RT-2's ee_delta); a chunked policy sets `chunk`.
    Either way `chunk` is set after construction: an `action` alone becomes a chunk of
    length 1 (at `chunk_hz`, the rate of the policy's action space), so consumers read
    `chunk` only. `action` stays None for a chunk-only output."""

    action: Action | None = None
    tokens: tuple[int, ...] | None = None
    text: str | None = None
    plan: str | None = None
    hold_reason: str | None = None
    chunk: ActionChunk | None = None
    chunk_hz: float = 5.0

    def __post_init__(self) -> None:
        if self.chunk is None:
            if self.action is None:
                raise ValueError("policy output: set `action` (one step) or `chunk` (H x D)")
            object.__setattr__(self, "chunk", ActionChunk.of_action(self.action, self.chunk_hz))

    @property
    def the_chunk(self) -> ActionChunk:
        """`chunk`, typed as always set."""
        assert self.chunk is not None
        return self.chunk


@dataclass(frozen=True)
class PolicyBatchResult:
    """Outputs in input order + the policy's own inference seconds for the whole call.

    Unpacks like a tuple: `outputs, inference_s = policy.act(inputs)`."""

    outputs: list[PolicyOutput]
    inference_s: float

    def __iter__(self) -> Iterator:
        return iter((self.outputs, self.inference_s))


class PolicyUnreachable(RuntimeError):
    """A policy that runs elsewhere did not answer (server down, too slow, connection lost):
    not the trial's fault. Its episode aborts with cause `worker`; the trial is re-queued."""


class PartialBatch(RuntimeError):
    """Some inputs of a batch got no output: `outputs[i]` is None where `errors[i]` says why
    (a PolicyUnreachable or another exception). The policy worker answers each arm its own."""

    def __init__(self, outputs: Sequence[PolicyOutput | None],
                 errors: Sequence[BaseException | None], inference_s: float) -> None:
        first = next((e for e in errors if e is not None), None)
        super().__init__(str(first) if first is not None else "partial batch")
        self.outputs, self.errors, self.inference_s = list(outputs), list(errors), inference_s


@dataclass(frozen=True)
class PolicyMetadata:
    name: str
    version: str
    kind: str
    action_space: ActionSpace
    checksum: str  # sha256 hex of the weights + config
    config: dict = field(default_factory=dict)
    io: PolicyIO = RT2_IO  # what the policy emits and reads (robots/spaces.py)
    chunking: Chunking = SINGLE_STEP  # horizon / execute_steps; rate: action_space.control_hz

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
            "io": {
                "emits": self.io.emits.value,
                "action_dim": self.io.action_dim,
                "gripper": self.io.gripper.value,
                "cameras": [c.value for c in self.io.cameras],
                "state": list(self.io.state),
                "camera_names": list(self.io.camera_names),
            },
            "chunking": {
                "horizon": self.chunking.horizon,
                "execute_steps": self.chunking.execute_steps,
                "temporal_ensemble": self.chunking.temporal_ensemble,
                "ensemble_k": self.chunking.ensemble_k,
            },
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
