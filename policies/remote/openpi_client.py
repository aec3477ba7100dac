"""A client for openpi's websocket policy protocol, with deadlines (a thin shell over the codec).

The protocol (openpi's `WebsocketPolicyServer`, RoboArena's server): the client opens a
websocket (optionally with `Authorization: Api-Key <key>`); the server's first message is its
metadata dict; then each binary msgpack-numpy message (policies/remote/msgpack_numpy.py) is an
observation answered by one binary message, the action dict (`{"actions": (H, D), ...,
"server_timing": {"infer_ms": ...}}`). A server whose policy raised sends a text frame (its
error) and closes with 1011. `GET /healthz` answers 200 on the same port.

What this client adds:
- a deadline on connect (handshake + metadata) and on every call (send + reply);
- a call that misses its deadline, or fails in any way, CLOSES the connection: its reply, if
  it ever comes, arrives on a dead socket and can never be read as the answer to a later
  request (the stale-action bug of Positronic PR #459);
- reconnect on the next call, with backoff between consecutive failed connects (the first
  reconnect after a dropped connection is immediate);
- errors in one line: `OpenpiUnavailable` (no answer in time, connection lost, server down:
  not the policy's fault), `OpenpiServerError` (the server's policy raised: its one-line
  message), `OpenpiRefused` (the handshake was refused, e.g. a wrong Api-Key).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from policies.remote.msgpack_numpy import WireFormatError, packb, unpackb

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class OpenpiUnavailable(RuntimeError):
    """The server did not answer in time, went away, or cannot be reached (one line)."""


class OpenpiServerError(RuntimeError):
    """The server's policy raised: its error text frame (one line), then close 1011."""


class OpenpiRefused(RuntimeError):
    """The server refused the websocket handshake (wrong or missing Api-Key, wrong path)."""


@dataclass(frozen=True)
class Backoff:
    """Delay before connect attempt n+1 after n consecutive failed connects (pure)."""

    first_s: float = 0.5
    factor: float = 2.0
    max_s: float = 10.0

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.max_s, self.first_s * self.factor ** (failures - 1))


@dataclass(frozen=True)
class OpenpiReply:
    """One answer: the decoded action dict, the round trip, the server's own timing."""

    data: dict[str, Any]
    round_trip_s: float
    infer_ms: float | None  # server_timing.infer_ms when the server sent it


def server_timing(reply: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a reply's `server_timing` dict (openpi: infer_ms, prev_total_ms)."""
    t = reply.get("server_timing")
    if not isinstance(t, Mapping):
        return {}
    return {str(k): float(v) for k, v in t.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def error_line(text: str) -> str:
    """A server's error text (openpi sends a whole traceback) as one line: its last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "server error (no message)")[:300]


class OpenpiClient:
    """One websocket connection to an openpi-protocol server, used by one thread at a time.
    A context manager; `close()` is safe from any thread (it unblocks a call in progress)."""

    def __init__(self, url: str, *, api_key: str | None = None, connect_timeout_s: float = 10.0,
                 call_timeout_s: float = 5.0, max_bytes: int = DEFAULT_MAX_BYTES,
                 backoff: Backoff = Backoff(), name: str = "openpi") -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"{name}: url {url!r} must look like ws://host:port")
        self.url, self.name = url, name
        self.api_key = api_key
        self.connect_timeout_s, self.call_timeout_s = connect_timeout_s, call_timeout_s
        self.max_bytes, self.backoff = max_bytes, backoff
        self.metadata: dict[str, Any] | None = None  # the server's, from the last connect
        self.connects = 0
        self._ws: ClientConnection | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._lock = threading.Lock()  # guards _ws between a call and close() from elsewhere

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def close(self) -> None:
        """Drop the connection (a reply still on its way is never read)."""
        with self._lock:
            ws, self._ws = self._ws, None
        if ws is not None:
            ws.close_socket()  # immediate: no closing handshake to wait for

    def _drop(self, ws: ClientConnection) -> None:
        """Close `ws` (a call's own connection), never a newer one opened since."""
        with self._lock:
            if self._ws is ws:
                self._ws = None
        ws.close_socket()

    def connect(self) -> dict[str, Any]:
        """Open the connection if it is not open; returns the server's metadata."""
        if self._ws is not None and self.metadata is not None:
            return self.metadata
        now = time.monotonic()
        if now < self._retry_at:
            raise OpenpiUnavailable(f"{self.name}: server at {self.url} unreachable; next try "
                                    f"in {self._retry_at - now:.1f} s")
        try:
            ws, meta = self._open()
        except (OpenpiRefused, OpenpiUnavailable, OpenpiServerError):
            self._failed_connect()
            raise
        self._failures, self._retry_at = 0, 0.0
        with self._lock:
            self._ws, self.metadata = ws, meta
        self.connects += 1
        return meta

    def _failed_connect(self) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + self.backoff.delay(self._failures)

    def _open(self) -> tuple[ClientConnection, dict[str, Any]]:
        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        where = f"{self.name}: server at {self.url}"
        try:
            ws = connect(self.url, additional_headers=headers, compression=None,
                         open_timeout=self.connect_timeout_s, max_size=self.max_bytes,
                         proxy=None, ping_interval=None, close_timeout=1.0)
        except InvalidStatus as e:
            code = e.response.status_code
            hint = " (wrong or missing Api-Key: check api_key_env)" if code in (401, 403) else ""
            raise OpenpiRefused(f"{where} refused the connection: HTTP {code}{hint}") from e
        except (OSError, TimeoutError, InvalidHandshake) as e:
            raise OpenpiUnavailable(f"{where} cannot be reached: {e.__class__.__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''}"[:300]) from e
        try:
            meta = self._decode(ws.recv(timeout=self.connect_timeout_s), "metadata")
        except BaseException as e:
            ws.close_socket()
            if isinstance(e, TimeoutError):
                raise OpenpiUnavailable(f"{where} sent no metadata within "
                                        f"{self.connect_timeout_s:g} s") from e
            err = self._transport_error(e)
            if err is e:
                raise
            raise err from e
        if not isinstance(meta, dict):
            ws.close_socket()
            raise OpenpiUnavailable(f"{where} sent {type(meta).__name__} as its metadata; "
                                    "expected a dict (is it an openpi policy server?)")
        return ws, meta

    def infer(self, obs: Mapping[str, Any]) -> OpenpiReply:
        """Send one observation, return the server's reply. Any failure closes the connection
        and raises one line: OpenpiUnavailable, OpenpiServerError (or WireFormatError for an
        observation that cannot be encoded, before anything is sent)."""
        data = packb(dict(obs))
        self.connect()
        ws = self._ws
        if ws is None:
            raise OpenpiUnavailable(f"{self.name}: connection to {self.url} was closed")
        t0 = time.perf_counter()
        try:
            ws.send(data)
            raw = ws.recv(timeout=self.call_timeout_s)
            reply = self._decode(raw, "reply")
        except BaseException as e:
            self._drop(ws)
            err = self._transport_error(e)
            if err is e:
                raise
            raise err from e
        if not isinstance(reply, dict):
            self._drop(ws)
            raise OpenpiUnavailable(f"{self.name}: server at {self.url} replied with "
                                    f"{type(reply).__name__}; expected the action dict")
        timing = server_timing(reply)
        return OpenpiReply(reply, time.perf_counter() - t0, timing.get("infer_ms"))

    def reset(self, message: Mapping[str, Any]) -> None:
        """RoboArena's `{"endpoint": "reset"}`: one message, one answer (its text "reset
        successful" or any dict), with the call deadline; failures close the connection."""
        self.connect()
        ws = self._ws
        if ws is None:
            raise OpenpiUnavailable(f"{self.name}: connection to {self.url} was closed")
        try:
            ws.send(packb(dict(message)))
            raw = ws.recv(timeout=self.call_timeout_s)
            if isinstance(raw, str) and raw.strip().lower().startswith("reset"):
                return
            self._decode(raw, "reset answer")
        except BaseException as e:
            self._drop(ws)
            err = self._transport_error(e)
            if err is e:
                raise
            raise err from e

    def _decode(self, raw: Any, what: str) -> Any:
        """A received message decoded; a text frame is the server's error."""
        if isinstance(raw, str):
            raise OpenpiServerError(f"{self.name}: server at {self.url} failed: {error_line(raw)}")
        try:
            return unpackb(raw, max_bytes=self.max_bytes)
        except WireFormatError as e:
            raise OpenpiUnavailable(f"{self.name}: server at {self.url} sent a bad {what}: {e}") from e

    def _transport_error(self, e: BaseException) -> BaseException:
        """The websocket's exceptions as our one-line ones (others unchanged)."""
        where = f"{self.name}: server at {self.url}"
        if isinstance(e, TimeoutError):
            return OpenpiUnavailable(f"{where} did not answer within {self.call_timeout_s:g} s; "
                                     "the connection was closed (a late reply is never used)")
        if isinstance(e, ConnectionClosed):
            if e.sent is not None and e.sent.code == 1009:  # we refused a message too big
                return OpenpiUnavailable(f"{where} sent a message over the {self.max_bytes}-byte "
                                         "limit; the connection was closed (raise max_message_mb)")
            rcvd = e.rcvd
            if rcvd is not None and rcvd.code == 1011:
                return OpenpiServerError(f"{where} failed: {rcvd.reason or 'internal error (1011)'}")
            code = f" (close code {rcvd.code})" if rcvd is not None else ""
            return OpenpiUnavailable(f"{where} closed the connection{code}")
        if isinstance(e, OSError):
            return OpenpiUnavailable(f"{where}: {e.__class__.__name__}: {e}"[:300])
        return e


def healthz(url: str, *, timeout_s: float = 5.0) -> bool:
    """`GET /healthz` on the server's port: True on HTTP 200, False on any other answer or
    none within `timeout_s`."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"url {url!r} must look like ws://host:port")
    conn_cls = http.client.HTTPSConnection if parts.scheme == "wss" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
