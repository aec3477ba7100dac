"""Kind `openvla_rest` against a fake OpenVLA deploy.py server written here from the protocol
(http.server on a thread; json-numpy decoded and encoded by hand, byte by byte):

- the actions the policy returns are exactly the ones the server sent, per arm, with the
  image resized to 224x224 and the instruction and unnorm_key passed through;
- a reply that comes after the deadline is never executed: the call fails, its connection is
  dropped, and the next call gets the next reply on a new connection;
- HTTP 500, deploy.py's "error" answer and a malformed body fail with one clear line, and
  the next call works;
- a keep-alive connection the server closed while idle is replaced without failing a step;
- a short campaign on sim arms whose policy is the fake server completes, every step's
  applied action equal to one the server sent.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from orchestrator.fleet_config import ArmConfig
from orchestrator.runner import FleetRunner
from orchestrator.store.models import Episode, Step
from policies.base import PartialBatch, PolicyInput, PolicyUnreachable
from policies.remote.openvla_rest import OpenVLARestError, OpenVLARestPolicy
from tests.integration.fleet_support import (
    ray_local,  # noqa: F401 - pytest fixture (module-scoped local Ray)
    run_to_done,
    started,
)

pytestmark = pytest.mark.timeout(240)
WAIT_S = 10.0  # an upper bound for the fake server's threads, never a synchronization sleep


def action_for(n: int) -> list[float]:
    """The server's n-th action: distinct per n, exact in float32, inside RT-2's limits."""
    return [(n % 64) / 2048, -((n // 64) % 64) / 2048, 0.0, 0.0, 0.0, (n % 60) / 256,
            float(n % 2)]


@dataclass
class FakeOpenVLA:
    """What the server saw and sent; `script` says how to answer the next requests
    ("ok", "late", "500", "error", "garbage", "close_after"), then "ok" forever."""

    script: list[str] = field(default_factory=list)
    # the request whose image is filled with this value is "late", whenever it arrives (two
    # arms' requests of one batch arrive in either order)
    late_image: int | None = None
    requests: list[dict] = field(default_factory=list)
    sent: list[list[float]] = field(default_factory=list)
    connections: int = 0
    release_late: threading.Event = field(default_factory=threading.Event)
    late_done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def decode_numpy(d: dict) -> np.ndarray:
    """json-numpy's {"__numpy__", "dtype", "shape"}, decoded by hand."""
    assert set(d) == {"__numpy__", "dtype", "shape"}, d.keys()
    raw = base64.b64decode(d["__numpy__"], validate=True)
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"])


def encode_action(values: list[float]) -> bytes:
    arr = np.asarray(values, dtype="<f4")
    return json.dumps({"__numpy__": base64.b64encode(arr.tobytes()).decode(), "dtype": "<f4",
                       "shape": [7]}).encode()


def make_handler(state: FakeOpenVLA) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like uvicorn

        def setup(self) -> None:
            super().setup()
            with state.lock:
                state.connections += 1

        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/act", self.path
            image = decode_numpy(body["image"])
            with state.lock:
                n = len(state.requests)
                state.requests.append({"image": image, "instruction": body["instruction"],
                                       "unnorm_key": body["unnorm_key"]})
                if state.late_image is not None and int(image[0, 0, 0]) == state.late_image:
                    how = "late"
                else:
                    how = state.script.pop(0) if state.script else "ok"
            if how == "500":
                self._reply(500, b"Internal Server Error")
            elif how == "error":
                self._reply(200, b'"error"')  # deploy.py's answer when inference raised
            elif how == "garbage":
                self._reply(200, b"<html>oops</html>")
            elif how == "late":
                state.release_late.wait(WAIT_S)
                try:
                    self._reply(200, encode_action(LATE_ACTION))
                except OSError:
                    pass  # the client dropped the connection: the late reply goes nowhere
                finally:
                    state.late_done.set()
                self.close_connection = True
            else:
                action = action_for(n)
                with state.lock:
                    state.sent.append(action)
                self._reply(200, encode_action(action))
                if how == "close_after":  # an idle keep-alive closed by the server
                    self.close_connection = True

    return Handler


@contextmanager
def fake_openvla(script: list[str] | None = None, *,
                 late_image: int | None = None) -> Iterator[tuple[str, FakeOpenVLA]]:
    state = FakeOpenVLA(script=list(script or []), late_image=late_image)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        state.release_late.set()
        server.shutdown()
        server.server_close()
        thread.join(WAIT_S)


def inp(arm: str, value: int = 0, instruction: str = "pick coke can") -> PolicyInput:
    frame = np.full((96, 128, 3), value, np.uint8)
    return PolicyInput(frames={"front": frame}, proprio=(0.0,) * 7, instruction=instruction,
                       arm=arm)


def policy(url: str, **options: object) -> OpenVLARestPolicy:
    return OpenVLARestPolicy({"url": url, "unnorm_key": "bridge_orig", **options}, name="ovla")


def test_actions_are_what_the_server_sent_per_arm() -> None:
    with fake_openvla() as (url, state):
        p = policy(url)
        try:
            outs, _ = p.act([inp("a1", 10, "pick coke can"), inp("a2", 20, "open drawer")])
            outs2, _ = p.act([inp("a1", 11), inp("a2", 21)])
        finally:
            p.close()
    by_image = {int(r["image"][0, 0, 0]): s for r, s in zip(state.requests, state.sent,
                                                             strict=True)}
    for out, value in zip([*outs, *outs2], (10, 20, 11, 21), strict=True):
        assert out.the_chunk.values.tolist() == [by_image[value]]
        assert out.the_chunk.control_hz == 5.0
    assert all(r["image"].shape == (224, 224, 3) and r["image"].dtype == np.uint8
               for r in state.requests)
    assert {r["instruction"] for r in state.requests} == {"pick coke can", "open drawer"}
    assert {r["unnorm_key"] for r in state.requests} == {"bridge_orig"}
    assert state.connections == 2  # one keep-alive connection per arm, reused


def test_a_late_reply_is_never_executed() -> None:
    """Two arms in one batch: a1's reply is late, a2's is not. a1 fails on its own as
    unreachable (its connection dropped), a2 gets its action; a1's next call gets the next
    reply, on a new connection, never the late one."""
    with fake_openvla(late_image=1) as (url, state):
        p = policy(url, timeout_s=0.5)
        try:
            with pytest.raises(PartialBatch) as e:
                p.act([inp("a1", 1), inp("a2", 2)])
            state.release_late.set()  # the server now answers the timed-out request
            assert state.late_done.wait(WAIT_S)
            outs, _ = p.act([inp("a1", 3)])
        finally:
            p.close()
    late, ok = e.value.errors
    assert isinstance(late, PolicyUnreachable) and ok is None
    assert "for arm 'a1': no reply within 0.5 s" in str(late)
    assert "a late reply is never executed" in str(late)
    assert e.value.outputs[0] is None
    assert e.value.outputs[1] is not None
    assert e.value.outputs[1].the_chunk.values.tolist() == [state.sent[0]]
    assert outs[0].the_chunk.values.tolist() == [state.sent[1]]
    assert LATE_ACTION not in state.sent
    assert state.connections == 3  # a1's late connection was dropped, never reused


@pytest.mark.parametrize(("how", "why"), [
    ("500", "HTTP 500 Internal Server Error: Internal Server Error"),
    ("error", "the server answered 'error' (deploy.py does when inference raised"),
    ("garbage", "reply is not json-numpy: json-numpy decode: not JSON"),
])
def test_server_failures_are_one_clear_line(how: str, why: str) -> None:
    with fake_openvla([how]) as (url, state):
        p = policy(url)
        try:
            with pytest.raises(PartialBatch) as e:
                p.act([inp("a1")])
            outs, _ = p.act([inp("a1")])  # the server and the client both still work
        finally:
            p.close()
    err = e.value.errors[0]
    assert isinstance(err, OpenVLARestError) and not isinstance(err, PolicyUnreachable)
    msg = str(err)
    assert msg.startswith(f"openvla_rest policy 'ovla': POST {url}/act for arm 'a1': {why}")
    assert "\n" not in msg
    assert outs[0].the_chunk.values.tolist() == [state.sent[-1]]


def test_no_server_is_one_clear_line() -> None:
    with fake_openvla() as (url, _):
        pass  # the port is closed again
    p = policy(url, timeout_s=1.0)
    try:
        with pytest.raises(PartialBatch) as e:
            p.act([inp("a1")])
    finally:
        p.close()
    err = e.value.errors[0]
    assert isinstance(err, PolicyUnreachable)
    assert f"POST {url}/act for arm 'a1': ConnectionRefusedError" in str(err)
    assert f"is the server running at {url}?" in str(err) and "\n" not in str(err)


def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    with fake_openvla(["close_after"]) as (url, state):
        p = policy(url)
        try:
            first, _ = p.act([inp("a1", 1)])
            second, _ = p.act([inp("a1", 2)])  # the kept connection is closed: a fresh one
        finally:
            p.close()
    assert [o.the_chunk.values.tolist()[0] for o in (*first, *second)] == state.sent
    assert state.connections == 2


LATE_ACTION = [0.05, 0.05, 0.05, 0.2, 0.2, 0.2, 0.0]  # never one of action_for's (dz = 0)


@pytest.mark.usefixtures("ray_local")
def test_campaign_on_sim_arms_executes_the_servers_actions(sqlite_store, tmp_path: Path) -> None:
    """Two sim arms, 4 episodes of 10 steps; the server's 12th reply is late. Every applied
    step's action is one the server sent in time, each at most once; the episode whose reply
    was late aborted with the one-line reason, cause `worker` (unreachable: not counted against
    the trial), and was re-run, so each trial has exactly one counted episode; the late
    action was never applied."""
    from orchestrator.fleet_config import SimArm
    from orchestrator.simfleet import SimFleet
    from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
    from protocols.loader import load_protocol
    from tests.integration.fleet_support import FAST_PROTOCOL, IMAGE, check_invariants

    store = sqlite_store
    with fake_openvla(["ok"] * 11 + ["late"]) as (url, state):
        config = {"kind": "openvla_rest",
                  "options": {"url": url, "unnorm_key": "bridge_orig", "control_hz": 10.0,
                              "timeout_s": 1.0}}
        with store.write() as s:
            register_policy(s, PolicySpec(name="ovla", kind="openvla_rest", config=config))
            cid = create_campaign(s, name="openvla-rest", loaded=load_protocol(FAST_PROTOCOL),
                                  policy_names=["ovla"], trials_per_task=1, seed=1).id
        arms = tuple(ArmConfig(name=n, endpoint="tcp://127.0.0.1:*", timeout_ms=1000,
                               sim=SimArm(cameras=[{"name": "front", "size": IMAGE}]))
                     for n in ("sim-1", "sim-2"))
        media = tmp_path / "media"
        with SimFleet(0, arms=arms) as fleet:
            cfg = fleet.config().model_copy(update={"lease_s": 30.0})
            runner = FleetRunner(store, cfg, media_dir=str(media))
            with started(runner):
                run_to_done(runner, deadline_s=180)
        with state.lock:
            sent = [tuple(a) for a in state.sent]
            requests = list(state.requests)
    with store.read() as s:
        rows = s.execute(select(Step.action, Episode.counted)
                         .join(Episode, Episode.id == Step.episode_id)).all()
        episodes = s.execute(select(Episode.counted, Episode.abort_reason,
                                    Episode.abort_cause)).all()
    applied = [tuple(a) for a, counted in rows if counted]
    assert applied and len(applied) == len(set(applied))  # each reply executed at most once
    assert set(applied) <= set(sent), set(applied) - set(sent)
    assert tuple(LATE_ACTION) not in {tuple(a) for a, _ in rows}
    assert sum(c for c, _, _ in episodes) == 4  # 4 tasks x 1 trial, each counted once
    aborted = [(r, cause) for c, r, cause in episodes if not c]
    assert len(aborted) == 1 and "for arm 'sim-" in aborted[0][0], aborted
    assert "no reply within 1 s" in aborted[0][0], aborted
    assert aborted[0][1] == "worker"  # unreachable, not the trial's fault: re-queued
    assert all(r["image"].shape == (224, 224, 3) for r in requests)
    check_invariants(store, media, [cid])
