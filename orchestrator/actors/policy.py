"""PolicyWorker: one shared inference service per campaign policy, batching across arms.

A Ray actor for the control plane (placement on a GPU node, restarts, `reset`, metadata) with
a ZeroMQ data plane for the policy queries (orchestrator/actors/dataplane.py): each arm's
RobotActor sends a query's frames over a DEALER socket (once per step for a single-step
policy, once per chunk for a chunked one) and gets an action chunk back. The worker's
data-plane thread takes every query already queued and waits (at most `batch_wait_ms`, at
most `max_batch`) only if another arm is due to query within that window, predicted from
each arm's rhythm; then the batch goes through the model once, as RT-2 served many robots
from one inference service.

Why not a Ray call per query, and why not Ray Serve: measured in benchmarks/fleet.py and
written up in docs/architecture.md ("The control loop and where time goes", "Policy
serving: plain actors vs Ray Serve"): a frame as a Ray actor argument goes through the
object store and costs several ms of CPU across processes per call; a Serve handle call
costs more still.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import ray

from orchestrator.actors.dataplane import ActReply, PolicyServer
from policies.base import PolicyInput

__all__ = ["ActReply", "PolicyWorker", "worker_start_error"]

_EXC_PREFIX = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception): ")


def worker_start_error(e: BaseException) -> str:
    """One line from a worker that failed to start: Ray wraps the creation task's exception
    (WeightsMismatchError, PolicyConfigError, ...) in a multi-line ActorDiedError; keep the
    original message, the last line of that text."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    last = lines[-1] if lines else e.__class__.__name__
    return _EXC_PREFIX.sub("", last, count=1)[:400]


@ray.remote(max_restarts=3, max_task_retries=0)
class PolicyWorker:
    def __init__(self, config: dict[str, Any], max_batch: int = 32, batch_wait_ms: float = 2.0,
                 expected_checksum: str | None = None):
        from orchestrator.weights import build_verified_policy

        # the checkpoint must be the one registered (`policy register` took its checksum):
        # a mismatch fails the worker with one line naming the policy and both checksums
        self.policy = build_verified_policy(config, expected_checksum)
        self._lock = threading.Lock()
        try:
            host = ray.util.get_node_ip_address()
        except Exception:  # noqa: BLE001 - not in a Ray worker (tests): loopback
            host = "127.0.0.1"
        self.server = PolicyServer(self.policy, max_batch=max_batch,
                                   batch_wait_s=batch_wait_ms / 1000.0, host=host, lock=self._lock)
        self.server.start()

    async def metadata(self) -> dict[str, Any]:
        return self.policy.metadata.to_dict() | {"needs_privileged": self.policy.needs_privileged}

    async def ping(self) -> str:
        """The instance id: changes when Ray restarts the worker (in-flight requests are lost)."""
        return self.server.instance

    async def stats(self) -> dict[str, int]:
        s = self.server
        return {"calls": s.calls, "batches": s.batches, "errors": s.errors}

    async def reset(self, arm: str, instruction: str) -> dict[str, str]:
        """Start an episode on `arm`; returns the data plane's endpoint and instance id."""
        with self._lock:  # never reset an arm's state in the middle of a batch
            self.policy.reset(arm, instruction)
        self.server.activate(arm)
        return {"endpoint": self.server.endpoint, "instance": self.server.instance}

    async def act(self, inp: PolicyInput) -> ActReply:
        """One unbatched step through Ray (debugging and tests; episodes use the data plane)."""
        with self._lock:
            result = self.policy.act([inp])
        return ActReply(result.outputs[0], result.inference_s, 1, 0.0)
