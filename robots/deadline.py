"""DeadlineDealer: the one request-with-a-deadline path of evalfleet's ZeroMQ clients
(robots/client.py BridgeClient, orchestrator/actors/dataplane.py PolicyClient).

A DEALER socket, never REQ (a lost reply cannot wedge it). `request` sends one message,
waits for the reply carrying the same request id until the deadline, discards replies to
earlier requests (counted in `late_replies`), and on timeout closes the socket so that the
next call opens a fresh one (libzmq reconnects with backoff; a late reply can never reach the
new socket). An optional `tick` runs every `tick_s` while waiting (a liveness probe); when it
raises, the socket is closed too and its exception propagates. Used from one thread at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import zmq

R = TypeVar("R")


class DeadlinePassed(TimeoutError):
    """No reply within the deadline. `detail`: what `diagnose` saw before the socket closed
    (e.g. a CURVE handshake failure), or None."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


class DeadlineDealer:
    """`configure(sock)` runs on every new socket before it connects (options, CURVE keys,
    a monitor); `before_close(sock)` before every close (disable that monitor)."""

    def __init__(self, context: zmq.Context, endpoint: str, *,
                 configure: Callable[[zmq.Socket], None] | None = None,
                 before_close: Callable[[zmq.Socket], None] | None = None) -> None:
        self.context, self.endpoint = context, endpoint
        self.configure, self.before_close = configure, before_close
        self._sock: zmq.Socket | None = None
        self._rcvtimeo = -1
        self.late_replies = 0
        self.timeouts = 0

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def socket(self) -> zmq.Socket:
        if self._sock is None:
            s = self.context.socket(zmq.DEALER)
            s.linger = 0
            if self.configure is not None:
                self.configure(s)
            s.connect(self.endpoint)
            self._sock, self._rcvtimeo = s, -1
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            if self.before_close is not None:
                self.before_close(self._sock)
            self._sock.close(linger=0)
            self._sock = None

    def send(self, parts: list[Any]) -> None:
        """Send without blocking; a full queue (peer unreachable) is left to the deadline."""
        try:
            self.socket().send_multipart(parts, zmq.NOBLOCK, copy=True)
        except zmq.Again:
            pass

    def request(self, parts: list[Any], rid: int, timeout_s: float,
                decode: Callable[[list[zmq.Frame]], tuple[int | None, R]], *,
                tick: Callable[[], None] | None = None, tick_s: float = 0.25,
                diagnose: Callable[[], str | None] | None = None) -> R:
        """Send `parts` (request id `rid`) and return `decode(reply)[1]` of the reply whose id is
        `rid`. Raises DeadlinePassed after `timeout_s`, whatever `decode` or `tick` raise."""
        # copied, not zero-copy: for frames under ~1 MB a memcpy is cheaper than pyzmq's
        # zero-copy path, which wakes its garbage-collector thread per message
        self.send(parts)
        sock = self.socket()
        now = time.monotonic()
        deadline = now + timeout_s
        next_tick = now + tick_s if tick is not None else deadline
        while True:
            until = min(deadline, next_tick)
            wait_ms = int((until - now) * 1000) + (1 if until < deadline else 0)
            if wait_ms <= 0 and until >= deadline:
                self._expire(timeout_s, diagnose)
            if wait_ms != self._rcvtimeo:  # a setsockopt per call costs more than this check
                sock.rcvtimeo = self._rcvtimeo = max(0, wait_ms)
            try:
                got_id, reply = decode(sock.recv_multipart(copy=False))
            except zmq.Again:
                pass
            else:
                if got_id == rid:
                    return reply
                self.late_replies += 1  # a reply to an earlier, timed-out request
            now = time.monotonic()
            if tick is not None and now >= next_tick:
                try:
                    tick()
                except BaseException:
                    self.close()
                    raise
                now = time.monotonic()
                next_tick = now + tick_s
            if now >= deadline:
                self._expire(timeout_s, diagnose)

    def _expire(self, timeout_s: float, diagnose: Callable[[], str | None] | None) -> None:
        detail = diagnose() if diagnose is not None else None
        self.close()
        self.timeouts += 1
        raise DeadlinePassed(f"no reply from {self.endpoint} within {timeout_s:.3g} s", detail)
