"""The per-step data plane between RobotActors and a PolicyWorker: ZeroMQ, not Ray calls.

Ray stays the control plane (placement, lifecycle, restarts, `reset`, metadata). Every policy
query (frames + proprio + instruction [+ privileged state]) and its reply (an action chunk)
travel over one DEALER -> ROUTER connection per arm, in the bridge's framing: a msgpack
header and raw parts, received zero-copy. No pickle. The messages (their own version, strict)
are encoded and decoded only by robots/protocol_dataplane.py (via robots.protocol): the reply's
chunk is H x D float64 values as one raw buffer part; this module does sockets, batching and
liveness only. A chunked policy is queried once per chunk, not once per step (orchestrator/chunks.py). Why a socket
and not a Ray call per query, with the measurements: docs/architecture.md ("The control
loop and where time goes", "Policy serving").

Server (inside the PolicyWorker process): one thread owns the ROUTER socket and the model.
It takes every request already queued; then, only if another arm is due to query within
`batch_wait_s` (predicted from each arm's last request and its period: `expected_soon`), it
waits for it, up to `batch_wait_s` and `max_batch`; then it runs the policy once on the batch
and answers each arm. Arms querying together are batched; an arm on its own phase of the
period is answered at once. Requests that arrive while the model runs queue in the socket and
form the next batch, so a slow model batches more by itself.

Client (inside a RobotActor): `PolicyClient.act(input)` with a deadline (robots/deadline.py,
the request path BridgeClient uses too: stale replies are discarded by request id, the socket
is replaced after a timeout); while it waits it checks, every `liveness_s`, that the worker is still the same live instance (a dead or
restarted worker never answers a request it lost), and raises PolicyUnavailable otherwise.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import zmq

from orchestrator.batching import expected_soon
from policies.base import PartialBatch, Policy, PolicyInput, PolicyUnreachable
from robots import protocol as P
from robots.deadline import DeadlineDealer, DeadlinePassed

log = logging.getLogger("evalfleet.dataplane")

_MAX_PERIOD_S = 5.0  # longer gaps between an arm's requests are not its control period


class PolicyUnavailable(RuntimeError):
    """The policy worker did not answer (dead, restarted, or too slow): a policy fault."""


class PolicyError(RuntimeError):
    """The worker answered that the policy itself raised on this batch."""


#: What `PolicyClient.act` (and `PolicyWorker.act`) return: robots/protocol_dataplane.py.
ActReply = P.PolicyReply


# --- server -----------------------------------------------------------------------------------

class PolicyServer:
    """The batching loop of a PolicyWorker, on its own thread. `lock` guards the policy
    (the worker's `reset` takes it too)."""

    def __init__(self, policy: Policy, *, max_batch: int, batch_wait_s: float,
                 host: str = "127.0.0.1", lock: threading.Lock | None = None) -> None:
        self.policy = policy
        self.max_batch = max(1, int(max_batch))
        self.batch_wait_s = max(0.0, float(batch_wait_s))
        self.lock = lock or threading.Lock()
        self.instance = uuid.uuid4().hex
        self.calls = self.batches = self.errors = 0
        self._rhythm: dict[str, tuple[float | None, float | None]] = {}  # arm -> (last, period)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.linger = 0
        self._sock.rcvhwm = self._sock.sndhwm = 4096
        try:
            self._sock.bind(f"tcp://{host}:*")
        except zmq.ZMQError:
            self._sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy-dataplane", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def activate(self, arm: str) -> None:
        """An episode starts on `arm`: forget its old rhythm (learned again from its steps)."""
        self._rhythm.pop(arm, None)

    def _note_arrival(self, arm: str, now: float) -> None:
        last, period = self._rhythm.get(arm, (None, None))
        if last is not None:
            dt = now - last
            if 0 < dt < _MAX_PERIOD_S:
                period = dt if period is None else 0.7 * period + 0.3 * dt
        self._rhythm[arm] = (now, period)

    def _expected_soon(self, present: set[str], now: float, until: float) -> bool:
        return expected_soon(self._rhythm, present, now, until)

    def _take(self, batch: list, flags: int) -> bool:
        """Receive one message into `batch`; False when none was waiting (NOBLOCK)."""
        try:
            parts = self._sock.recv_multipart(flags, copy=False)
        except zmq.Again:
            return False
        ident, body = parts[0], parts[1:]
        try:
            msg = P.decode_policy_message(body)
        except (ValueError, TypeError) as e:  # ProtocolError is a ValueError
            self.errors += 1
            rid = e.request_id if isinstance(e, P.ProtocolError) else None
            self._send(ident, P.encode_policy_failure(rid, f"bad request: {e}"))
            return True
        if isinstance(msg, P.PolicyEnd):
            self._rhythm.pop(msg.arm, None)
            return True
        now = time.perf_counter()
        self._note_arrival(msg.input.arm, now)
        batch.append((ident, msg.id, msg.input, now))
        return True

    def _send(self, ident: Any, data: bytes | list[Any]) -> None:
        parts = data if isinstance(data, list) else [data]
        try:
            self._sock.send_multipart([ident, *parts], zmq.NOBLOCK, copy=True)
        except zmq.ZMQError:  # peer gone or queue full: the caller's deadline reports it
            pass

    def _run(self) -> None:
        sock = self._sock
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                batch: list = []
                while len(batch) < self.max_batch and self._take(batch, zmq.NOBLOCK):
                    pass
                if not batch:
                    continue
                deadline = batch[0][3] + self.batch_wait_s
                arms = {b[2].arm for b in batch}
                while len(batch) < self.max_batch:
                    if not self._expected_soon(arms, time.perf_counter(), deadline):
                        break  # nobody else is due within the batch window
                    left = deadline - time.perf_counter()
                    if left <= 0 or not sock.poll(max(1, int(left * 1000 + 0.999))):
                        break
                    while len(batch) < self.max_batch and self._take(batch, zmq.NOBLOCK):
                        pass
                    arms = {b[2].arm for b in batch}
                self._run_batch(batch)
        finally:
            sock.close(linger=0)
            self._ctx.term()

    def _run_batch(self, batch: list) -> None:
        started = time.perf_counter()
        errors: list[BaseException | None] = [None] * len(batch)
        try:
            with self.lock:
                result = self.policy.act([b[2] for b in batch])
            outputs, inference_s = list(result.outputs), result.inference_s
            if len(outputs) != len(batch):
                raise RuntimeError(f"policy returned {len(outputs)} outputs for "
                                   f"{len(batch)} inputs")
        except PartialBatch as pb:  # a remote policy: some arms answered, some did not
            outputs, errors, inference_s = pb.outputs, pb.errors, pb.inference_s
        except Exception as e:
            self.errors += 1
            unavailable = isinstance(e, PolicyUnreachable)  # a remote policy did not answer
            if not unavailable:
                log.exception("policy act failed")
            msg = f"{e.__class__.__name__}: {e}"[:1000]
            for ident, rid, _, _ in batch:
                self._send(ident, P.encode_policy_failure(rid, msg, unavailable=unavailable))
            return
        self.calls += len(batch)
        self.batches += 1
        for (ident, rid, _, queued_at), out, err in zip(batch, outputs, errors, strict=True):
            if out is None:
                self.errors += 1
                e = err or RuntimeError("policy returned no output for this input")
                self._send(ident, P.encode_policy_failure(
                    rid, f"{e.__class__.__name__}: {e}"[:1000],
                    unavailable=isinstance(e, PolicyUnreachable)))
                continue
            reply = ActReply(out, inference_s, len(batch), started - queued_at)
            try:
                self._send(ident, P.encode_policy_reply(rid, reply))
            except P.ProtocolError as e:  # an output the wire cannot carry: the arm's fault
                self.errors += 1
                self._send(ident, P.encode_policy_failure(rid, f"policy output not sendable: {e}"))


# --- client -----------------------------------------------------------------------------------

class PolicyClient:
    """One arm's connection to a policy worker's data plane (one thread at a time)."""

    def __init__(self, endpoint: str, instance: str, *, timeout_s: float,
                 alive: Callable[[], str | None] | None = None, liveness_s: float = 0.25) -> None:
        self.endpoint, self.instance = endpoint, instance
        self.timeout_s, self.liveness_s = timeout_s, liveness_s
        self.alive = alive  # -> the worker's current instance id (raises if it is dead)
        self._ids = itertools.count(1)
        self._dealer = DeadlineDealer(zmq.Context.instance(), endpoint)

    @property
    def late_replies(self) -> int:
        return self._dealer.late_replies

    def close(self) -> None:
        self._dealer.close()

    def end(self, arm: str) -> None:
        """The arm's episode ended: the worker stops waiting for it (fire and forget)."""
        with contextlib.suppress(zmq.ZMQError):
            self._dealer.send([P.encode_policy_end(arm)])

    def _check_alive(self) -> None:
        assert self.alive is not None
        try:
            current = self.alive()
        except Exception as e:
            raise PolicyUnavailable(
                f"policy worker died: {e.__class__.__name__}: {e}"[:500]) from e
        if current != self.instance:
            raise PolicyUnavailable("policy worker restarted; the request was lost")

    def act(self, inp: PolicyInput) -> ActReply:
        rid = next(self._ids)
        try:
            reply = self._dealer.request(
                P.encode_policy_request(rid, inp), rid, self.timeout_s, P.decode_policy_reply,
                tick=self._check_alive if self.alive is not None else None,
                tick_s=self.liveness_s)
        except DeadlinePassed:
            raise PolicyUnavailable(f"no reply from policy worker at {self.endpoint} within "
                                    f"{self.timeout_s:.1f} s") from None
        if isinstance(reply, P.PolicyFailure):
            if reply.unavailable:  # a remote policy's server did not answer: not its fault
                raise PolicyUnavailable(f"policy unavailable: {reply.error}")
            raise PolicyError(f"policy failed: {reply.error}")
        return reply
