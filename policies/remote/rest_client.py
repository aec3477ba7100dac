"""HTTP POST to one server, one keep-alive connection per arm, with a deadline per call.

The imperative shell of REST policy kinds (policies/remote/openvla_rest.py). `RestArms.post`
sends one body per arm, concurrently (a worker thread per call, at most `max_workers`), and
returns, per arm, its reply or the `RemoteCallError` (a `PolicyUnreachable`: the server did not
answer, not the policy's fault) that says why it has none.

The stale-action guarantee: HTTP/1.1 answers requests on a connection in order, so a reply
that arrives after its deadline would be read as the answer to the arm's *next* request if
the connection were kept. A call that fails or outlives its deadline therefore drops its
connection (the socket is shut down under the blocked thread, and the arm gets a fresh link);
a reply read after the deadline is discarded, never returned. Nothing is retried: the next
step asks again, on a new connection.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Self

from policies.base import PolicyUnreachable

__all__ = ["RemoteCallError", "RestArms", "RestReply"]


class RemoteCallError(PolicyUnreachable):
    """A call that failed, timed out or answered too much; the text is one line."""


@dataclass(frozen=True)
class RestReply:
    status: int
    reason: str
    body: bytes
    seconds: float  # the call's wall time, connect included


class _Link:
    """One arm's keep-alive connection; never reused after a failure or a late reply."""

    def __init__(self, scheme: str, host: str, port: int) -> None:
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        self.conn = cls(host, port, timeout=1.0)
        self._lock = threading.Lock()
        self.dead = False
        self.reused = False  # the connection has answered before (keep-alive)

    def call(self, path: str, body: bytes, headers: dict[str, str], deadline: float,
             max_reply_bytes: int) -> RestReply:
        t0 = time.monotonic()
        with self._lock:
            try:
                try:
                    status, reason, data = self._exchange(path, body, headers, deadline,
                                                          max_reply_bytes)
                except _STALE_KEEPALIVE:
                    if not self.reused:
                        raise
                    # the server closed the idle keep-alive connection before reading the
                    # request (uvicorn does after 5 s): ask once more on a fresh one
                    self.conn.close()
                    status, reason, data = self._exchange(path, body, headers, deadline,
                                                          max_reply_bytes)
            except BaseException:
                self.drop()
                raise
            if time.monotonic() > deadline:  # answered, but too late: never used
                self.drop()
                raise TimeoutError("the reply came after the deadline")
            self.reused = True
            return RestReply(status, reason, data, time.monotonic() - t0)

    def _exchange(self, path: str, body: bytes, headers: dict[str, str], deadline: float,
                  max_reply_bytes: int) -> tuple[int, str, bytes]:
        if self.conn.sock is None:
            self.reused = False
            self.conn.timeout = _left(deadline)
            self.conn.connect()
        self._arm_timeout(deadline)
        self.conn.request("POST", path, body=body, headers=headers)
        self._arm_timeout(deadline)
        resp = self.conn.getresponse()
        self._arm_timeout(deadline)
        data = resp.read(max_reply_bytes + 1)
        if len(data) > max_reply_bytes:
            raise RemoteCallError(f"reply larger than {max_reply_bytes} bytes")
        if not resp.isclosed():  # defensive: the body must end where the reply says
            raise RemoteCallError("reply body not fully read")
        return resp.status, resp.reason, data

    def _arm_timeout(self, deadline: float) -> None:
        if self.dead:
            raise RemoteCallError("connection dropped")
        if self.conn.sock is not None:
            self.conn.sock.settimeout(_left(deadline))

    def drop(self) -> None:
        """Close the connection, waking a thread blocked on it (safe from any thread)."""
        self.dead = True
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self.conn.close()


_STALE_KEEPALIVE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


class RestArms:
    """POSTs to one server for many arms; a context manager (closes every connection)."""

    def __init__(self, url: str, *, timeout_s: float, max_reply_bytes: int,
                 max_workers: int = 32, where: str = "rest policy") -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"{where}: url {url!r} must be http://host:port or https://...")
        self.scheme, self.host = u.scheme, u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.base_path = u.path.rstrip("/")
        self.url = f"{u.scheme}://{u.netloc}{self.base_path}"
        self.timeout_s, self.max_reply_bytes, self.where = timeout_s, max_reply_bytes, where
        self._links: dict[str, _Link] = {}
        self._guard = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers,
                                        thread_name_prefix="rest-policy")
        self.dropped = 0  # connections dropped after a failure or a late reply

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _link(self, arm: str) -> _Link:
        with self._guard:
            link = self._links.get(arm)
            if link is None or link.dead:
                link = self._links[arm] = _Link(self.scheme, self.host, self.port)
            return link

    def post(self, path: str, bodies: Sequence[tuple[str, bytes]],
             headers: dict[str, str] | None = None) -> list[RestReply | RemoteCallError]:
        """POST `path` once per (arm, body), concurrently, all within `timeout_s`: per arm,
        in order, its reply or the error (one line) that says why there is none."""
        deadline = time.monotonic() + self.timeout_s
        hdrs = {"Content-Type": "application/json", "Accept": "application/json",
                **(headers or {})}
        calls: list[tuple[str, _Link, Future[RestReply]]] = []
        for arm, body in bodies:
            link = self._link(arm)
            calls.append((arm, link, self._pool.submit(
                link.call, self.base_path + path, body, hdrs, deadline, self.max_reply_bytes)))
        results: list[RestReply | RemoteCallError] = []
        for arm, link, fut in calls:
            where = f"{self.where}: POST {self.url}{path} for arm {arm!r}"
            try:
                results.append(fut.result(timeout=max(0.0, deadline - time.monotonic())))
                continue
            except (FutureTimeout, TimeoutError):
                err = RemoteCallError(
                    f"{where}: no reply within {self.timeout_s:g} s (the connection was "
                    "dropped; a late reply is never executed); is the server up and fast "
                    "enough? raise timeout_s if not")
            except Exception as e:  # noqa: BLE001 - any transport failure is this arm's
                err = RemoteCallError(f"{where}: {e.__class__.__name__}: {_line(e)}; is the "
                                      f"server running at {self.url}?")
            link.drop()
            with self._guard:
                self.dropped += 1
            results.append(err)
        return results

    def close(self) -> None:
        with self._guard:
            links, self._links = list(self._links.values()), {}
        for link in links:
            link.drop()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else "no detail"
    return text[:200]
