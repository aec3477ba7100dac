"""PolicyWorker: one shared inference service per campaign policy, batching across arms.

An async Ray actor. Every arm's RobotActor calls `act(input)` once per control step; calls
that arrive within `batch_wait_ms` of each other (or up to `max_batch`) go through the model
as one batch, as RT-2 served many robots from one inference service. The model runs on a
worker thread so the event loop keeps collecting the next batch meanwhile.

Why plain actors and not Ray Serve: measured in benchmarks/fleet.py and written up in
docs/architecture.md: a direct actor call is cheaper than a Serve handle call and needs no
HTTP proxy/controller processes on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import ray

from policies.base import PolicyInput, PolicyOutput


@dataclass(frozen=True)
class ActReply:
    output: PolicyOutput
    inference_s: float  # the model's own time for the batch this call was part of
    batch_size: int
    queued_s: float  # time this request waited for its batch to start


@ray.remote(max_restarts=3, max_task_retries=0)
class PolicyWorker:
    def __init__(self, config: dict[str, Any], max_batch: int = 32, batch_wait_ms: float = 2.0):
        from policies.registry import build_policy

        self.policy = build_policy(config)
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_ms / 1000.0
        self._pending: list[tuple[PolicyInput, asyncio.Future, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        self.calls = 0
        self.batches = 0

    async def metadata(self) -> dict[str, Any]:
        return self.policy.metadata.to_dict() | {"needs_privileged": self.policy.needs_privileged}

    async def ping(self) -> bool:
        return True

    async def stats(self) -> dict[str, int]:
        return {"calls": self.calls, "batches": self.batches}

    async def reset(self, arm: str, instruction: str) -> None:
        async with self._lock:  # never reset an arm's state in the middle of a batch
            self.policy.reset(arm, instruction)

    async def act(self, inp: PolicyInput) -> ActReply:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._pending.append((inp, fut, time.perf_counter()))
        self.calls += 1
        if len(self._pending) >= self.max_batch:
            self._flush_soon(0.0)
        elif self._timer is None:
            self._flush_soon(self.batch_wait_s)
        return await fut

    def _flush_soon(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay, lambda: asyncio.ensure_future(self._flush()))

    async def _flush(self) -> None:
        self._timer = None
        async with self._lock:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            if self._pending:
                self._flush_soon(0.0)
            if not batch:
                return
            started = time.perf_counter()
            inputs = [b[0] for b in batch]
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    None, self.policy.act, inputs
                )
            except Exception as e:  # noqa: BLE001 - handed to every caller of the batch
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(e)
                return
            self.batches += 1
            for (_, fut, queued_at), out in zip(batch, result.outputs, strict=True):
                if not fut.done():
                    fut.set_result(
                        ActReply(out, result.inference_s, len(batch), started - queued_at)
                    )
