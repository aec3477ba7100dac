"""`evalfleet policy serve`: any evalfleet policy behind openpi's websocket policy protocol.

A lab runs the policy in its own environment / on its own GPU host; evalfleet (kind `openpi`)
or any openpi client evaluates it. The protocol is openpi's: on connect the server sends its
metadata (a msgpack map); then every binary message from the client is a msgpack-numpy
observation map and every reply a map with `actions` (H, D) and `server_timing`. RoboArena's
variant is understood too: a message whose `endpoint` is "reset" ends the connection's episode
(answered with the text frame "reset successful").

What this server does that openpi's does not:

- **batching**: requests from all connections are collected (up to `max_batch`, for at most
  `batch_wait_s` from the first request or from the end of the previous batch, and only
  while someone else may still send: serve_core.keep_collecting, which also waits for the
  connections answered by the previous batch that usually ask again at once) and go through
  the policy in ONE `Policy.act(batch)` call;
- **a free event loop**: the policy runs on one worker thread, never on the event loop, so
  pings, handshakes, /healthz and other connections are served while it computes;
- **limits**: messages over `max_message_bytes` close that connection with 1009; a malformed
  message (not msgpack, not a map, a bad array, missing keys) closes that connection with a
  one-line error text + 1011; a policy that raises answers the same way. Never a traceback
  on the wire: the details go to this server's log. Other connections keep working;
- **Api-Key**: with a key configured, a handshake without `Authorization: Api-Key <key>` is
  answered HTTP 401; `GET /healthz` needs no key and says 200 once the policy is loaded
  (503 while loading or stopping, 500 when loading failed).

Each connection is its own "arm" of the hosted policy (`Policy.reset(arm, ...)` /
`Policy.act`): its episode starts at its first observation, after a reset message, or when
its prompt changes. Everything decided without sockets lives in serve_core.py (pure, tested).

    with OpenpiPolicyServer(policy, preset("generic", mapping), ServeOptions(port=0)) as server:
        server.wait_ready(60)
        ... server.url (ws://127.0.0.1:PORT) ...

The preset must carry exactly what the policy reads and emits (serve_core.preset_mismatch):
nothing is converted on the server. An evalfleet client may add its simulator's privileged
state under `evalfleet/privileged` (a map) for policies that need it (the oracle); the
metadata's `needs_privileged` says so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import http
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Self

from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from policies.base import Policy, PolicyInput
from policies.remote.msgpack_numpy import packb
from policies.remote.serve_batch import (
    BatchItem,
    ObservationPreset,
    Outcome,
    ServeError,
    ServeOptions,
    ServeState,
    run_batch,
)
from policies.remote.serve_core import (
    PRIVILEGED_KEY,
    RESET_REPLY,
    BadRequest,
    ResetRequest,
    Rhythm,
    api_key_ok,
    error_line,
    expected_back,
    keep_collecting,
    needs_reset,
    next_rhythm,
    next_think,
    parse_request,
    preset_mismatch,
    server_metadata,
    server_timing,
)

__all__ = ["ObservationPreset", "OpenpiPolicyServer", "ServeError", "ServeOptions", "ServeState"]

log = logging.getLogger("evalfleet.serve")

CLOSE_REASON = "error: see the text frame before this close"
HEALTH_PATH = "/healthz"


@dataclass
class ServeStats:
    """Counters, updated on the event loop (read them after the fact)."""

    connections: int = 0
    requests: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    errors: int = 0  # the policy raised (reset, act, reply)
    refused: int = 0  # malformed or oversize messages


@dataclass
class _Pending:
    arm: str
    input: PolicyInput
    reset_instruction: str | None
    arrived: float
    future: asyncio.Future[Outcome]


@dataclass
class _Connection:
    arm: str
    instruction: str | None = None  # the prompt its episode started with (None: none yet)
    reset_requested: bool = False
    prev_total_s: float | None = None
    replied_at: float | None = None  # when its last reply was sent (perf_counter)
    think_s: float | None = None  # its usual reply-to-next-request gap (serve_core.next_think)


class OpenpiPolicyServer:
    """The server (a context manager): its event loop runs on a background thread.

    `policy`: a built Policy (the caller closes it) or a loader called on the worker thread
    after the server listens (the server closes what it loaded); /healthz says 200 once it
    is loaded."""

    def __init__(self, policy: Policy | Callable[[], Policy], preset: ObservationPreset,
                 options: ServeOptions | None = None) -> None:
        self.preset = preset
        self.options = options or ServeOptions()
        self._source = policy
        self._owns_policy = not isinstance(policy, Policy)
        self.policy: Policy | None = None
        self.state = ServeState.LOADING
        self.load_error: str | None = None
        self.stats = ServeStats()
        self._port: int | None = None
        self._metadata = b""
        self._ids = itertools.count(1)
        self._arms: dict[str, Rhythm] = {}  # open connection -> its rhythm
        self._returning: dict[str, float] = {}  # answered connection -> when expected back
        self._pending: list[_Pending] = []
        self._in_flight: list[_Pending] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="policy")
        self._listening = threading.Event()
        self._loaded = threading.Event()
        self._start_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._arrived: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name="openpi-serve", daemon=True)

    # --- lifecycle (any thread) ---------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise ServeError("the policy server is not listening (call start() first)")
        return self._port

    @property
    def url(self) -> str:
        host = self.options.host
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(
            host, f"[{host}]" if ":" in host else host)
        return f"ws://{host}:{self.port}"

    def start(self) -> Self:
        """Listen (the policy loads in the background); raises ServeError if it cannot."""
        self._thread.start()
        if not self._listening.wait(self.options.start_timeout_s):
            self.stop()
            raise ServeError(f"not listening on {self.options.host}:{self.options.port} after "
                             f"{self.options.start_timeout_s:.0f} s")
        if self._start_error is not None:
            self.stop()
            raise ServeError(self._start_error)
        return self

    def wait_loaded(self, timeout_s: float) -> bool:
        """Has loading finished (loaded, or failed: `load_error`) within `timeout_s`?"""
        return self._loaded.wait(timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the policy is loaded; ServeError with one line if loading failed."""
        if not self._loaded.wait(timeout_s):
            raise ServeError(f"the policy is not loaded after {timeout_s:.0f} s")
        if self.load_error is not None:
            raise ServeError(self.load_error)
        if self._start_error is not None:
            raise ServeError(self._start_error)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Close every connection (1001), stop listening, close a policy it loaded."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop finished meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join(self.options.stop_timeout_s + 5)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the event loop -----------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except OSError as e:  # the address is taken, the host does not resolve, ...
            where = f"{self.options.host}:{self.options.port}"
            self._start_error = (f"cannot listen on {where}: the port is in use; pick another "
                                 "(--port)" if e.errno == errno.EADDRINUSE else
                                 error_line(f"cannot listen on {where}", e))
        except Exception as e:  # reported as one line, logged in full
            log.exception("the policy server failed")
            self._start_error = error_line("the policy server failed", e)
        finally:
            self._listening.set()
            self._loaded.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop, self._arrived = asyncio.Event(), asyncio.Event()
        o = self.options
        async with serve(self._handle, o.host, o.port, compression=None,
                         max_size=o.max_message_bytes, process_request=self._process_request,
                         close_timeout=5, logger=logging.getLogger("evalfleet.serve.ws")) as server:
            self._port = int(next(iter(server.sockets)).getsockname()[1])
            self._listening.set()
            log.info("listening on %s:%d", o.host, self._port)
            tasks = [asyncio.create_task(self._load()), asyncio.create_task(self._batch_loop())]
            await self._stop.wait()
            self.state = ServeState.STOPPING
            for t in tasks:
                t.cancel()
            self._fail_waiting("the policy server is shutting down")
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), o.stop_timeout_s)
            except TimeoutError:
                log.warning("serve: connections still open after %.0f s; leaving them",
                            o.stop_timeout_s)
        await self._close_policy()
        st = self.stats
        mean = sum(st.batch_sizes) / len(st.batch_sizes) if st.batch_sizes else 0.0
        log.info("stopped: %d requests from %d connections in %d batches (mean batch %.1f, "
                 "largest %d), %d policy errors, %d refused messages", st.requests,
                 st.connections, st.batches, mean, max(st.batch_sizes, default=0), st.errors,
                 st.refused)

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if isinstance(self._source, Policy):
                policy = self._source
            else:
                policy = await loop.run_in_executor(self._executor, self._source)
            self.policy = policy
            mismatch = preset_mismatch(repr(policy.metadata.name), policy.metadata.io,
                                       self.preset.name, self.preset.io)
            if mismatch is not None:
                raise ServeError(mismatch)
            meta = server_metadata(policy.metadata.to_dict(), preset=self.preset.name,
                                   max_batch=self.options.max_batch,
                                   needs_privileged=policy.needs_privileged,
                                   extra=self.options.metadata)
            self._metadata = packb(meta)
        except asyncio.CancelledError:
            raise
        except ServeError as e:
            log.error("serve: %s", e)
            self.load_error = " ".join(str(e).split())
            self.state = ServeState.FAILED
        except Exception as e:  # any load failure: one line, details logged
            log.exception("serve: the policy failed to load")
            self.load_error = error_line("the policy failed to load", e)
            self.state = ServeState.FAILED
        else:
            self.state = ServeState.READY
            m = policy.metadata
            log.info("policy %s v%s (kind %s, sha256 %s) ready", m.name, m.version, m.kind,
                     m.checksum[:12])
        finally:
            self._loaded.set()

    async def _close_policy(self) -> None:
        if not (self._owns_policy and self.policy is not None):
            return
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self.policy.close),
                                   self.options.stop_timeout_s)
        except Exception:  # stopping anyway
            log.exception("serve: closing the policy failed")

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Before the websocket handshake: /healthz, the Api-Key, and 503 while not ready."""
        if request.path.split("?", 1)[0] == HEALTH_PATH:
            status, text = {
                ServeState.READY: (http.HTTPStatus.OK, "OK"),
                ServeState.LOADING: (http.HTTPStatus.SERVICE_UNAVAILABLE, "loading the policy"),
                ServeState.STOPPING: (http.HTTPStatus.SERVICE_UNAVAILABLE, "stopping"),
                ServeState.FAILED: (http.HTTPStatus.INTERNAL_SERVER_ERROR, self.load_error or ""),
            }[self.state]
            return connection.respond(status, text + "\n")
        key = self.options.api_key
        if key is not None and not api_key_ok(request.headers.get("Authorization"), key):
            log.warning("refused a connection from %s: missing or wrong Api-Key",
                        connection.remote_address)
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong Api-Key: "
                                      "send the header 'Authorization: Api-Key <key>'\n")
        if self.state is not ServeState.READY:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                      f"the policy server is {self.state.value}; GET "
                                      f"{HEALTH_PATH} says 200 when it is ready\n")
        return None

    async def _refuse(self, ws: ServerConnection, arm: str, line: str) -> None:
        """The one-line error text frame, then close 1011 (openpi's error convention)."""
        log.warning("%s: %s", arm, line)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(line)
            await ws.close(CloseCode.INTERNAL_ERROR, CLOSE_REASON)

    async def _handle(self, ws: ServerConnection) -> None:
        arm = f"conn-{next(self._ids)}"
        conn = _Connection(arm)
        self._arms[arm] = (None, None)
        self.stats.connections += 1
        log.info("%s opened from %s", arm, ws.remote_address)
        try:
            await ws.send(self._metadata)
            while True:
                message = await ws.recv()
                if not await self._serve_one(ws, conn, message):
                    return
        except ConnectionClosed as e:
            if e.sent is not None and e.sent.code == CloseCode.MESSAGE_TOO_BIG:
                self.stats.refused += 1
                log.warning("%s: closed with 1009: a message over the %d-byte limit (serve "
                            "--max-message-mb)", arm, self.options.max_message_bytes)
        except Exception as e:  # a bug here must not take the server down
            log.exception("%s: unexpected error", arm)
            await self._refuse(ws, arm, error_line("policy server error", e))
        finally:
            self._arms.pop(arm, None)
            self._returning.pop(arm, None)
            if self._arrived is not None:
                self._arrived.set()  # the batcher re-checks who may still send
            log.info("%s closed (code %s)", arm, ws.close_code)

    async def _serve_one(self, ws: ServerConnection, conn: _Connection, message: bytes | str) -> bool:
        """Answer one message; False when the connection was closed for it."""
        started = time.perf_counter()
        try:
            request = parse_request(message, max_bytes=self.options.max_message_bytes)
            if isinstance(request, ResetRequest):
                conn.reset_requested, conn.prev_total_s = True, None
                await ws.send(RESET_REPLY)
                return True
        except BadRequest as e:
            self.stats.refused += 1
            await self._refuse(ws, conn.arm, error_line("bad request", e))
            return False
        try:
            inp = self.preset.input(request.observation, conn.arm)
            privileged = request.observation.get(PRIVILEGED_KEY)
            if privileged is not None:
                if not isinstance(privileged, dict):
                    raise TypeError(f"{PRIVILEGED_KEY} must be a map, got "
                                    f"{type(privileged).__name__}")
                inp = replace(inp, privileged=privileged)
        except (ValueError, KeyError, TypeError) as e:  # PresetError is a ValueError
            self.stats.refused += 1
            await self._refuse(ws, conn.arm, error_line("bad observation", e))
            return False
        starts = needs_reset(conn.instruction, inp.instruction, conn.reset_requested)
        self._arms[conn.arm] = next_rhythm(self._arms.get(conn.arm), started)
        conn.think_s = next_think(conn.think_s, conn.replied_at, started)
        self._returning.pop(conn.arm, None)
        outcome = await self._submit(conn.arm, inp, inp.instruction if starts else None, started)
        if outcome.error is not None:
            await self._refuse(ws, conn.arm, outcome.error)
            return False
        if starts:
            conn.instruction, conn.reset_requested = inp.instruction, False
        assert outcome.reply is not None
        reply = dict(outcome.reply)
        reply["server_timing"] = server_timing(
            infer_s=outcome.infer_s, policy_s=outcome.policy_s, batch_size=outcome.batch_size,
            queue_s=max(0.0, outcome.started - started), prev_total_s=conn.prev_total_s)
        try:
            data = packb(reply)
        except ValueError as e:
            self.stats.errors += 1
            await self._refuse(ws, conn.arm, error_line("policy reply not sendable", e))
            return False
        await ws.send(data)
        conn.replied_at = time.perf_counter()
        conn.prev_total_s = conn.replied_at - started
        back = expected_back(conn.replied_at, conn.think_s)
        if back is not None:
            self._returning[conn.arm] = back
        return True

    async def _submit(self, arm: str, inp: PolicyInput, reset_instruction: str | None,
                      arrived: float) -> Outcome:
        assert self._loop is not None and self._arrived is not None
        item = _Pending(arm, inp, reset_instruction, arrived, self._loop.create_future())
        self._pending.append(item)
        self.stats.requests += 1
        self._arrived.set()
        return await item.future

    def _fail_waiting(self, why: str) -> None:
        for item in [*self._in_flight, *self._pending]:
            if not item.future.done():
                item.future.set_result(Outcome(error=why))
        self._pending.clear()

    async def _batch_loop(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        o = self.options
        free_since = 0.0
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            # the window opens when the first request arrived or, when it arrived during the
            # previous batch, when that batch was answered
            until = max(self._pending[0].arrived, free_since) + o.batch_wait_s
            while True:
                now = time.perf_counter()
                in_batch = {p.arm for p in self._pending[: o.max_batch]}
                if not keep_collecting(in_batch=in_batch, open_arms=self._arms, now=now,
                                       until=until, max_batch=o.max_batch,
                                       returning=self._returning):
                    break
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), until - now)
            batch = self._pending[: o.max_batch]
            del self._pending[: o.max_batch]
            self._in_flight = batch
            items = [BatchItem(p.arm, p.input, p.reset_instruction) for p in batch]
            assert self.policy is not None
            outcomes = await loop.run_in_executor(self._executor, run_batch, self.policy,
                                                  self.preset, items)
            self._in_flight = []
            free_since = time.perf_counter()
            self.stats.batches += 1
            self.stats.batch_sizes.append(len(batch))
            self.stats.errors += sum(1 for x in outcomes if x.error is not None)
            for p, outcome in zip(batch, outcomes, strict=True):
                if not p.future.done():
                    p.future.set_result(outcome)
