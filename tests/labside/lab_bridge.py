"""The lab's bridge: a ROUTER server for LabArm, written from docs/protocol.md alone.

One control thread serves requests one at a time (§1), decodes strictly (§2), checks `act`
in the order of §8.1, clips (§8.2), checks seq/age (§8.3), runs the watchdog (§8.4), latches
the e-stop (§8.5), counts (§8.6) and answers errors as §9 says. Lab-side switches for the tests:
refuse every reset with DRIVER_ERROR, latch an e-stop after N applied acts.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from typing import Any

import numpy as np
import zmq

from tests.labside import lab_wire as w
from tests.labside.lab_arm import (
    HEIGHT,
    SPACES,
    WIDTH,
    WORKSPACE_HIGH,
    WORKSPACE_LOW,
    LabArm,
    LabDriverError,
)
from tests.labside.lab_spec import (
    INTERVENTIONS,
    MALFORMED,
    SCENE_KEYS,
    SCENE_REQUIRED,
    V1,
    V1_SPACE_BOUND,
    V2,
    LabConfig,
)


class Refused(Exception):
    def __init__(self, code: str, message: str, counter: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.counter = code, message, counter


class LabBridge:
    """Start with .start(); the endpoint is tcp://127.0.0.1:<free port>. .close() stops it."""

    def __init__(self, config: LabConfig | None = None) -> None:
        self.cfg = config or LabConfig()
        self.space = SPACES[self.cfg.space]
        self.arm = LabArm(space=self.space, refuse_reset=self.cfg.refuse_reset)
        self.sid = uuid.uuid4().hex
        self.counters = {k: 0 for k in ("requests", "acts_applied", "frames_published",
                                        "refused_not_ready", *INTERVENTIONS)}
        self.watchdog_on = False  # §8.4 v2 page: armed by the first accepted act
        self.episode: str | None = None
        self.estopped, self.estop_reason, self.estop_since = False, "", 0
        self.last_seq = -1
        self.last_valid = 0  # monotonic ns of the last valid command
        self.watchdog_fires, self.last_fire, self.last_fire_delay_ms = 0, 0, 0.0
        self.obs_seq = 0
        self.acts_in_episode = 0
        self.operator_prompts = 0
        self._estop_pending = self.cfg.estop_after_acts
        self._fail_pending = self.cfg.fail_act
        self.log: list[dict[str, Any]] = []  # every request header received (for findings)
        self.log_ns: list[int] = []  # when each of them arrived (monotonic ns)
        self.applied: list[list[float]] = []  # every vector the arm executed, in order
        self.lock = threading.Lock()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        for opt, val in ((zmq.LINGER, 0), (zmq.RCVHWM, 64), (zmq.MAXMSGSIZE, 1 << 20)):
            self._sock.setsockopt(opt, val)
        if self.cfg.endpoint:  # a restarted bridge process binds where the last one was
            self._sock.bind(self.cfg.endpoint)
            self.endpoint = self.cfg.endpoint
        else:
            port = self._sock.bind_to_random_port("tcp://127.0.0.1")
            self.endpoint = f"tcp://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lab-bridge", daemon=True)
        self.schemas = {v: self._schema(v) for v in self.cfg.versions}

    def _schema(self, v: int) -> dict[str, w.Schema]:
        return {1: V1, 2: V2}[v]

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> LabBridge:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._sock.closed:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close(linger=0)
        self._ctx.term()

    def rearm_local(self) -> None:
        """The lab's own operator re-arms at the arm (same effect as a `rearm` request)."""
        with self.lock:
            self.estopped, self.estop_reason = False, ""

    # -- loop ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            timeout = 50.0
            if self._watchdog_armed():
                due = self.last_valid + self.cfg.watchdog_ms * 1e6 - time.monotonic_ns()
                timeout = max(0.0, min(timeout, due / 1e6))
            if poller.poll(math.ceil(timeout)):
                parts = self._sock.recv_multipart(zmq.NOBLOCK)
                recv_ns = time.monotonic_ns()
                with self.lock:
                    self._serve(parts, recv_ns)
            with self.lock:
                self._check_watchdog()

    def _watchdog_armed(self) -> bool:
        return self.episode is not None and self.watchdog_on and not self.arm.held

    def _check_watchdog(self) -> None:
        if not self._watchdog_armed():
            return
        now = time.monotonic_ns()
        if now - self.last_valid > self.cfg.watchdog_ms * 1e6:
            self.arm.hold()
            self.counters["watchdog_holds"] += 1
            self.watchdog_fires += 1
            self.last_fire = now
            self.last_fire_delay_ms = (now - self.last_valid) / 1e6

    def _serve(self, parts: list[bytes], recv_ns: int) -> None:
        self.counters["requests"] += 1
        ident, rest = parts[0], parts[1:]
        envelope = [ident]
        if len(rest) >= 1 and rest[0] == b"":  # a REQ client's delimiter: echoed back
            envelope.append(b"")
            rest = rest[1:]
        version = min(self.cfg.versions)
        try:
            if not rest:
                raise w.WireError("BAD_MESSAGE", "empty message")
            header = w.decode_header(rest[0])
            self.log.append(header)
            self.log_ns.append(recv_ns)
            if len(rest) > 1:
                raise w.WireError("BAD_MESSAGE", f"requests carry no buffers; got "
                                  f"{len(rest) - 1}", req_id=header.get("id"),
                                  req_type=header.get("type"))
            req = w.check_request(header, self.schemas)
            version = req.v
            if req.v == 1 and self.space.kind != "ee_delta" and req.type in V1_SPACE_BOUND:
                raise w.WireError("UNSUPPORTED_VERSION", f"this arm acts in {self.space.kind}"
                                  f"[{len(self.space.names)}]; version 1 can only express "
                                  "ee_delta[7]: use version 2", req_id=req.id,
                                  req_type=req.type, version=1, versions=[2])
            reply, buffers = self._dispatch(req)
            out = {"v": req.v, "type": req.type, "id": req.id, "ok": True, **reply}
        except w.WireError as e:
            version = e.version or version
            self._count_refusal(e.code, None)
            out = self._error(e.code, e.message, e.req_id, e.req_type, version)
            if e.code == "UNSUPPORTED_VERSION":  # §3: the error says which versions to use
                out["versions"] = e.versions or sorted(self.cfg.versions)
            buffers = []
        except Refused as e:
            self._count_refusal(e.code, e.counter)
            out = self._error(e.code, e.message, req.id, req.type, version)
            buffers = []
        except Exception as e:  # noqa: BLE001 - §9 INTERNAL: a bug in this bridge
            self._count_refusal("INTERNAL", None)
            out = self._error("INTERNAL", f"{e.__class__.__name__}: {e}", None, None, version)
            buffers = []
        out.update(sid=self.sid, st=self._summary())
        if "reply" in self.cfg.extras:
            out["lab_note"] = "served by the lab's own bridge"
        out["t"] = [recv_ns, time.monotonic_ns(), self._wall_ns()]
        self._sock.send_multipart([*envelope, w.encode(out), *buffers])

    def _wall_ns(self) -> int:
        """This host's CLOCK_REALTIME (§7), off by the configured skew."""
        return time.time_ns() + int(self.cfg.clock_skew_s * 1e9)

    def _error(self, code: str, message: str, rid: Any, rtype: Any, v: int) -> dict[str, Any]:
        return {"v": v, "type": "error", "id": rid if w.is_int(rid) else None, "ok": False,
                "code": code, "message": message,
                "request_type": rtype if w.is_str(rtype) else None}

    def _count_refusal(self, code: str, counter: str | None) -> None:
        self.counters["refused_total"] += 1
        if code in MALFORMED:
            self.counters["malformed"] += 1
        if counter:
            self.counters[counter] += 1

    def _summary(self) -> dict[str, Any]:
        counters = {k: self.counters[k] for k in INTERVENTIONS if self.counters[k]}
        if "counter" in self.cfg.extras:
            counters["lab_bumps"] = 1
        return {"estopped": self.estopped, "holding": self.arm.held,
                "in_episode": self.episode is not None, "counters": counters}

    # -- messages ------------------------------------------------------------------------------
    def _dispatch(self, req: w.Request) -> tuple[dict[str, Any], list[bytes]]:
        f = req.fields
        if req.type == "hello":
            return self._hello(req.v), []
        if req.type == "reset":
            return self._reset(f["scene"], f["episode_id"]), []
        if req.type == "observe":
            return self._observe(req.v)
        if req.type == "act":
            return self._act(req.v, f)
        if req.type == "hold":
            self.arm.hold()
            self.counters["hold_commands"] += 1
            self.last_valid = time.monotonic_ns()
            return {}, []
        if req.type == "estop":
            self._latch(f["reason"])
            return {}, []
        if req.type == "rearm":
            self.estopped, self.estop_reason = False, ""
            self.counters["rearms"] += 1
            return {}, []
        if req.type == "status":
            return {"status": self._status()}, []
        if req.type == "heartbeat":
            return {}, []
        if req.type == "privileged":
            raise Refused("NOT_SUPPORTED", "the lab arm has no simulator ground truth")
        if req.type == "end_episode":
            if self.episode is None or f["episode_id"] != self.episode:
                raise Refused("NOT_IN_EPISODE", f"episode {f['episode_id']!r} is not running "
                              f"(current: {self.episode!r})", "refused_not_in_episode")
            self.arm.hold()
            self.episode, self.watchdog_on = None, False
            return {}, []
        raise w.WireError("UNKNOWN_TYPE", req.type)  # unreachable: the schema refused it

    def _hello(self, v: int) -> dict[str, Any]:
        sp, hz = self.space, self.cfg.control_hz
        common: dict[str, Any] = {
            "driver": "labarm",
            "workspace": {"low": list(WORKSPACE_LOW), "high": list(WORKSPACE_HIGH)},
            "needs_operator_reset": self.cfg.needs_operator_reset,
            "privileged_state": False, "tags": []}
        cams = [{"name": n, "height": HEIGHT, "width": WIDTH, "encoding": "raw"}
                for n, _ in self.cfg.cameras]
        caps: dict[str, Any]
        if v == 1:  # §5.5
            caps = {**common, "cameras": cams,
                    "action_space": {"low": list(sp.low), "high": list(sp.high),
                                     "control_hz": hz}}
        else:  # §5.2
            caps = {**common, "action": sp.declaration(hz),
                    "cameras": [{**c, "role": role}
                                for c, (_, role) in zip(cams, self.cfg.cameras, strict=True)],
                    "state": {"names": list(sp.state_names), "units": list(sp.state_units)}}
        if self.cfg.caps_typo and v == 2:
            caps["state"]["units"] = list(sp.state_units[:1])
        if "caps" in self.cfg.extras:
            caps["lab_serial"] = "LAB-0001"
        return {"session_id": self.sid, "versions": sorted(self.cfg.versions),
                "capabilities": caps, "watchdog_ms": self.cfg.watchdog_ms,
                "max_command_age_ms": self.cfg.max_command_age_ms,
                "stream": {"endpoint": None, "fps": 0.0}}

    def _driver(self, fn: Any, *args: Any) -> Any:
        """§8.8: the driver raised: hold, DRIVER_ERROR naming the exception and ending with
        "(arm held)", count, keep serving."""
        try:
            return fn(*args)
        except Exception as e:
            self.arm.hold()
            raise Refused("DRIVER_ERROR", f"{e.__class__.__name__}: {e} (arm held)",
                          "driver_errors") from e

    def _reset(self, scene: dict[str, Any], episode_id: str) -> dict[str, Any]:
        for key in SCENE_REQUIRED:  # §5.4: required keys, known keys typed, unknown ignored
            if key not in scene:
                raise Refused("BAD_MESSAGE", f"reset: scene lacks the required key '{key}'")
        for key, check in SCENE_KEYS.items():
            if key in scene and not check(scene[key]):
                raise Refused("BAD_MESSAGE", f"reset: scene key '{key}' has the wrong type: "
                              f"{scene[key]!r}"[:300])
        if self.estopped:
            raise Refused("ESTOPPED", f"e-stop latched: {self.estop_reason}", "refused_estopped")
        self.arm.hold()
        self.episode, self.watchdog_on = None, False
        if self.cfg.needs_operator_reset and scene.get("operator_confirmed") is not True:
            self.operator_prompts += 1
            return {"ready": False, "episode_id": episode_id,
                    "instructions": f"put the {scene['target']} on the table, clear the "
                                    "workspace, then confirm"}
        self._driver(self.arm.reset, scene)
        self.episode = episode_id
        self.last_seq = -1
        self.acts_in_episode = 0
        return {"ready": True, "instructions": "", "episode_id": episode_id}

    def _obs(self, v: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[bytes]]:
        self.obs_seq += 1
        obs: dict[str, Any] = {"seq": self.obs_seq, "mono_ns": time.monotonic_ns(), "wall_ns": self._wall_ns(),
               "proprio" if v == 1 else "state": self.arm.state(),
               "sim_success": self.arm.success() if self.arm.ready else None,
               "episode_id": self.episode or "", "info": {}}
        if "obs" in self.cfg.extras:
            obs["lab_temp_c"] = 31.5
        frames, bufs = [], []
        for i, (name, _) in enumerate(self.cfg.cameras):
            img = self.arm.render(name)
            frames.append({"camera": name, "shape": list(img.shape), "dtype": "uint8",
                           "encoding": "raw", "part": i + 1})
            bufs.append(img.tobytes())
        return obs, frames, bufs

    def _observe(self, v: int) -> tuple[dict[str, Any], list[bytes]]:
        if self.cfg.blind_until_reset and not self.arm.ready:  # §4 observe, §9 NOT_READY
            msg = "not ready: the lab arm has no scene before its first reset"
            raise Refused("NOT_READY" if v == 2 else "DRIVER_ERROR", msg, "refused_not_ready")
        obs, frames, bufs = self._obs(v)
        return {"obs": obs, "frames": frames}, bufs

    def _act(self, v: int, f: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        sp = self.space
        raw = f["action"]
        if v == 2 and len(raw) != len(sp.names):  # §8.1 step 2 (well-formed)
            raise Refused("BAD_MESSAGE", f"act: action has {len(raw)} values, arm declares "
                          f"{sp.kind}[{len(sp.names)}]")
        if self.estopped:  # §8.1 order: 3, 4, 5, 6, 7
            raise Refused("ESTOPPED", f"e-stop latched: {self.estop_reason}", "refused_estopped")
        if self.episode is None or f["episode_id"] != self.episode:
            raise Refused("NOT_IN_EPISODE", f"episode {f['episode_id']!r} is not running "
                          f"(current: {self.episode!r})", "refused_not_in_episode")
        if f["seq"] <= self.last_seq:
            raise Refused("STALE_COMMAND", f"seq {f['seq']} <= last executed {self.last_seq}",
                          "stale_refused")
        age_ms = (self._wall_ns() - f["sent_wall_ns"]) / 1e6
        if self.cfg.max_command_age_ms > 0 and abs(age_ms) > self.cfg.max_command_age_ms:
            raise Refused("STALE_COMMAND", f"command is {age_ms:.0f} ms old (limit "
                          f"{self.cfg.max_command_age_ms:.0f} ms)", "stale_refused")
        values = [float(x) for x in raw]
        if not all(math.isfinite(x) for x in values):
            raise Refused("NON_FINITE", "action has NaN or inf", "non_finite_refused")
        terminate = values[0] >= 0.5 if v == 1 else bool(f["terminate"])
        cont = np.array(values[1:] if v == 1 else values)
        lim = np.clip(cont, sp.low, sp.high)
        if sp.kind == "ee_delta":  # §8.2: keep the ee inside the workspace
            p = np.array(self.arm.pos)
            lo, hi = np.array(WORKSPACE_LOW), np.array(WORKSPACE_HIGH)
            d = lim[:3]
            d = np.where(p + d > hi, np.minimum(d, np.maximum(hi - p, 0.0)), d)
            d = np.where(p + d < lo, np.maximum(d, np.minimum(lo - p, 0.0)), d)
            lim[:3] = d
        clipped = [bool(a != b) for a, b in zip(cont, lim, strict=True)]
        if any(clipped):
            self.counters["actions_clipped"] += 1
        if self._fail_pending is not None and self.acts_in_episode + 1 >= self._fail_pending[0]:
            msg = self._fail_pending[1]
            self._fail_pending = None  # once per bridge life

            def fault(_: Any) -> None:
                raise LabDriverError(msg)

            self._driver(fault, lim)
        self._driver(self.arm.apply, lim)
        self.last_seq = f["seq"]
        self.last_valid = time.monotonic_ns()
        self.watchdog_on = True
        self.counters["acts_applied"] += 1
        self.acts_in_episode += 1
        obs, frames, bufs = self._obs(v)
        if self._estop_pending is not None and self.acts_in_episode >= self._estop_pending:
            self._estop_pending = None  # once per bridge life: after a re-arm the lab goes on
            self._latch(f"lab: e-stop after {self.acts_in_episode} applied acts")
        applied = [float(x) for x in lim]
        self.applied.append(applied)
        if v == 1:
            reply = {"applied": [1.0 if terminate else 0.0, *applied], "clipped": clipped}
        else:
            reply = {"applied": applied, "terminate": terminate, "clipped": clipped}
        return {**reply, "obs": obs, "frames": frames}, bufs

    def _latch(self, reason: str) -> None:
        self.arm.hold()
        if not self.estopped:
            self.estop_since = time.monotonic_ns()
        self.estopped, self.estop_reason = True, reason
        self.counters["estops"] += 1

    def _status(self) -> dict[str, Any]:
        return {"session_id": self.sid, "driver": "labarm", "episode_id": self.episode,
                "estopped": self.estopped, "estop_reason": self.estop_reason,
                "estop_since_mono_ns": self.estop_since, "holding": self.arm.held,
                "watchdog_armed": self._watchdog_armed(), "watchdog_ms": self.cfg.watchdog_ms,
                "watchdog_fires": self.watchdog_fires, "last_fire_mono_ns": self.last_fire,
                "last_fire_delay_ms": self.last_fire_delay_ms,
                "last_valid_mono_ns": self.last_valid, "last_seq": self.last_seq,
                "counters": dict(self.counters)}


__all__ = ["LabBridge", "LabConfig", "LabDriverError"]
