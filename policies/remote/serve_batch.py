"""One batch of `evalfleet policy serve` through the hosted policy (no sockets, no event loop).

`run_batch` is what the server's worker thread runs for each batch: the resets of the
connections whose episode starts now, then ONE `Policy.act` over every request left, then
each output as its preset's reply map. A reset or reply that fails is that request's error
only; an `act` that raises is every request's error. Errors are one line (the traceback goes
to the server's log). Also the server's option and state types.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from policies.base import ActionChunk, Policy, PolicyInput
from policies.remote.serve_core import error_line
from robots.spaces import PolicyIO

__all__ = ["BatchItem", "ObservationPreset", "Outcome", "ServeError", "ServeOptions",
           "ServeState", "run_batch"]

log = logging.getLogger("evalfleet.serve")


class ObservationPreset(Protocol):
    """What the server needs of a policies.remote.presets.Preset."""

    @property
    def name(self) -> str: ...

    @property
    def io(self) -> PolicyIO: ...  # what the wire carries: cameras, state, the reply's space

    def input(self, obs: Mapping[str, Any], arm: str) -> PolicyInput: ...

    def reply(self, chunk: ActionChunk) -> dict[str, Any]: ...


class ServeError(RuntimeError):
    """The server could not start, or its policy could not be loaded; one line."""


class ServeState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STOPPING = "stopping"


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000  # 0: a free port (server.port says which)
    max_batch: int = 32
    batch_wait_s: float = 0.005
    max_message_bytes: int = 32 * 1024 * 1024
    api_key: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)  # extra keys (e.g. the preset's)
    start_timeout_s: float = 30.0
    stop_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not in 0..65535 (--port)")
        if self.max_batch < 1:
            raise ValueError(f"max batch must be >= 1, got {self.max_batch} (--max-batch)")
        if not 0 <= self.batch_wait_s <= 10:
            raise ValueError(f"batch wait must be 0..10000 ms, got {self.batch_wait_s * 1000:g} "
                             "(--batch-wait-ms)")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max message size must be >= 1024 bytes, got "
                             f"{self.max_message_bytes} (--max-message-mb)")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the Api-Key is empty")


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch: the connection (the policy's arm), its input, and the
    instruction to reset the arm with first (None: its episode goes on)."""

    arm: str
    input: PolicyInput
    reset_instruction: str | None


@dataclass(frozen=True)
class Outcome:
    """A request's result: its reply map (plus timing) or one error line."""

    reply: dict[str, Any] | None = None
    error: str | None = None
    infer_s: float = 0.0
    policy_s: float = 0.0
    batch_size: int = 0
    started: float = 0.0


def run_batch(policy: Policy, preset: ObservationPreset,
              items: Sequence[BatchItem]) -> list[Outcome]:
    """Resets, then ONE Policy.act over the batch, then each reply map; one Outcome per
    item, in order (the server's worker thread runs it)."""
    outcomes: list[Outcome | None] = [None] * len(items)
    for i, item in enumerate(items):
        if item.reset_instruction is None:
            continue
        try:
            policy.reset(item.arm, item.reset_instruction)
        except Exception as e:  # this arm's error only
            log.exception("%s: policy reset failed", item.arm)
            outcomes[i] = Outcome(error=error_line("policy reset failed", e))
    live = [i for i, x in enumerate(outcomes) if x is None]
    if live:
        started = time.perf_counter()
        try:
            result = policy.act([items[i].input for i in live])
            if len(result.outputs) != len(live):
                raise RuntimeError(f"policy returned {len(result.outputs)} outputs for "
                                   f"{len(live)} inputs")
        except Exception as e:  # every request of the batch gets the line
            log.exception("policy act failed on a batch of %d", len(live))
            line = error_line("policy act failed", e)
            for i in live:
                outcomes[i] = Outcome(error=line)
        else:
            infer_s = time.perf_counter() - started
            for i, out in zip(live, result.outputs, strict=True):
                try:
                    reply = preset.reply(out.the_chunk)
                except Exception as e:  # this arm's error only
                    log.exception("%s: policy output has no openpi reply", items[i].arm)
                    outcomes[i] = Outcome(error=error_line("policy reply failed", e))
                    continue
                outcomes[i] = Outcome(reply, None, infer_s, result.inference_s, len(live),
                                       started)
    return [x if x is not None else Outcome(error="policy server error") for x in outcomes]
