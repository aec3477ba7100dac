"""BridgeServer + BridgeClient across processes: safety semantics, failures, live stream."""

from __future__ import annotations

import math
import time

import msgpack
import numpy as np
import pytest
import zmq

from robots.client import (
    BridgeClient,
    BridgeCommandError,
    BridgeRestarted,
    BridgeTimeout,
    FrameSubscriber,
)
from robots.types import Action, SceneSpec
from tests.integration.fakes import BridgeProcess, FixedFrameDriver, wait_for

SCENE = SceneSpec("pick", "coke_can", ("coke_can",), seed=3)
WATCHDOG_MS = 300
CONTROL_PERIOD_MS = 200  # the fake's 5 Hz


@pytest.fixture
def bridge(tmp_path):
    with BridgeProcess(tmp_path, watchdog_ms=WATCHDOG_MS) as b:
        yield b


@pytest.fixture
def client(bridge):
    with BridgeClient(bridge.endpoint, timeout_ms=3000) as c:
        c.hello()
        yield c


def _episode(c: BridgeClient, eid: str = "ep-1") -> None:
    assert c.reset(SCENE, eid).ready


def test_hello_reports_capabilities_and_session(bridge, client):
    info = client.hello()
    assert info.session_id == bridge.session_id == client.session_id
    assert info.capabilities.driver == "fixed" and info.capabilities.cameras[0].height == 64
    assert info.watchdog_ms == WATCHDOG_MS and info.versions == (1, 2) and info.version == client.version == 2
    assert client.capabilities == info.capabilities and info.capabilities.action_spec.label == "ee_delta[7]"
    assert abs(info.clock_offset_ns) < 10**9  # same clock: ~0 (a units or sign bug is ~1e18)


def test_act_returns_applied_action_and_next_observation(client):
    _episode(client)
    r = client.act(Action(dx=0.01, gripper=0.5))
    assert r.action == Action(dx=0.01, gripper=0.5) and r.clipped == (False,) * 7
    assert r.applied == (0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5) and r.terminate is False
    obs = r.observation
    assert obs.episode_id == "ep-1" and math.isclose(obs.proprio[0], 0.01)
    front = obs.frames["front"]
    np.testing.assert_array_equal(front, FixedFrameDriver((64, 64)).frames["front"])
    assert not front.flags.writeable  # zero-copy view of the received buffer
    assert r.timing.recv_ns <= r.timing.send_ns and obs.robot_wall_ns > 0
    r2 = client.act(Action(dx=0.01))
    assert r2.observation.seq > obs.seq and r2.observation.robot_monotonic_ns > obs.robot_monotonic_ns


def test_operator_reset_returns_instructions(client):
    r = client.reset(SceneSpec("needs_operator", "banana", ("banana",)), "ep-op")
    assert not r.ready and "banana" in r.instructions
    with pytest.raises(BridgeCommandError) as ei:
        client.act(Action(), episode_id="ep-op")
    assert ei.value.code == "NOT_IN_EPISODE"


def test_watchdog_holds_within_watchdog_plus_one_period(client):
    _episode(client)
    last = None
    for _ in range(20):
        last = client.act(Action(dx=0.001))
    assert client.privileged()["n_holds"] == 0 and not last.summary.holding
    st = wait_for(lambda: (s := client.status())["holding"] and s, 5.0, "watchdog hold")
    holds = [h for h in client.privileged()["holds"] if h > last.timing.recv_ns]
    assert len(holds) == 1, holds
    delay_ms = (holds[0] - last.timing.recv_ns) / 1e6
    # never early (a safety property); how late is a benchmark figure (benchmarks/safety_timing.py)
    assert delay_ms >= WATCHDOG_MS, delay_ms
    assert st["last_fire_delay_ms"] >= WATCHDOG_MS, st
    assert st["counters"]["watchdog_holds"] == 1 and st["watchdog_fires"] == 1
    # a valid command releases the hold; it is reported in every reply
    r = client.act(Action(dx=0.001))
    assert not r.summary.holding and r.summary.counters["watchdog_holds"] == 1


def test_watchdog_quiet_while_commands_flow_and_outside_episodes(client):
    _episode(client)
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:  # commands every ~50 ms, well inside 300 ms
        client.act(Action(dx=0.0))
        time.sleep(0.05)
    assert client.status()["counters"]["watchdog_holds"] == 0
    client.end_episode()
    n = client.privileged()["n_holds"]
    time.sleep((WATCHDOG_MS + CONTROL_PERIOD_MS) / 1000)  # deliberately idle: no episode, no watchdog
    st = client.status()
    assert st["counters"]["watchdog_holds"] == 0 and client.privileged()["n_holds"] == n


def test_estop_latches_and_only_rearm_releases(client):
    _episode(client)
    client.act(Action(dx=0.01))
    s = client.estop("test operator")
    assert s.estopped and s.counters["estops"] == 1
    before = client.privileged()["n_applied"]
    for call in (lambda: client.act(Action(dx=0.01)), lambda: client.reset(SCENE, "ep-2")):
        with pytest.raises(BridgeCommandError) as ei:
            call()
        assert ei.value.code == "ESTOPPED" and ei.value.summary.estopped
    # nothing else releases it: hold, heartbeat, hello, status, end_episode, time
    client.hold()
    client.heartbeat()
    client.hello()
    client.end_episode()
    time.sleep((WATCHDOG_MS + CONTROL_PERIOD_MS) / 1000)
    st = client.status()
    assert st["estopped"] and st["estop_reason"] == "test operator"
    assert st["counters"]["refused_estopped"] == 2 and client.privileged()["n_applied"] == before
    assert not client.rearm().estopped
    _episode(client, "ep-3")
    assert client.act(Action(dx=0.01)).applied[0] == 0.01
    assert client.status()["counters"]["rearms"] == 1


def test_out_of_range_clipped_and_nan_refused_both_reported(client):
    _episode(client)
    r = client.act(Action(dx=0.5, droll=-3.0, gripper=7.0))
    assert (r.action.dx, r.action.droll, r.action.gripper) == (0.05, -0.25, 1.0)
    assert r.clipped == (True, False, False, True, False, False, True)
    assert r.summary.counters["actions_clipped"] == 1
    assert client.privileged()["applied"][-1][1] == 0.05  # the arm got the clipped value
    n = client.privileged()["n_applied"]
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(BridgeCommandError) as ei:
            client.act([0.01, bad, 0.0, 0.0, 0.0, 0.0, 1.0])
        assert ei.value.code == "NON_FINITE"
    with pytest.raises(BridgeCommandError):
        client.act([0, 0, 0, 0, 0, 0, float("nan")], terminate=True)  # the gripper too
    st = client.status()
    assert st["counters"]["non_finite_refused"] == 4 and client.privileged()["n_applied"] == n


def test_workspace_clip_from_current_pose(client):
    _episode(client)
    for _ in range(4):  # z from 0.2 to 0.4 (the workspace ceiling) in 5 cm steps
        client.act(Action(dz=0.05))
    r = client.act(Action(dz=0.05))
    assert r.action.dz == pytest.approx(0.0, abs=1e-9) and r.clipped[2]


def test_stale_and_non_increasing_seq_dropped(client):
    _episode(client)
    client.act(Action(dx=0.01), seq=10)
    n = client.privileged()["n_applied"]
    for kw in ({"seq": 10}, {"seq": 5}, {"seq": 11, "sent_wall_ns": time.time_ns() - 10**10},
               {"seq": 12, "sent_wall_ns": time.time_ns() + 10**10}):
        with pytest.raises(BridgeCommandError) as ei:
            client.act(Action(dx=0.01), **kw)
        assert ei.value.code == "STALE_COMMAND"
    assert client.privileged()["n_applied"] == n
    assert client.status()["counters"]["stale_refused"] == 4
    assert client.act(Action(dx=0.01), seq=13).action.dx == 0.01


def test_commands_for_another_episode_refused(client):
    _episode(client, "ep-a")
    with pytest.raises(BridgeCommandError) as ei:
        client.act(Action(), episode_id="ep-b")
    assert ei.value.code == "NOT_IN_EPISODE"
    client.end_episode()
    with pytest.raises(BridgeCommandError):
        client.act(Action(), episode_id="ep-a")


def test_driver_error_is_reported_and_bridge_keeps_serving(tmp_path):
    with BridgeProcess(tmp_path, driver="tests.integration.fakes:FailingDriver") as b, \
            BridgeClient(b.endpoint, timeout_ms=3000) as c:
        _episode(c)
        with pytest.raises(BridgeCommandError) as ei:
            c.act(Action(dx=0.045))
        assert ei.value.code == "DRIVER_ERROR" and ei.value.summary.holding
        assert c.act(Action(dx=0.01)).action.dx == 0.01
        assert c.status()["counters"]["driver_errors"] == 1


def test_killed_bridge_mid_episode_raises_within_timeout(bridge):
    with BridgeClient(bridge.endpoint, timeout_ms=500) as c:
        c.hello()
        _episode(c)
        c.act(Action(dx=0.01))
        bridge.kill()
        t0 = time.monotonic()
        with pytest.raises(BridgeTimeout) as ei:
            c.act(Action(dx=0.01))
        waited = time.monotonic() - t0
        assert waited >= 0.45, waited  # it waited out its own timeout, not less
        assert bridge.endpoint in str(ei.value) and "running" in str(ei.value)
        with pytest.raises(BridgeTimeout):  # later calls fail the same clear way
            c.status()


def test_restarted_bridge_detected_by_session_id(tmp_path):
    first = BridgeProcess(tmp_path).start()
    try:
        endpoint = first.endpoint
        with BridgeClient(endpoint, timeout_ms=500) as c:
            old = c.hello().session_id
            _episode(c)
            first.kill()
            with pytest.raises(BridgeTimeout):
                c.act(Action(dx=0.01))
            with BridgeProcess(tmp_path, bind=endpoint) as second:
                c.timeout_ms = 5000
                with pytest.raises(BridgeRestarted) as ei:
                    c.status()
                assert ei.value.old_session == old and ei.value.new_session == second.session_id
                assert c.restarted and c.episode_id is None
                assert c.hello().session_id == second.session_id  # carries on after a new hello
                with pytest.raises(BridgeCommandError) as ei2:  # the old episode is gone
                    c.act(Action(), episode_id="ep-1")
                assert ei2.value.code == "NOT_IN_EPISODE"
    finally:
        first.stop()


def test_late_reply_is_discarded_by_request_id(client):
    sock = client._socket()  # an old reply still queued must not answer a new request
    sock.send_multipart([msgpack.packb({"v": 1, "type": "heartbeat", "id": 999_999})])
    wait_for(lambda: sock.poll(0), 3.0, "queued reply")
    assert client.status()["session_id"] == client.session_id
    assert client.late_replies == 1


def test_req_socket_client_is_served(bridge):
    ctx = zmq.Context.instance()
    with ctx.socket(zmq.REQ) as s:
        s.linger = 0
        s.connect(bridge.endpoint)
        s.send(msgpack.packb({"v": 1, "type": "hello", "id": 1, "client": "c-program"}))
        assert s.poll(3000)
        h = msgpack.unpackb(s.recv())
        assert h["ok"] and h["id"] == 1 and h["session_id"] == bridge.session_id and len(h["t"]) == 3


def test_live_stream_delivers_latest_frames(tmp_path):
    with BridgeProcess(tmp_path, driver="tests.integration.fakes:TwoCameraDriver", pub=True,
                       stream_fps=50) as b, FrameSubscriber(b.pub_endpoint, ["front", "wrist"]) as sub:
        expect = FixedFrameDriver((64, 64), cameras=("front", "wrist")).frames
        first = {cam: sub.latest(cam, 5000) for cam in ("front", "wrist")}
        for cam, f in first.items():
            np.testing.assert_array_equal(f.image, expect[cam])
            assert f.session_id == b.session_id
        later = wait_for(lambda: (f := sub.latest("front", 5000)).seq > first["front"].seq + 2 and f,
                         5.0, "newer frames")
        # conflated: what arrives is the newest frame, not a backlog
        assert later.seq > first["front"].seq + 2


def test_sim_driver_behind_the_bridge(tmp_path):
    pytest.importorskip("robots.drivers.sim")
    with BridgeProcess(tmp_path, driver="sim", image_size="64x64", watchdog_ms=WATCHDOG_MS) as b, \
            BridgeClient(b.endpoint, timeout_ms=10_000) as c:
        caps = c.hello().capabilities
        period_ms = 1000 / caps.action_space.control_hz
        assert c.reset(SCENE, "sim-1").ready
        last = c.act(Action(dz=-0.01))
        assert set(last.observation.frames) == {s.name for s in caps.cameras}
        st = wait_for(lambda: (s := c.status())["holding"] and s, 10.0, "sim watchdog hold")
        assert st["last_fire_delay_ms"] >= WATCHDOG_MS, (st, period_ms)
        assert st["counters"]["watchdog_holds"] == 1
