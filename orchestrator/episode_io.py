"""The episode loop's shell parts (orchestrator/episode.py): the background policy query,
the bridge client's act for a vector in the arm's space, and the arm's declared space.

Kept apart so the loop stays readable; nothing here decides anything (orchestrator/chunks.py
does).
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from orchestrator.step_record import EE_DELTA_LABEL
from policies.base import PolicyInput
from robots import protocol as P
from robots.client import BridgeClient
from robots.spaces import StateSpec
from robots.types import Action


class Querier:
    """The background query for the next chunk: one thread per episode, one query at a time
    (the data-plane client is used by one thread at a time: the loop only calls the policy
    itself when no query is in flight)."""

    def __init__(self, policy: Callable[[PolicyInput], Any], name: str) -> None:
        self.policy = policy
        self.requests: queue.Queue[tuple[int, PolicyInput, float] | None] = queue.Queue()
        self.replies: queue.Queue[tuple[int, Any, float, float]] = (
            queue.Queue())
        self.t = threading.Thread(target=self._run, name=f"chunks-{name}", daemon=True)
        self.t.start()

    def _run(self) -> None:
        while (req := self.requests.get()) is not None:
            step, inp, sent = req
            try:
                reply: Any = self.policy(inp)
            except BaseException as e:  # noqa: BLE001 - re-raised in the loop's thread
                reply = e
            self.replies.put((step, reply, sent, time.perf_counter()))

    def send(self, step: int, inp: PolicyInput) -> None:
        self.requests.put((step, inp, time.perf_counter()))

    def close(self, timeout_s: float) -> None:
        """Wait for a query still in flight (it ends by its reply or the policy client's own
        deadline): the data-plane client must not be used by two threads at once, and the
        RobotActor uses it again (`end`, the next episode) as soon as the loop returns."""
        self.requests.put(None)
        self.t.join(timeout=timeout_s)


def act_fn(client: BridgeClient) -> Callable[[tuple[float, ...], bool], Any]:
    """`client.act` for a vector in the arm's space + terminate; with a client that only
    takes an RT-2 Action (protocol v1 clients), the 7-vector as an Action."""
    try:
        params = inspect.signature(client.act).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if "terminate" in params:
        return lambda values, terminate: client.act(values, terminate=terminate)

    def act_v1(values: tuple[float, ...], terminate: bool) -> Any:
        return client.act(P.action_of(values, terminate=terminate))

    return act_v1


def space_of(client: BridgeClient) -> tuple[str, StateSpec | None]:
    """The arm's declared action space label and state spec (after hello); RT-2's
    ee_delta[7] for a client that does not know them."""
    caps = getattr(client, "capabilities", None)
    spec = getattr(caps, "action_spec", None)
    state = getattr(caps, "state", None)
    label = getattr(spec, "label", None)
    return (label if isinstance(label, str) else EE_DELTA_LABEL,
            state if isinstance(state, StateSpec) else None)


def applied_values(applied: Any) -> tuple[float, ...]:
    if isinstance(applied, Action):
        return P.action_values(applied)
    return tuple(map(float, applied))
