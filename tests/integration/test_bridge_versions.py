"""Protocol v1 <-> v2 in both directions (docs/protocol.md section 3), declared action spaces
through the bridge, and the lab-facing fixes of issue 10: clipping (not refusing) large finite
actions, the watchdog armed by the first act, observe before the first reset.

- A v1 client, written here from the page with hand-built msgpack messages, against the
  reference (v2) bridge.
- The reference v2 BridgeClient against a minimal v1-only bridge, written here from the page
  (zmq + msgpack only, no import from robots/ on its side).
"""

from __future__ import annotations

import itertools
import pickle
import threading
import time
import uuid

import msgpack
import numpy as np
import pytest
import zmq

from robots.bridge import BridgeConfig, BridgeServer
from robots.client import BridgeClient, BridgeCommandError, BridgeRestarted, BridgeTimeout
from robots.types import Action, SceneSpec
from tests.integration.fakes import (
    FixedFrameDriver,
    JointDriver,
    NotReadyDriver,
    RefusingResetDriver,
    wait_for,
)

SCENE = SceneSpec("pick", "coke_can", ("coke_can",), seed=3)


def _bridge(driver, **kw) -> BridgeServer:
    cfg = BridgeConfig(bind="tcp://127.0.0.1:*", max_command_age_ms=kw.pop("max_command_age_ms", 2000), **kw)
    return BridgeServer(driver, cfg)


# --- a v1 client from the page ---------------------------------------------------------------


class V1Client:
    """Hand-built protocol v1 messages on a DEALER socket."""

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.ids = itertools.count(1)

    def call(self, rtype: str, **fields) -> tuple[dict, list[bytes]]:
        self.sock.send(msgpack.packb({"v": 1, "type": rtype, "id": next(self.ids), **fields}))
        assert self.sock.poll(5000), f"no reply to {rtype}"
        parts = self.sock.recv_multipart()
        return msgpack.unpackb(parts[0]), parts[1:]

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def v1(request):
    clients: list[V1Client] = []

    def make(endpoint: str) -> V1Client:
        clients.append(V1Client(endpoint))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


def test_v1_client_against_the_v2_bridge(v1):
    with _bridge(FixedFrameDriver((16, 16))) as b:
        c = v1(b.endpoint)
        h, _ = c.call("hello", client="v1-lab")
        assert h["ok"] and h["v"] == 1 and h["versions"] == [1, 2]
        assert set(h["capabilities"]) == {"driver", "cameras", "action_space", "workspace",
                                          "needs_operator_reset", "privileged_state", "tags"}
        assert h["capabilities"]["action_space"]["high"][0] == 0.05
        h, _ = c.call("reset", scene=SCENE.to_dict(), episode_id="e1")
        assert h["ok"] and h["ready"] and h["v"] == 1
        h, bufs = c.call("act", action=[0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], seq=1,
                         sent_wall_ns=time.time_ns(), episode_id="e1")
        assert h["ok"] and h["v"] == 1, h
        assert h["applied"] == [0.0, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
        assert h["clipped"] == [True] + [False] * 6 and "terminate" not in h
        assert set(h["obs"]) >= {"proprio", "seq", "mono_ns", "wall_ns"} and "state" not in h["obs"]
        assert h["obs"]["proprio"][0] == pytest.approx(0.05)
        d = h["frames"][0]
        assert d["camera"] == "front" and len(bufs[d["part"] - 1]) == 16 * 16 * 3
        h, _ = c.call("act", action=[1.0] + [0.0] * 7, seq=2, sent_wall_ns=time.time_ns(), episode_id="e1")
        assert h["applied"][0] == 1.0  # terminate passes through
        h, _ = c.call("observe")
        assert h["ok"] and "proprio" in h["obs"]
        h, _ = c.call("act", action=[0.0] * 7, seq=3, sent_wall_ns=0, episode_id="e1")
        assert h["code"] == "BAD_MESSAGE" and h["v"] == 1
        h, _ = c.call("act", action=[0.0] * 8, terminate=False, seq=3, sent_wall_ns=0, episode_id="e1")
        assert h["code"] == "BAD_MESSAGE"  # v2 fields in a v1 message


def test_v1_client_cannot_drive_a_joint_arm_but_can_stop_it(v1):
    with _bridge(JointDriver()) as b:
        c = v1(b.endpoint)
        for rtype, fields in [("hello", {"client": "old"}), ("observe", {}),
                              ("reset", {"scene": SCENE.to_dict(), "episode_id": "e"}),
                              ("act", {"action": [0.0] * 8, "seq": 1, "sent_wall_ns": 0, "episode_id": "e"})]:
            h, _ = c.call(rtype, **fields)
            assert h["code"] == "UNSUPPORTED_VERSION" and h["versions"] == [2], h
            assert "joint_position[4]" in h["message"]
        for rtype, fields in [("estop", {"reason": "r"}), ("status", {}), ("rearm", {}), ("hold", {}),
                              ("heartbeat", {})]:
            h, _ = c.call(rtype, **fields)
            assert h["ok"] and h["v"] == 1, h
        # an unknown version: refused in the lowest version, saying what the bridge speaks
        c.sock.send(msgpack.packb({"v": 7, "type": "hello", "id": 99, "client": "x"}))
        assert c.sock.poll(5000)
        h = msgpack.unpackb(c.sock.recv_multipart()[0])
        assert h["code"] == "UNSUPPORTED_VERSION" and h["v"] == 1 and h["id"] == 99


# --- a v1-only bridge from the page ---------------------------------------------------------


class V1OnlyBridge:
    """A minimal protocol-v1 robot side: one 8x8 camera "main", ee pose proprio, no safety
    beyond what the test needs. Refuses any other version with UNSUPPORTED_VERSION (and, as
    an old bridge, without a `versions` field)."""

    def __init__(self):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sid = uuid.uuid4().hex
        self.pose = [0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0]
        self.episode = ""
        self.seen_versions: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(20):
                continue
            ident, *body = self.sock.recv_multipart()
            h = msgpack.unpackb(body[0])
            self.seen_versions.append(h.get("v"))
            out, bufs = self.serve(h)
            t = time.monotonic_ns()
            reply = {"v": 1, "id": h.get("id"), "sid": self.sid, "t": [t, t, time.time_ns()],
                     "st": {"estopped": False, "holding": False, "in_episode": bool(self.episode), "counters": {}},
                     **out}
            self.sock.send_multipart([ident, msgpack.packb(reply), *bufs])

    def serve(self, h: dict) -> tuple[dict, list[bytes]]:
        def err(code: str, msg: str) -> tuple[dict, list[bytes]]:
            return {"type": "error", "ok": False, "code": code, "message": msg, "request_type": h.get("type")}, []

        if h.get("v") != 1:
            return err("UNSUPPORTED_VERSION", f"protocol version {h.get('v')} not supported (supported: [1])")
        typ = h["type"]
        ok = {"type": typ, "ok": True}
        if typ == "hello":
            caps = {"driver": "v1lab", "cameras": [{"name": "main", "height": 8, "width": 8, "encoding": "raw"}],
                    "action_space": {"low": [-0.05] * 3 + [-0.25] * 3 + [0.0],
                                     "high": [0.05] * 3 + [0.25] * 3 + [1.0], "control_hz": 5.0},
                    "workspace": {"low": [-0.35, -0.35, 0.0], "high": [0.35, 0.35, 0.4]},
                    "needs_operator_reset": False, "privileged_state": False, "tags": []}
            return ok | {"session_id": self.sid, "versions": [1], "capabilities": caps, "watchdog_ms": 500.0,
                         "max_command_age_ms": 0.0, "stream": {"endpoint": None, "fps": 0.0}}, []
        if typ == "reset":
            self.episode = h["episode_id"]
            return ok | {"ready": True, "instructions": "", "episode_id": self.episode}, []
        if typ in ("observe", "act"):
            extra: dict = {}
            if typ == "act":
                a = h["action"]
                if len(a) != 8:
                    return err("BAD_MESSAGE", "action must be 8 numbers")
                vals = [min(max(v, lo), hi) for v, lo, hi in zip(a[1:], [-0.05] * 3 + [-0.25] * 3 + [0.0],
                                                                  [0.05] * 3 + [0.25] * 3 + [1.0], strict=True)]
                for i in range(6):
                    self.pose[i] += vals[i]
                self.pose[6] = vals[6]
                extra = {"applied": [a[0], *vals], "clipped": [v != x for v, x in zip(vals, a[1:], strict=True)]}
            obs = {"seq": 1, "mono_ns": time.monotonic_ns(), "wall_ns": time.time_ns(), "proprio": list(self.pose),
                   "sim_success": None, "episode_id": self.episode, "info": {}}
            frame = {"camera": "main", "shape": [8, 8, 3], "dtype": "uint8", "encoding": "raw", "part": 1}
            return ok | extra | {"obs": obs, "frames": [frame]}, [bytes(range(192))]
        return ok, []


def test_v2_client_falls_back_to_v1_against_a_v1_bridge():
    with V1OnlyBridge() as b, BridgeClient(b.endpoint, timeout_ms=3000) as c:
        info = c.hello()
        assert b.seen_versions == [2, 1]  # offered v2, fell back to v1
        assert info.version == c.version == 1 and info.versions == (1,)
        caps = c.capabilities
        assert caps is not None and caps.driver == "v1lab" and caps.action_spec.label == "ee_delta[7]"
        assert caps.control_hz == 5.0 and caps.state.names[0] == "ee_x"
        assert c.reset(SCENE, "e1").ready
        r = c.act(Action(dx=0.5, gripper=0.5))
        assert r.applied == (0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5) and r.clipped[0] and not r.terminate
        assert r.observation.proprio[0] == pytest.approx(0.05)
        assert r.observation.frames["main"].shape == (8, 8, 3)
        r = c.act([0.0] * 6 + [1.0], terminate=True)
        assert r.terminate and r.action.terminate
        assert c.observe().frames["main"][0, 0, 1] == 1
        assert set(b.seen_versions[2:]) == {1}  # everything after hello in v1


def test_client_negotiates_before_a_first_reset_and_speaks_v1_for_safety_messages():
    with V1OnlyBridge() as b, BridgeClient(b.endpoint, timeout_ms=3000) as c:
        c.status()  # before any hello: v1, which every bridge understands
        assert b.seen_versions == [1] and c.version is None
        assert c.reset(SCENE, "e").ready  # negotiates first
        assert c.version == 1 and b.seen_versions == [1, 2, 1, 1]


# --- declared spaces through the bridge -------------------------------------------------------


def test_joint_position_arm_clips_per_joint_and_gets_apply_command():
    drv = JointDriver()
    with _bridge(drv) as b, BridgeClient(b.endpoint, timeout_ms=3000) as c:
        info = c.hello()
        assert info.version == 2 and c.capabilities == drv.capabilities() and info.versions == (2,)
        assert [cam.role.value for cam in c.capabilities.cameras] == ["external", "wrist"]
        assert c.reset(SCENE, "e").ready
        r = c.act([0.5, -3.0, 1e300, 2.0])
        assert r.applied == (0.5, -2.0, 0.5, 1.0) and r.clipped == (False, True, True, True)
        assert drv.commands[-1].values == (0.5, -2.0, 0.5, 1.0) and not drv.commands[-1].terminate
        assert r.observation.proprio == (0.5, -2.0, 0.5, 1.0)  # the named state, right after the act
        assert set(r.observation.frames) == {"main", "wrist"}
        assert r.summary.counters["actions_clipped"] == 1
        r = c.act(np.array([0.1, 0.2, 0.3, 0.4]), terminate=True)
        assert r.terminate and drv.commands[-1] == type(drv.commands[-1])((0.1, 0.2, 0.3, 0.4), True)
        n = len(drv.commands)
        for bad in ([0.0, float("nan"), 0.0, 0.0], [float("inf")] * 4):
            with pytest.raises(BridgeCommandError) as ei:
                c.act(bad)
            assert ei.value.code == "NON_FINITE"
        for wrong in ([0.0] * 3, [0.0] * 5, [0.0] * 8):
            with pytest.raises(BridgeCommandError) as ei:
                c.act(wrong)
            assert ei.value.code == "BAD_MESSAGE" and "joint_position[4]" in str(ei.value)
        with pytest.raises(ValueError, match="ee_delta"):
            c.act(Action(dx=0.01))  # an RT-2 Action on a joint arm: refused before sending
        assert len(drv.commands) == n
        st = c.status()["counters"]
        assert st["non_finite_refused"] == 2 and st["malformed"] == 3 and st["acts_applied"] == n


def test_ee_delta_arm_v2_act_wrong_length_and_large_finite_values():
    with _bridge(FixedFrameDriver((16, 16))) as b, BridgeClient(b.endpoint, timeout_ms=3000) as c:
        c.hello()
        assert c.reset(SCENE, "e").ready
        with pytest.raises(BridgeCommandError) as ei:
            c.act([0.0] * 7 + [1.0])  # the v1 layout in v2: 8 values for an ee_delta[7] arm
        assert ei.value.code == "BAD_MESSAGE" and "ee_delta[7]" in str(ei.value)
        r = c.act([1e308, -1e308, 0.0, 1e300, 0.0, 0.0, 1e308])
        assert r.applied == (0.05, -0.05, 0.0, 0.25, 0.0, 0.0, 1.0)
        assert r.clipped == (True, True, False, True, False, False, True)


def test_watchdog_is_armed_by_the_first_act_not_by_reset():
    with _bridge(FixedFrameDriver((16, 16)), watchdog_ms=100) as b, BridgeClient(b.endpoint, timeout_ms=3000) as c:
        c.hello()
        assert c.reset(SCENE, "e").ready
        st = c.status()
        assert st["episode_id"] == "e" and not st["watchdog_armed"]
        time.sleep(0.3)  # deliberately idle between reset and the first act (the policy loading)
        st = c.status()
        assert st["counters"]["watchdog_holds"] == 0 and not st["holding"] and not st["watchdog_armed"]
        r = c.act(Action(dx=0.01))
        assert not r.summary.holding and c.status()["watchdog_armed"]
        st = wait_for(lambda: (s := c.status())["holding"] and s, 5.0, "watchdog hold after the first act")
        assert st["counters"]["watchdog_holds"] == 1 and st["last_fire_delay_ms"] >= 100
        c.end_episode()
        assert c.reset(SCENE, "e2").ready and not c.status()["watchdog_armed"]  # a new episode: disarmed


def test_observe_before_the_first_reset_is_not_ready_without_a_hold(v1, caplog):
    drv = NotReadyDriver((16, 16))
    with _bridge(drv) as b, BridgeClient(b.endpoint, timeout_ms=3000) as c:
        c.hello()
        with caplog.at_level("WARNING", logger="evalfleet.bridge"):
            with pytest.raises(BridgeCommandError) as ei:
                c.observe()
            assert ei.value.code == "NOT_READY" and "reset first" in str(ei.value)
            assert not ei.value.summary.holding
            h, _ = v1(b.endpoint).call("observe")
            assert h["code"] == "DRIVER_ERROR" and h["message"].startswith("not ready:")
        assert not caplog.records  # no traceback, no warning
        st = c.status()
        assert st["counters"]["driver_errors"] == 0 and st["counters"]["refused_not_ready"] == 2
        assert drv.holds == [] and not st["holding"]
        assert c.reset(SCENE, "e").ready
        assert c.observe().frames["front"].shape == (16, 16, 3)


# --- errors keep their code and message across Ray (pickle) -----------------------------------


def test_refused_reset_error_pickles_with_code_and_message():
    with _bridge(RefusingResetDriver((16, 16))) as b, BridgeClient(b.endpoint, timeout_ms=3000) as c:
        c.hello()
        with pytest.raises(BridgeCommandError) as ei:
            c.reset(SCENE, "e")
    e = ei.value
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is BridgeCommandError and back.code == e.code == "DRIVER_ERROR"
    assert str(back) == str(e) and "gripper calibration lost" in str(back) and "DRIVER_ERROR" in str(back)
    assert back.endpoint == e.endpoint and back.summary == e.summary and back.summary.holding


def test_every_client_exception_pickles():
    for e in (BridgeTimeout("no reply", "tcp://a:1"),
              BridgeRestarted("restarted", "tcp://a:1", "old", "new"),
              BridgeCommandError("refused: ESTOPPED: x", "tcp://a:1", "ESTOPPED", None, (1, 2))):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.__dict__ == e.__dict__
    cloudpickle = pytest.importorskip("ray.cloudpickle")  # what Ray uses for exceptions
    e = BridgeCommandError("refused reset: DRIVER_ERROR: no gripper", "tcp://a:1", "DRIVER_ERROR")
    back = cloudpickle.loads(cloudpickle.dumps(e))
    assert back.code == "DRIVER_ERROR" and "no gripper" in str(back)


def test_client_safety_requests_before_hello_retry_once_on_a_v2_only_bridge():
    """docs/protocol.md §3: status/rearm/estop before a hello go out in v1; a bridge that
    speaks only v2 refuses them (UNSUPPORTED_VERSION, versions [2]) and gets each once more in
    v2; the client then keeps v2 for the next ones (one round trip each)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    seen: list[tuple[str, int]] = []
    stop = threading.Event()
    sid = uuid.uuid4().hex

    def serve() -> None:
        while not stop.is_set():
            if not router.poll(50):
                continue
            ident, body = router.recv_multipart()
            h = msgpack.unpackb(body)
            seen.append((h["type"], h["v"]))
            base = {"id": h["id"], "sid": sid, "t": [0, 0, 0],
                    "st": {"estopped": False, "holding": False, "in_episode": False, "counters": {}}}
            if h["v"] != 2:
                reply = {**base, "v": 2, "type": "error", "ok": False, "code": "UNSUPPORTED_VERSION",
                         "message": "v2 only", "request_type": h["type"], "versions": [2]}
            else:
                reply = {**base, "v": 2, "type": h["type"], "ok": True}
                if h["type"] == "status":
                    reply["status"] = {"estopped": False}
            router.send_multipart([ident, msgpack.packb(reply)])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with BridgeClient(endpoint, timeout_ms=5000) as c:
            assert c.status() == {"estopped": False}
            c.rearm()
            c.estop("r")
        assert seen == [("status", 1), ("status", 2), ("rearm", 2), ("estop", 2)], seen
    finally:
        stop.set()
        t.join(5)
        router.close(0)
        ctx.term()
