"""BridgeClient: the orchestrator's side of the bridge wire (one per arm), and FrameSubscriber.

- DEALER socket, never REQ: a lost reply cannot wedge it. Every call has a deadline and
  raises BridgeTimeout when it passes; the socket is then replaced by a fresh one (libzmq
  reconnects with exponential backoff, reconnect_ivl..reconnect_ivl_max), and late replies
  to earlier requests are discarded by request id.
- A restarted bridge (new session id) raises BridgeRestarted once; `restarted` stays set.
- Frames are received zero-copy: numpy arrays are read-only views of the ZeroMQ buffers.
- Nothing is retried automatically: an `act` must never be executed twice.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from robots import protocol as P
from robots.drivers.base import Capabilities, ResetResult
from robots.keys import load_public, load_secret
from robots.types import Action, Observation, SceneSpec


class BridgeError(RuntimeError):
    """Talking to a bridge failed. `endpoint` says which bridge."""

    def __init__(self, message: str, endpoint: str = ""):
        super().__init__(message)
        self.endpoint = endpoint


class BridgeTimeout(BridgeError):
    """No reply within the call's timeout (bridge down, unreachable, or rejecting our key)."""


class BridgeRestarted(BridgeError):
    """The bridge answered with a new session id: it restarted, its episode state is gone."""

    def __init__(self, message: str, endpoint: str, old_session: str, new_session: str):
        super().__init__(message, endpoint)
        self.old_session, self.new_session = old_session, new_session


class BridgeCommandError(BridgeError):
    """The bridge refused a request: `code` is a protocol ErrorCode (ESTOPPED, NON_FINITE, ...)."""

    def __init__(self, message: str, endpoint: str, code: str, summary: P.SafetySummary | None):
        super().__init__(message, endpoint)
        self.code, self.summary = code, summary


class BridgeAuthError(BridgeError):
    """The CURVE handshake failed: the bridge does not accept this client's key."""


@dataclass(frozen=True)
class CurveClientKeys:
    client_secret_file: Path  # this orchestrator's NAME.key_secret
    server_public_file: Path  # the bridge's NAME.key


@dataclass(frozen=True)
class HelloInfo:
    session_id: str
    versions: tuple[int, ...]
    capabilities: Capabilities
    watchdog_ms: float
    max_command_age_ms: float
    stream_endpoint: str | None
    stream_fps: float
    clock_offset_ns: int  # server wall clock - client wall clock (estimated)


@dataclass(frozen=True)
class ActResult:
    applied: Action  # what the arm actually executed (after clipping)
    clipped: tuple[bool, ...]  # per continuous dimension
    observation: Observation  # taken right after applying
    summary: P.SafetySummary
    timing: P.ServerTiming


@dataclass(frozen=True)
class StreamFrame:
    camera: str
    image: np.ndarray  # read-only
    seq: int
    mono_ns: int
    wall_ns: int
    pub_wall_ns: int
    session_id: str
    episode_id: str


def _apply_curve(sock: zmq.Socket, curve: CurveClientKeys | None) -> None:
    if curve is None:
        return
    pub, sec = load_secret(curve.client_secret_file, "client secret key file")
    sock.curve_publickey, sock.curve_secretkey = pub, sec
    sock.curve_serverkey = load_public(curve.server_public_file, "bridge public key file")


class BridgeClient:
    """`with BridgeClient("tcp://arm1:5555", timeout_ms=1000) as c: c.hello(); ...`

    One client per arm, used from one thread at a time (ZeroMQ sockets are not thread-safe).
    Typical episode: hello() -> reset(scene, episode_id) -> act(...) per step -> end_episode()."""

    def __init__(self, endpoint: str, timeout_ms: int = 2000, curve: CurveClientKeys | None = None,
                 name: str = "evalfleet", context: zmq.Context | None = None):
        self.endpoint, self.timeout_ms, self.curve, self.name = endpoint, timeout_ms, curve, name
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._sock: zmq.Socket | None = None
        self._mon: zmq.Socket | None = None
        self._rcvtimeo = -1
        self.session_id: str | None = None
        self.restarted = False
        self.episode_id: str | None = None
        self.clock_offset_ns = 0
        self.late_replies = 0
        self.timeouts = 0
        self.last_timing: P.ServerTiming | None = None
        self.last_summary: P.SafetySummary | None = None
        if curve is not None:  # fail now, with the file name, rather than at first call
            load_secret(curve.client_secret_file, "client secret key file")
            load_public(curve.server_public_file, "bridge public key file")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._drop_socket()
        if self._own_ctx:
            self._ctx.term()

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            s = self._ctx.socket(zmq.DEALER)
            s.linger = 0
            s.reconnect_ivl, s.reconnect_ivl_max = 100, 5000
            s.rcvhwm = s.sndhwm = 16
            _apply_curve(s, self.curve)
            if self.curve is not None:
                self._mon = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                 | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                                 | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            s.connect(self.endpoint)
            self._sock, self._rcvtimeo = s, -1
        return self._sock

    def _drop_socket(self) -> None:
        if self._sock is not None:
            if self._mon is not None:
                self._sock.disable_monitor()
                self._mon.close(linger=0)
                self._mon = None
            self._sock.close(linger=0)
            self._sock = None

    def _auth_failure(self) -> str | None:
        if self._mon is None:
            return None
        if not self._mon.poll(0):
            return None
        ev = recv_monitor_message(self._mon, zmq.NOBLOCK)
        return f"{zmq.Event(ev['event']).name} (value {ev['value']})"

    # --- the one request path -------------------------------------------------------------

    def request(self, rtype: str, fields: dict[str, Any] | None = None, timeout_ms: int | None = None) -> P.Reply:
        """Send one request and wait for its reply (raises BridgeError subclasses)."""
        timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        rid = next(self._ids)
        sock = self._socket()
        try:
            sock.send(P.pack_header({"v": P.PROTOCOL_VERSION, "type": rtype, "id": rid, **(fields or {})}), zmq.NOBLOCK)
        except zmq.Again:
            pass  # queue full (bridge unreachable): the deadline below reports it
        deadline = time.monotonic() + timeout / 1000
        wait_ms = timeout
        while True:
            if wait_ms <= 0:
                self._timeout(rtype, rid, timeout)
            if wait_ms != self._rcvtimeo:  # a setsockopt per call costs more than this check
                sock.rcvtimeo = self._rcvtimeo = wait_ms
            try:
                parts = sock.recv_multipart(copy=False)
            except zmq.Again:
                self._timeout(rtype, rid, timeout)
            try:
                reply = P.decode_reply(parts)
            except P.ProtocolError as e:
                raise BridgeError(f"bridge at {self.endpoint} sent an undecodable reply to {rtype}: {e}; "
                                  "is it an evalfleet bridge speaking protocol "
                                  f"v{P.PROTOCOL_VERSION}?", self.endpoint) from e
            if reply.id != rid:
                self.late_replies += 1  # a reply to an earlier, timed-out request
                wait_ms = int((deadline - time.monotonic()) * 1000)
                continue
            return self._check(rtype, reply)

    def _timeout(self, rtype: str, rid: int, timeout: int) -> None:
        auth = self._auth_failure()
        self._drop_socket()  # fresh socket next call; late replies can't reach it
        self.timeouts += 1
        if auth is not None:
            raise BridgeAuthError(
                f"bridge at {self.endpoint} rejected the CURVE handshake ({auth}): copy this client's "
                f"public key ({self.curve.client_secret_file.with_suffix('.key')}) into the bridge's "
                "allow dir and check the bridge public key file", self.endpoint)
        raise BridgeTimeout(
            f"no reply from bridge at {self.endpoint} to {rtype} #{rid} within {timeout} ms: is the bridge "
            "process running and reachable (and, with CURVE, is this client's key allow-listed)? "
            "The next call reconnects on a fresh socket.", self.endpoint)

    def _check(self, rtype: str, reply: P.Reply) -> P.Reply:
        self.last_timing, self.last_summary = reply.timing, reply.summary
        if self.session_id is not None and reply.sid != self.session_id:
            old, self.session_id, self.restarted = self.session_id, reply.sid, True
            self.episode_id = None
            raise BridgeRestarted(
                f"bridge at {self.endpoint} restarted (session {old[:8]} -> {reply.sid[:8]}): its episode "
                "state is gone; call hello() and reset() again", self.endpoint, old, reply.sid)
        if self.session_id is None:
            self.session_id = reply.sid
        if not reply.ok:
            code = str(reply.fields.get("code", "?"))
            raise BridgeCommandError(f"bridge at {self.endpoint} refused {rtype}: {code}: "
                                     f"{reply.fields.get('message', '')}", self.endpoint, code, reply.summary)
        return reply

    def _timed(self, rtype: str, fields: dict | None = None) -> P.Reply:
        t0 = time.time_ns()
        reply = self.request(rtype, fields)
        t1 = time.time_ns()
        self.clock_offset_ns = reply.timing.wall_ns - (t0 + t1) // 2
        return reply

    def _observation(self, reply: P.Reply) -> Observation:
        try:
            frames = P.unpack_frames(reply.fields.get("frames", []), (None, *reply.buffers))
            return P.observation_from_wire(reply.fields.get("obs"), frames)
        except P.ProtocolError as e:
            raise BridgeError(f"bridge at {self.endpoint} sent a bad observation: {e}", self.endpoint) from e

    # --- calls ------------------------------------------------------------------------

    def hello(self) -> HelloInfo:
        f = self._timed("hello", {"client": self.name}).fields
        try:
            caps = P.capabilities_from_wire(f.get("capabilities"))
        except P.ProtocolError as e:
            raise BridgeError(f"bridge at {self.endpoint} sent bad capabilities: {e}", self.endpoint) from e
        stream = f.get("stream") or {}
        return HelloInfo(str(f.get("session_id")), tuple(f.get("versions", ())), caps,
                         float(f.get("watchdog_ms", 0)), float(f.get("max_command_age_ms", 0)),
                         stream.get("endpoint"), float(stream.get("fps") or 0), self.clock_offset_ns)

    def reset(self, scene: SceneSpec | dict, episode_id: str) -> ResetResult:
        d = scene.to_dict() if isinstance(scene, SceneSpec) else dict(scene)
        f = self.request("reset", {"scene": d, "episode_id": episode_id}).fields
        if f.get("ready"):
            self.episode_id = episode_id
        return ResetResult(bool(f.get("ready")), str(f.get("instructions", "")))

    def observe(self) -> Observation:
        return self._observation(self.request("observe"))

    def act(self, action: Action | list[float] | tuple[float, ...], *, seq: int | None = None,
            sent_wall_ns: int | None = None, episode_id: str | None = None) -> ActResult:
        """One control step: the bridge clips and applies, then returns the next observation.
        seq/sent_wall_ns default to an increasing counter and now (in the server's clock)."""
        vals = ([1.0 if action.terminate else 0.0, *action.continuous()] if isinstance(action, Action)
                else [float(v) for v in action])
        fields = {"action": vals, "seq": next(self._seq) if seq is None else seq,
                  "sent_wall_ns": time.time_ns() + self.clock_offset_ns if sent_wall_ns is None else sent_wall_ns,
                  "episode_id": episode_id if episode_id is not None else (self.episode_id or "")}
        reply = self.request("act", fields)
        try:
            a = P.v_action8(reply.fields.get("applied"), "applied")
            clipped = tuple(P.v_flags7(reply.fields.get("clipped"), "clipped"))
        except P.ProtocolError as e:
            raise BridgeError(f"bridge at {self.endpoint} sent a bad act reply: {e}", self.endpoint) from e
        return ActResult(Action(a[0] >= 0.5, *a[1:]), clipped, self._observation(reply), reply.summary,
                         reply.timing)

    def hold(self) -> P.SafetySummary:
        return self.request("hold").summary

    def estop(self, reason: str = "") -> P.SafetySummary:
        return self.request("estop", {"reason": reason}).summary

    def rearm(self) -> P.SafetySummary:
        return self.request("rearm").summary

    def status(self) -> dict:
        return dict(self.request("status").fields.get("status") or {})

    def heartbeat(self) -> P.SafetySummary:
        return self._timed("heartbeat").summary

    def privileged(self) -> dict:
        """Ground-truth sim state for the scripted oracle (NOT_SUPPORTED on real arms)."""
        return dict(self.request("privileged").fields.get("state") or {})

    def end_episode(self, episode_id: str | None = None) -> P.SafetySummary:
        eid = episode_id if episode_id is not None else (self.episode_id or "")
        summary = self.request("end_episode", {"episode_id": eid}).summary
        self.episode_id = None
        return summary


class FrameSubscriber:
    """Latest frame per camera from a bridge's PUB stream (one conflating SUB per camera)."""

    def __init__(self, endpoint: str, cameras: list[str] | tuple[str, ...], curve: CurveClientKeys | None = None,
                 context: zmq.Context | None = None):
        self.endpoint = endpoint
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._subs: dict[str, zmq.Socket] = {}
        self._poller = zmq.Poller()
        for cam in cameras:
            s = self._ctx.socket(zmq.SUB)
            s.linger = 0
            s.conflate = True  # keep only the newest message (single-part by design)
            _apply_curve(s, curve)
            s.setsockopt(zmq.SUBSCRIBE, P.stream_topic(cam))
            s.connect(endpoint)
            self._subs[cam] = s
            self._poller.register(s, zmq.POLLIN)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for s in self._subs.values():
            s.close(linger=0)
        self._subs.clear()
        if self._own_ctx:
            self._ctx.term()

    def poll(self, timeout_ms: int) -> dict[str, StreamFrame]:
        """Wait up to timeout_ms for any camera; return the newest frame of each ready one."""
        out: dict[str, StreamFrame] = {}
        for sock, _ in self._poller.poll(timeout_ms):
            try:
                msg = sock.recv(zmq.NOBLOCK, copy=False)
                cam, h, img = P.unpack_stream(msg.buffer)
            except (zmq.Again, P.ProtocolError):
                continue
            out[cam] = StreamFrame(cam, img, int(h.get("seq", 0)), int(h.get("mono_ns", 0)),
                                   int(h.get("wall_ns", 0)), int(h.get("pub_wall_ns", 0)),
                                   str(h.get("sid", "")), str(h.get("episode_id", "")))
        return out

    def latest(self, camera: str, timeout_ms: int) -> StreamFrame:
        """The newest frame of one camera; raises BridgeTimeout if none arrives in time."""
        deadline = time.monotonic() + timeout_ms / 1000
        while (left := deadline - time.monotonic()) > 0:
            got = self.poll(max(1, int(left * 1000)))
            if camera in got:
                return got[camera]
        raise BridgeTimeout(f"no frame of camera {camera!r} from {self.endpoint} within {timeout_ms} ms: is "
                            "the bridge started with --pub-bind and a stream rate?", self.endpoint)
