"""BridgeServer: the robot-side process that hosts one arm's RobotDriver behind ZeroMQ.

- ROUTER socket: requests (robots/protocol.py; docs/protocol.md). One control thread owns the
  sockets and the driver; it polls with a timeout bounded by the watchdog deadline, so the
  watchdog fires on time with or without traffic, and between messages of a burst.
- PUB socket (optional): the latest frame of each camera, one single-part message per frame
  (topic = camera name + NUL), so subscribers can CONFLATE with one SUB socket per camera.
  Frames come from the observations served to the orchestrator, and from idle observes at
  stream_fps when nobody asks.
- Safety (robots/safety.py) runs here, where no orchestrator bug can bypass it.
- CURVE (robots/keys.py): a ZAP authenticator admits only allow-listed client keys, and every
  request is checked again against the sender's authenticated key (ZAP User-Id). Missing or
  bad key files refuse to start: the bridge never runs open when keys were asked for.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import zmq

from robots import protocol as P
from robots import safety as S
from robots.drivers.base import ArmCommand, NotReady, RobotDriver
from robots.keys import CurveServerAuth, KeyFileError
from robots.spaces import SpaceKind

log = logging.getLogger("evalfleet.bridge")

COUNTERS = (
    "requests", "acts_applied", "actions_clipped", "non_finite_refused", "stale_refused",
    "watchdog_holds", "hold_commands", "estops", "rearms", "refused_estopped",
    "refused_not_in_episode", "unauthorized", "malformed", "driver_errors", "refused_total",
    "frames_published", "refused_not_ready",
)
#: reported in every reply (non-zero ones only); all counters are in status
INTERVENTIONS = (
    "actions_clipped", "non_finite_refused", "stale_refused", "watchdog_holds", "hold_commands", "estops",
    "rearms", "refused_estopped", "refused_not_in_episode", "unauthorized", "malformed", "driver_errors",
    "refused_total",
)
_INTERVENTIONS = frozenset(INTERVENTIONS)
_ERR = P.ErrorCode
_MORE, _LAST = int(zmq.SNDMORE | zmq.NOBLOCK), int(zmq.NOBLOCK)


class BridgeConfigError(RuntimeError):
    """The bridge cannot start as configured (keys, endpoints, driver). It never runs open."""


class Refusal(Exception):
    def __init__(self, code: P.ErrorCode, message: str, counter: str | None = None):
        super().__init__(message)
        self.code, self.counter = code, counter


@dataclass(frozen=True)
class CurveServerConfig:
    server_secret_file: Path
    allow_dir: Path


@dataclass(frozen=True)
class BridgeConfig:
    bind: str = "tcp://127.0.0.1:5555"
    pub_bind: str | None = None  # None: no live stream
    watchdog_ms: float = 500.0
    max_command_age_ms: float = 250.0  # <= 0 disables the age check
    stream_fps: float = 10.0  # live stream rate per camera
    curve: CurveServerConfig | None = None
    jpeg_quality: int = 90
    max_part_bytes: int = 1024 * 1024  # libzmq drops the connection of a peer sending more
    rcvhwm: int = 64
    zero_copy_min_bytes: int = 1 << 20  # replies with fewer frame bytes are copied when sent
    ready_file: Path | None = None  # JSON {endpoint, pub_endpoint, session_id, pid} once bound


def _peek(body: list[zmq.Frame]) -> tuple[int | None, int]:
    """(id, version) of a refused request, as far as its header is readable, so the client
    can match the reply and read it in its own version (else the lowest we speak)."""
    try:
        h = P.unpack_header(body[0].buffer)
    except (P.ProtocolError, IndexError):
        return None, P.MIN_VERSION
    rid, ver = h.get("id"), h.get("v")
    return (rid if type(rid) is int and 0 <= rid <= P.MAX_ID else None,
            ver if type(ver) is int and ver in P.SUPPORTED_VERSIONS else P.MIN_VERSION)


class BridgeServer:
    """`with BridgeServer(driver, config) as b: ...` serves until the block exits."""

    def __init__(self, driver: RobotDriver, config: BridgeConfig = BridgeConfig()):
        self.driver, self.config = driver, config
        self.session_id = uuid.uuid4().hex
        self.endpoint, self.pub_endpoint = "", None
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._sparse: dict[str, int] = {}  # the non-zero intervention counters, sent in every reply
        self.error: BaseException | None = None  # set if the control thread died (it should not)
        self._wd, self._estop, self._seq = S.WatchdogState(), S.EstopState(), S.SeqState()
        self._episode: str | None = None
        self._obs_seq = 0
        self._last_proprio: tuple[float, ...] | None = None
        self._last_obs: tuple[dict, dict] | None = None  # (wire obs, frames) for the stream
        self._last_pub_ns = 0
        self._stream_failing = False  # the idle stream's observe fails: said once, until it works
        self.loop_iterations = 0  # control-loop wake-ups (tests drive the loop by this)
        self._wd_ns = int(config.watchdog_ms * 1e6)
        self._age_ns = int(config.max_command_age_ms * 1e6)
        self._stream_ns = int(1e9 / config.stream_fps) if config.stream_fps > 0 else 0
        self._curve: CurveServerAuth | None = None
        self._handlers = {t: getattr(self, "_do_" + t) for t in P.REQUESTS}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: zmq.Context | None = None
        self._router: zmq.Socket | None = None
        self._pub: zmq.Socket | None = None

    # --- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Load keys, bind, connect the driver, start the control thread; BridgeConfigError
        (and nothing listening) if any of it fails."""
        self._ctx = zmq.Context()
        try:
            if self.config.curve is not None:  # keys first: nothing listens before auth works
                self._curve = CurveServerAuth(self.config.curve.server_secret_file, self.config.curve.allow_dir)
                self._curve.start(self._ctx)
            self._router = self._socket(zmq.ROUTER)
            self._router.rcvhwm = self.config.rcvhwm
            self._router.setsockopt(zmq.MAXMSGSIZE, self.config.max_part_bytes)
            self.endpoint = self._bind(self._router, self.config.bind)
            if self.config.pub_bind:
                self._pub = self._socket(zmq.PUB)
                self._pub.sndhwm = 8
                self.pub_endpoint = self._bind(self._pub, self.config.pub_bind)
            self.driver.connect()
            self._caps = self.driver.capabilities()
        except KeyFileError as e:
            self._teardown()
            raise BridgeConfigError(f"bridge refuses to start without working CURVE keys: {e}") from e
        except BaseException:
            self._teardown()
            raise
        self._encodings = {c.name: c.encoding for c in self._caps.cameras}
        self._spec = self._caps.action_spec
        self._v1_ok = P.v1_compatible(self._caps)
        #: the versions this bridge serves its arm in (v1 only expresses RT-2-shaped arms)
        self._versions = [v for v in sorted(P.SUPPORTED_VERSIONS) if v != P.V1 or self._v1_ok]
        names = self._caps.state.names
        self._ee_idx = (tuple(names.index(n) for n in ("ee_x", "ee_y", "ee_z"))  # workspace clip
                        if self._spec.kind is SpaceKind.EE_DELTA and {"ee_x", "ee_y", "ee_z"} <= set(names)
                        else None)
        self._thread = threading.Thread(target=self._run, name="bridge-control", daemon=True)
        self._thread.start()
        if self.config.ready_file:
            info = {"endpoint": self.endpoint, "pub_endpoint": self.pub_endpoint,
                    "session_id": self.session_id, "pid": os.getpid()}
            tmp = Path(f"{self.config.ready_file}.tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(self.config.ready_file)
        log.info("bridge %s serving %s (%s, protocol versions %s) on %s (stream %s, curve %s)", self.session_id,
                 self._caps.driver, self._spec.label, self._versions, self.endpoint, self.pub_endpoint,
                 self._curve is not None)

    def _socket(self, kind: int) -> zmq.Socket:
        s = self._ctx.socket(kind)
        s.linger = 0
        if self._curve is not None:
            self._curve.secure(s)
        return s

    @staticmethod
    def _bind(sock: zmq.Socket, endpoint: str) -> str:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as e:
            raise BridgeConfigError(f"cannot bind {endpoint}: {e} (port in use? bad address?)") from e
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._teardown()

    def _teardown(self) -> None:
        for s in (self._router, self._pub):
            if s is not None and not s.closed:
                s.close(linger=0)
        self._router = self._pub = None
        if self._curve is not None:
            self._curve.stop()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        try:
            self.driver.close()
        except Exception:  # closing must not mask the reason we stop
            log.exception("driver close failed")

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the control thread ends (stop() or a fatal error); True if it ended."""
        t = self._thread
        if t is not None:
            t.join(timeout_s)
            return not t.is_alive()
        return True

    # --- control loop -----------------------------------------------------------------

    def _run(self) -> None:
        router = self._router
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        try:
            while not self._stop.is_set():  # one message per wake-up: the watchdog ticks between
                self.loop_iterations += 1
                if poller.poll(self._poll_timeout_ms()):  # messages even under a flood
                    self._serve(router, router.recv_multipart(copy=False))
                self._tick()
                if self._pub is not None:
                    self._stream_idle()
        except BaseException as e:  # should never happen: hold the arm and record it
            self.error = e
            log.exception("bridge control loop died; holding the arm")
            self._safe_hold()
        finally:
            router.close(linger=0)
            if self._pub is not None:
                self._pub.close(linger=0)

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic_ns()
        wake = now + 50_000_000  # check the stop flag at least every 50 ms
        deadline = S.watchdog_deadline(self._wd, self._wd_ns)
        if deadline is not None:
            wake = min(wake, deadline)
        if self._pub is not None and self._stream_ns:
            wake = min(wake, self._last_pub_ns + self._stream_ns)
        return max(0, -(-(wake - now) // 1_000_000))

    def _tick(self) -> None:
        self._wd, fire = S.watchdog_tick(self._wd, time.monotonic_ns(), self._wd_ns)
        if fire:
            self._bump("watchdog_holds")
            log.warning("watchdog: no valid command for %.0f ms, holding the arm", self.config.watchdog_ms)
            self._safe_hold()

    def _bump(self, counter: str) -> None:
        n = self.counters[counter] = self.counters[counter] + 1
        if counter in _INTERVENTIONS:
            self._sparse[counter] = n

    def _safe_hold(self) -> None:
        try:
            self.driver.hold()
        except Exception:
            self._bump("driver_errors")
            log.exception("driver.hold() failed")

    def _serve(self, router: zmq.Socket, parts: list[zmq.Frame]) -> None:
        recv_ns = time.monotonic_ns()
        self.counters["requests"] += 1
        envelope, body = parts[:1], parts[1:]
        if len(body) >= 2 and len(body[0]) == 0:  # REQ client: echo the empty delimiter
            envelope, body = parts[:2], parts[2:]
        rtype = rid = ver = None
        buffers: list[Any] = []
        try:
            if not body:
                raise P.ProtocolError("message has no header part")
            if self._curve is not None and not self._curve.allowed(body[0]):
                raise Refusal(_ERR.UNAUTHORIZED, "sender's CURVE key is not on this bridge's allow list",
                              "unauthorized")
            req = P.decode_request([body[0].buffer, *body[1:]], self._spec)
            rtype, rid, ver = req.type, req.id, req.v
            if ver == P.V1 and not self._v1_ok and rtype in P.V1_NEEDS_RT2_ARM:
                raise P.ProtocolError(f"this arm accepts {self._spec.label}: protocol v1 only expresses "
                                      "ee_delta[7] with the ee state; speak protocol v2",
                                      _ERR.UNSUPPORTED_VERSION, rid)
            fields, buffers = self._handlers[rtype](req, recv_ns)
            ok = True
        except (P.ProtocolError, Refusal) as e:
            counter = "malformed" if e.code in P.MALFORMED_CODES else getattr(e, "counter", None)
            if rid is None or ver is None:
                peek_id, peek_v = _peek(body)
                rid = rid if rid is not None else (e.request_id if isinstance(e, P.ProtocolError) and
                                                   e.request_id is not None else peek_id)
                ver = ver if ver is not None else peek_v
            if counter:
                self._bump(counter)
            self._bump("refused_total")
            ok, buffers = False, []
            fields = {"code": str(e.code), "message": str(e)[:1000], "request_type": rtype}
            if e.code is _ERR.UNSUPPORTED_VERSION:
                ver = P.MIN_VERSION
                fields["versions"] = self._versions
        except Exception as e:  # a driver failure: hold, report, keep serving
            self._bump("driver_errors")
            self._bump("refused_total")
            log.exception("driver error while serving %s", rtype)
            self._safe_hold()
            self._wd = S.watchdog_mark_held(self._wd, time.monotonic_ns())
            ok, buffers = False, []
            fields = {"code": str(_ERR.DRIVER_ERROR), "request_type": rtype,
                      "message": f"driver {type(e).__name__}: {e}"[:1000] + " (arm held)"}
        st = {"estopped": self._estop.latched, "holding": self._wd.holding,
              "in_episode": self._episode is not None,
              "counters": self._sparse}  # non-zero interventions only: absent means 0
        h = P.reply_header(rtype if ok else "error", rid, ok, self.session_id,
                           (recv_ns, time.monotonic_ns(), time.time_ns()), st, fields,
                           ver if ver is not None else P.MIN_VERSION)
        # Small parts are copied. Frames below zero_copy_min_bytes are copied too: measured
        # faster than pyzmq's zero-copy path, which wakes its garbage-collector thread per send.
        big = self.config.zero_copy_min_bytes
        try:  # plain-int flags: pyzmq's send_multipart spends µs on IntFlag arithmetic
            for part in envelope:
                router.send(part, _MORE)
            router.send(P.pack_header(h), _MORE if buffers else _LAST)
            for i, buf in enumerate(buffers, 1):
                router.send(buf, _LAST if i == len(buffers) else _MORE, copy=len(memoryview(buf).cast("B")) < big)
        except zmq.Again:  # ROUTER drops rather than block; nothing to do
            pass
        if buffers and self._pub is not None:
            self._publish(*self._last_obs)

    # --- observations and the live stream ---------------------------------------------

    def _observe(self, version: int = P.PROTOCOL_VERSION) -> tuple[dict, dict]:
        d = self.driver.observe()
        self._obs_seq += 1
        self._last_proprio = proprio = tuple(d.proprio)
        obs = P.observation_wire(self._obs_seq, time.monotonic_ns(), time.time_ns(), proprio, d.sim_success,
                                 self._episode or "", d.info, version)
        self._last_obs = (obs, d.frames)
        return obs, d.frames

    def _obs_fields(self, version: int) -> tuple[dict, list]:
        obs, frames = self._observe(version)
        descs, bufs = P.pack_frames(frames, self._encodings, 1, self.config.jpeg_quality)
        return {"obs": obs, "frames": descs}, bufs

    def _publish(self, obs: dict, frames: dict, force: bool = False) -> None:
        now = time.monotonic_ns()
        if not force and self._stream_ns and now - self._last_pub_ns < self._stream_ns:
            return
        self._last_pub_ns = now
        for cam, img in frames.items():
            descs, bufs = P.pack_frames({cam: img}, self._encodings, 1, self.config.jpeg_quality)
            header = {"v": P.V1, "sid": self.session_id, "seq": obs["seq"], "mono_ns": obs["mono_ns"],
                      "wall_ns": obs["wall_ns"], "pub_wall_ns": time.time_ns(), "episode_id": obs["episode_id"],
                      "frame": descs[0]}
            try:
                self._pub.send(P.pack_stream(cam, header, bufs[0]), zmq.NOBLOCK)
                self._bump("frames_published")
            except zmq.Again:
                pass

    def _stream_idle(self) -> None:
        if self._pub is None or not self._stream_ns or time.monotonic_ns() - self._last_pub_ns < self._stream_ns:
            return
        try:
            obs, frames = self._observe()
        except NotReady:  # nothing to show yet (a sim before its first reset): not a fault
            self._last_pub_ns = time.monotonic_ns()
            return
        except Exception as e:  # counted every time, said once per failing streak (not 10/s)
            self._bump("driver_errors")
            self._last_pub_ns = time.monotonic_ns()
            if not self._stream_failing:
                self._stream_failing = True
                log.warning("live stream paused: driver.observe() failed: %s: %s (said once; the "
                            "stream resumes when observe works again)", type(e).__name__, e)
                log.debug("driver.observe() failure", exc_info=True)
            return
        if self._stream_failing:
            self._stream_failing = False
            log.info("live stream resumed: driver.observe() works again")
        self._publish(obs, frames, force=True)

    # --- request handlers: (request, recv_ns) -> (reply fields, buffers) ---------------

    def _do_hello(self, req: P.Request, recv_ns: int) -> tuple[dict, list]:
        return {"session_id": self.session_id, "versions": self._versions,
                "capabilities": P.capabilities_to_wire(self._caps, req.v),
                "watchdog_ms": float(self.config.watchdog_ms),
                "max_command_age_ms": float(self.config.max_command_age_ms),
                "stream": {"endpoint": self.pub_endpoint, "fps": float(self.config.stream_fps)}}, []

    def _do_reset(self, req: P.Request, recv_ns: int) -> tuple[dict, list]:
        if self._estop.latched:
            raise Refusal(_ERR.ESTOPPED, "e-stop latched: re-arm before reset", "refused_estopped")
        try:
            scene = P.scene_from_wire(req.fields["scene"])
        except P.ProtocolError as e:
            raise P.ProtocolError(f"reset: bad scene: {e}", request_id=req.id) from None
        if self._episode is not None:
            self._safe_hold()
        self._episode = None
        self._wd = S.watchdog_disarm(self._wd)  # armed again by the episode's first act
        result = self.driver.reset(scene)
        eid = req.fields["episode_id"]
        if result.ready:
            self._episode, self._seq, self._last_proprio = eid, S.SeqState(), None
        return {"ready": result.ready, "instructions": result.instructions, "episode_id": eid}, []

    def _do_observe(self, req: P.Request, recv_ns: int) -> tuple[dict, list]:
        try:
            return self._obs_fields(req.v)
        except NotReady as e:  # nothing to show yet (no scene): not a fault, the arm is not held
            log.debug("observe before the first reset: %s", e)
            code = _ERR.NOT_READY if req.v >= P.V2 else _ERR.DRIVER_ERROR
            raise Refusal(code, f"not ready: {e or 'nothing to observe yet'}: reset first",
                          "refused_not_ready") from None

    def _do_act(self, req: P.Request, recv_ns: int) -> tuple[dict, list]:
        f = req.fields
        if self._estop.latched:
            raise Refusal(_ERR.ESTOPPED, f"e-stop latched ({self._estop.reason}): re-arm first", "refused_estopped")
        if self._episode is None or f["episode_id"] != self._episode:
            raise Refusal(_ERR.NOT_IN_EPISODE, f"act for episode {f['episode_id']!r}, bridge episode is "
                          f"{self._episode!r}: reset first", "refused_not_in_episode")
        verdict = S.check_command(self._seq, f["seq"], f["sent_wall_ns"], time.time_ns(), self._age_ns)
        if verdict is not S.CommandVerdict.OK:
            raise Refusal(_ERR.STALE_COMMAND, f"command dropped ({verdict}): seq {f['seq']}, last executed "
                          f"{self._seq.last_seq}", "stale_refused")
        values, terminate = P.act_command(req)
        if not S.is_finite_values(values):
            raise Refusal(_ERR.NON_FINITE, f"action has NaN/inf: {list(values)}", "non_finite_refused")
        ee, idx = None, self._ee_idx
        if idx is not None:  # ee_delta steps stay inside the workspace, from the latest ee position
            if self._last_proprio is None:
                self._observe(req.v)
            last = self._last_proprio
            if last is not None and max(idx) < len(last):
                ee = tuple(last[i] for i in idx)
        try:
            clip = S.clip_command(values, self._spec, self._caps.workspace, ee)
        except S.NonFiniteAction as e:
            raise Refusal(_ERR.NON_FINITE, str(e), "non_finite_refused") from None
        self.driver.apply_command(ArmCommand(clip.values, terminate))
        self._seq = S.accept_seq(self._seq, f["seq"])
        if not self._wd.armed:  # the episode's first act arms the watchdog (not reset)
            self._wd = S.watchdog_arm(self._wd, recv_ns)
        self._wd = S.watchdog_feed(self._wd, recv_ns)
        self._bump("acts_applied")
        if clip.any_clipped:
            self._bump("actions_clipped")
        out, bufs = self._obs_fields(req.v)
        out.update(P.act_reply_fields(req.v, clip.values, terminate, clip.clipped))
        return out, bufs

    def _do_hold(self, req: P.Request, recv_ns: int) -> tuple[dict, list]:
        self.driver.hold()
        self._wd = S.watchdog_mark_held(self._wd, recv_ns)
        self._bump("hold_commands")
        return {}, []

    def _do_estop(self, req: P.Request, recv_ns: int) -> tuple[dict, list]:
        self._estop = S.estop_trigger(self._estop, req.fields["reason"] or "estop command", recv_ns)
        self._wd = S.watchdog_mark_held(self._wd, recv_ns)
        self._bump("estops")
        log.warning("E-STOP latched: %s", self._estop.reason)
        try:
            self.driver.estop()  # the SDK's own stop where it has one (default: hold)
        except Exception:
            log.exception("driver estop() failed; holding instead (the e-stop stays latched)")
            self.driver.hold()
        return {}, []

    def _do_rearm(self, req: P.Request, recv_ns: int) -> tuple[dict, list]:
        if self._estop.latched:
            self._bump("rearms")
            log.warning("e-stop re-armed")
        self._estop = S.estop_rearm(self._estop)
        return {}, []

    def _do_status(self, req: P.Request, recv_ns: int) -> tuple[dict, list]:
        return {"status": self.status()}, []

    def status(self) -> dict:
        wd, es = self._wd, self._estop
        return {"session_id": self.session_id, "driver": self._caps.driver, "episode_id": self._episode,
                "estopped": es.latched, "estop_reason": es.reason,
                "estop_since_mono_ns": es.since_ns, "holding": wd.holding,
                "watchdog_armed": wd.armed, "watchdog_ms": float(self.config.watchdog_ms),
                "watchdog_fires": wd.fires, "last_fire_mono_ns": wd.last_fire_ns,
                "last_fire_delay_ms": wd.last_fire_delay_ns / 1e6, "last_valid_mono_ns": wd.last_valid_ns,
                "last_seq": self._seq.last_seq, "counters": dict(self.counters)}

    def _do_heartbeat(self, req: P.Request, recv_ns: int) -> tuple[dict, list]:
        return {}, []

    def _do_privileged(self, req: P.Request, recv_ns: int) -> tuple[dict, list]:
        state = self.driver.privileged_state() if self._caps.privileged_state else None
        if state is None:
            raise Refusal(_ERR.NOT_SUPPORTED, f"driver {self._caps.driver!r} has no privileged state")
        return {"state": P.sanitize(state)}, []

    def _do_end_episode(self, req: P.Request, recv_ns: int) -> tuple[dict, list]:
        if self._episode is None or req.fields["episode_id"] != self._episode:
            raise Refusal(_ERR.NOT_IN_EPISODE, f"end_episode for {req.fields['episode_id']!r}, current is "
                          f"{self._episode!r}", "refused_not_in_episode")
        self.driver.hold()
        self._episode = None
        self._wd = S.watchdog_mark_held(S.watchdog_disarm(self._wd), recv_ns)
        return {}, []
