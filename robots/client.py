"""BridgeClient: the orchestrator's side of the bridge wire (one per arm), and FrameSubscriber.

- DEALER socket, never REQ: a lost reply cannot wedge it. Every call has a deadline and
  raises BridgeTimeout when it passes; the socket is then replaced by a fresh one (libzmq
  reconnects with exponential backoff, reconnect_ivl..reconnect_ivl_max), and late replies
  to earlier requests are discarded by request id (robots/deadline.py, shared with the
  policy data plane's client).
- A restarted bridge (new session id) raises BridgeRestarted once; `restarted` stays set.
- Frames are received zero-copy: numpy arrays are read-only views of the ZeroMQ buffers.
- Nothing a bridge executed is retried automatically: an `act` must never be executed twice
  (the one retry, below, resends a request the bridge refused for its version, unexecuted).
- Versions (docs/protocol.md section 3): `hello()` offers protocol v2 and falls back to v1
  against a v1-only bridge; every later request speaks the negotiated version. A reset,
  observe or act before any hello negotiates first; hold/estop/rearm/status/heartbeat/
  end_episode/privileged before a hello speak v1, which every bridge that serves v1
  understands; a bridge that speaks only v2 refuses it (UNSUPPORTED_VERSION, `versions`) and
  gets it once more in v2, within the same timeout.
- Every exception raised here pickles (it crosses Ray): code, message and endpoint survive.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from robots import protocol as P
from robots.deadline import DeadlineDealer, DeadlinePassed
from robots.drivers.base import Capabilities, ResetResult
from robots.keys import load_public, load_secret
from robots.spaces import SpaceKind
from robots.types import Action, Observation, SceneSpec

#: What the reference client speaks, preferred first.
CLIENT_VERSIONS: tuple[int, ...] = (P.V2, P.V1)
#: Requests that mean the same in every version: sent in v1 before a hello negotiated.
_VERSIONLESS = frozenset({"hold", "estop", "rearm", "status", "heartbeat", "end_episode", "privileged"})


class BridgeError(RuntimeError):
    """Talking to a bridge failed. `endpoint` says which bridge. Pickles with its fields
    (exceptions cross Ray; the default pickling would call __init__ with the message only)."""

    def __init__(self, message: str, endpoint: str = ""):
        super().__init__(message)
        self.endpoint = endpoint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.message, self.endpoint)


class BridgeTimeout(BridgeError):
    """No reply within the call's timeout (bridge down, unreachable, or rejecting our key)."""


class BridgeRestarted(BridgeError):
    """The bridge answered with a new session id: it restarted, its episode state is gone."""

    def __init__(self, message: str, endpoint: str, old_session: str, new_session: str):
        super().__init__(message, endpoint)
        self.old_session, self.new_session = old_session, new_session

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.message, self.endpoint, self.old_session, self.new_session)


class BridgeCommandError(BridgeError):
    """The bridge refused a request: `code` is a protocol ErrorCode (ESTOPPED, NON_FINITE, ...);
    str(e) says which bridge, which request, the code and the arm's own message.
    `versions`: what the bridge speaks, on UNSUPPORTED_VERSION."""

    def __init__(self, message: str, endpoint: str, code: str, summary: P.SafetySummary | None = None,
                 versions: tuple[int, ...] = ()):
        super().__init__(message, endpoint)
        self.code, self.summary, self.versions = code, summary, versions

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.message, self.endpoint, self.code, self.summary, self.versions)


class BridgeAuthError(BridgeError):
    """The CURVE handshake failed: the bridge does not accept this client's key."""


@dataclass(frozen=True)
class CurveClientKeys:
    client_secret_file: Path  # this orchestrator's NAME.key_secret
    server_public_file: Path  # the bridge's NAME.key


@dataclass(frozen=True)
class HelloInfo:
    session_id: str
    versions: tuple[int, ...]  # what the bridge speaks
    version: int  # what this client and the bridge negotiated (docs/protocol.md section 3)
    capabilities: Capabilities
    watchdog_ms: float
    max_command_age_ms: float
    stream_endpoint: str | None
    stream_fps: float
    clock_offset_ns: int  # server wall clock - client wall clock (estimated)


@dataclass(frozen=True)
class ActResult:
    applied: tuple[float, ...]  # what the arm actually executed (after clipping), declared space
    clipped: tuple[bool, ...]  # one flag per dimension of the declared space
    observation: Observation  # taken right after applying: the next step's observation
    summary: P.SafetySummary
    timing: P.ServerTiming
    terminate: bool = False  # the episode ends after this step (echoed by the bridge)

    @property
    def action(self) -> Action:
        """`applied` as an RT-2 Action (ee_delta arms: 7 values)."""
        return P.action_of(self.applied, terminate=self.terminate)


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
        self._mon: zmq.Socket | None = None
        self._dealer = DeadlineDealer(self._ctx, endpoint, configure=self._configure,
                                      before_close=self._before_close)
        self.session_id: str | None = None
        self.version: int | None = None  # negotiated by hello()
        self._versionless = P.V1  # version-less requests before a hello (see request())
        self.capabilities: Capabilities | None = None  # from the last hello()
        self.restarted = False
        self.episode_id: str | None = None
        self.clock_offset_ns = 0
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
        self._dealer.close()
        if self._own_ctx:
            self._ctx.term()

    @property
    def late_replies(self) -> int:
        """Replies to earlier, timed-out requests that were discarded."""
        return self._dealer.late_replies

    @property
    def timeouts(self) -> int:
        return self._dealer.timeouts

    def _socket(self) -> zmq.Socket:
        return self._dealer.socket()

    def _configure(self, s: zmq.Socket) -> None:
        s.reconnect_ivl, s.reconnect_ivl_max = 100, 5000
        s.rcvhwm = s.sndhwm = 16
        _apply_curve(s, self.curve)
        if self.curve is not None:
            self._mon = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                             | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                             | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)

    def _before_close(self, s: zmq.Socket) -> None:
        if self._mon is not None:
            s.disable_monitor()
            self._mon.close(linger=0)
            self._mon = None

    def _auth_failure(self) -> str | None:
        if self._mon is None:
            return None
        if not self._mon.poll(0):
            return None
        ev = recv_monitor_message(self._mon, zmq.NOBLOCK)
        return f"{zmq.Event(ev['event']).name} (value {ev['value']})"

    # --- the one request path -------------------------------------------------------------

    def _version_for(self, rtype: str) -> int:
        if self.version is None:
            if rtype in _VERSIONLESS:
                return self._versionless
            self.hello()
        assert self.version is not None
        return self.version

    def request(self, rtype: str, fields: dict[str, Any] | None = None, timeout_ms: int | None = None,
                v: int | None = None) -> P.Reply:
        """Send one request and wait for its reply (raises BridgeError subclasses). `v`: the
        protocol version (default: the negotiated one).

        A version-less request (hold, estop, rearm, status, ...) before any hello goes out in
        v1; a bridge that does not serve v1 answers UNSUPPORTED_VERSION with its `versions`,
        and the request is sent once more, in the highest of them this client speaks, within
        the same timeout (docs/protocol.md section 3). That version is kept for the next
        version-less requests. Never retried otherwise."""
        timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        if v is not None or self.version is not None or rtype not in _VERSIONLESS:
            return self._request_once(rtype, fields, timeout, self._version_for(rtype) if v is None else v)
        start = time.monotonic()
        ver = self._versionless
        try:
            return self._request_once(rtype, fields, timeout, ver)
        except BridgeCommandError as e:
            if e.code != P.ErrorCode.UNSUPPORTED_VERSION:
                raise
            common = [x for x in e.versions if x != ver and x in CLIENT_VERSIONS]
            left = timeout - int((time.monotonic() - start) * 1000)
            if not common or left <= 0:
                raise
            self._versionless = max(common)
        return self._request_once(rtype, fields, left, self._versionless)

    def _request_once(self, rtype: str, fields: dict[str, Any] | None, timeout: int, ver: int) -> P.Reply:
        rid = next(self._ids)

        def decode(parts: list[Any]) -> tuple[int | None, P.Reply]:
            try:
                reply = P.decode_reply(parts)
            except P.ProtocolError as e:
                raise BridgeError(f"bridge at {self.endpoint} sent an undecodable reply to {rtype}: {e}; "
                                  f"is it an evalfleet bridge speaking protocol v{ver}?", self.endpoint) from e
            return reply.id, reply

        header = P.pack_header({"v": ver, "type": rtype, "id": rid, **(fields or {})})
        try:
            reply = self._dealer.request([header], rid, timeout / 1000, decode, diagnose=self._auth_failure)
        except DeadlinePassed as e:
            raise self._timeout(rtype, rid, timeout, e.detail) from None
        return self._check(rtype, reply)

    def _timeout(self, rtype: str, rid: int, timeout: int, auth: str | None) -> BridgeError:
        """The dealer already closed the socket: the next call reconnects on a fresh one."""
        if auth is not None:
            assert self.curve is not None
            return BridgeAuthError(
                f"bridge at {self.endpoint} rejected the CURVE handshake ({auth}): copy this client's "
                f"public key ({self.curve.client_secret_file.with_suffix('.key')}) into the bridge's "
                "allow dir and check the bridge public key file", self.endpoint)
        return BridgeTimeout(
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
            vs = reply.fields.get("versions")
            versions = tuple(x for x in vs if type(x) is int) if isinstance(vs, list) else ()
            raise BridgeCommandError(f"bridge at {self.endpoint} refused {rtype}: {code}: "
                                     f"{reply.fields.get('message', '')}", self.endpoint, code, reply.summary,
                                     versions)
        return reply

    def _timed(self, rtype: str, fields: dict | None = None, v: int | None = None) -> P.Reply:
        t0 = time.time_ns()
        reply = self.request(rtype, fields, v=v)
        t1 = time.time_ns()
        self.clock_offset_ns = reply.timing.wall_ns - (t0 + t1) // 2
        return reply

    def _observation(self, reply: P.Reply) -> Observation:
        caps = self.capabilities
        dim = len(caps.state.names) if caps is not None and reply.v >= P.V2 else None
        try:
            frames = P.unpack_frames(reply.fields.get("frames", []), (None, *reply.buffers))
            return P.observation_from_wire(reply.fields.get("obs"), frames, reply.v, dim)
        except P.ProtocolError as e:
            raise BridgeError(f"bridge at {self.endpoint} sent a bad observation: {e}", self.endpoint) from e

    # --- calls ------------------------------------------------------------------------

    def hello(self, versions: tuple[int, ...] = CLIENT_VERSIONS) -> HelloInfo:
        """Negotiate (offer the highest of `versions`; on UNSUPPORTED_VERSION take the highest
        one both speak) and read the capabilities. Sets `version` and `capabilities`."""
        offer = sorted(set(versions), reverse=True)
        ver = offer[0]
        while True:
            try:
                reply = self._timed("hello", {"client": self.name}, v=ver)
                break
            except BridgeCommandError as e:
                if e.code != P.ErrorCode.UNSUPPORTED_VERSION:
                    raise
                lower = [x for x in offer if x < ver and (not e.versions or x in e.versions)]
                if not lower:
                    raise BridgeCommandError(
                        f"bridge at {self.endpoint} speaks protocol versions {list(e.versions) or '?'}, this "
                        f"client {offer}: no version in common ({e.message})", self.endpoint, e.code, e.summary,
                        e.versions) from None
                ver = lower[0]
        f = reply.fields
        try:
            caps = P.capabilities_from_wire(f.get("capabilities"), reply.v)
        except P.ProtocolError as e:
            raise BridgeError(f"bridge at {self.endpoint} sent bad capabilities (protocol v{reply.v}): {e}",
                              self.endpoint) from e
        self.version, self.capabilities = reply.v, caps
        stream = f.get("stream") or {}
        return HelloInfo(str(f.get("session_id")), tuple(f.get("versions", ())), reply.v, caps,
                         float(f.get("watchdog_ms", 0)), float(f.get("max_command_age_ms", 0)),
                         stream.get("endpoint"), float(stream.get("fps") or 0), self.clock_offset_ns)

    def reset(self, scene: SceneSpec | dict, episode_id: str) -> ResetResult:
        """Set the scene up; a refusal raises BridgeCommandError with the arm's code and message.
        A dict scene is sent as it is (the bridge ignores keys it does not know)."""
        f = self.request("reset", {"scene": P.scene_to_wire(scene), "episode_id": episode_id}).fields
        if f.get("ready"):
            self.episode_id = episode_id
        return ResetResult(bool(f.get("ready")), str(f.get("instructions", "")))

    def observe(self) -> Observation:
        return self._observation(self.request("observe"))

    def act(self, action: Action | Sequence[float] | np.ndarray, terminate: bool = False, *,
            seq: int | None = None, sent_wall_ns: int | None = None, episode_id: str | None = None) -> ActResult:
        """One control step in the arm's declared space (`capabilities.action_spec`): a vector
        of its D values (or an RT-2 Action on an ee_delta[7] arm) and the terminate flag. The
        bridge clips and applies it and returns the observation right after: the next step's
        observation, one round trip per step. seq/sent_wall_ns default to an increasing
        counter and now (in the server's clock)."""
        ver = self._version_for("act")
        if isinstance(action, Action):
            spec = self.capabilities.action_spec if self.capabilities is not None else None
            if spec is not None and (spec.kind is not SpaceKind.EE_DELTA or spec.dim != 7):
                raise ValueError(f"an RT-2 Action needs an ee_delta[7] arm; the arm at {self.endpoint} accepts "
                                 f"{spec.label}: pass its {spec.dim} values")
            values: Sequence[float] = P.action_values(action)
            terminate = terminate or action.terminate
        elif isinstance(action, (list, tuple)):
            values = action
        else:
            values = np.asarray(action, dtype=np.float64).reshape(-1).tolist()
        fields = P.act_request_fields(
            ver, values, terminate, next(self._seq) if seq is None else seq,
            time.time_ns() + self.clock_offset_ns if sent_wall_ns is None else sent_wall_ns,
            episode_id if episode_id is not None else (self.episode_id or ""))
        reply = self.request("act", fields, v=ver)
        try:
            applied, term, clipped = P.act_reply_from_wire(reply.fields, reply.v, len(values))
        except P.ProtocolError as e:
            raise BridgeError(f"bridge at {self.endpoint} sent a bad act reply: {e}", self.endpoint) from e
        return ActResult(applied, clipped, self._observation(reply), reply.summary, reply.timing, term)

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
