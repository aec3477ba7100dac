"""The lab's robot side checked against the page with a raw ZeroMQ client (no evalfleet code):
what docs/protocol.md says a bridge answers, it answers. Keeps the campaign tests honest: a
failure there is evalfleet's or the page's, not a broken robot side."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
import zmq

from tests.labside.lab_bridge import LabBridge

pytestmark = pytest.mark.timeout(30)


class Raw:
    """A bare DEALER (or REQ) client speaking the page's framing."""

    def __init__(self, endpoint: str, kind: int = zmq.DEALER) -> None:
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 5000)
        self.sock.connect(endpoint)
        self.next_id = 0

    def call(self, type_: str, v: int = 2, **fields: Any) -> tuple[dict[str, Any], list[bytes]]:
        self.next_id += 1
        self.sock.send(msgpack.packb({"v": v, "type": type_, "id": self.next_id, **fields}))
        parts = self.sock.recv_multipart()
        return msgpack.unpackb(parts[0]), parts[1:]

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.fixture
def raw(lab: Callable[..., LabBridge]) -> Iterator[Callable[..., tuple[LabBridge, Raw]]]:
    clients: list[Raw] = []

    def make(kind: int = zmq.DEALER, **cfg: Any) -> tuple[LabBridge, Raw]:
        b = lab(**cfg)
        clients.append(Raw(b.endpoint, kind))
        return b, clients[-1]

    yield make
    for c in clients:
        c.close()


SCENE = {"skill": "pick", "target": "apple", "some_future_key": [1, 2]}


def test_v2_episode_on_the_wire(raw) -> None:  # type: ignore[no-untyped-def]
    _, c = raw(versions=(1, 2), cameras=(("front", "external"), ("wrist", "wrist")),
               blind_until_reset=True)
    h, _ = c.call("observe")
    assert (h["ok"], h["code"]) == (False, "NOT_READY")  # §4: nothing to show before a reset
    h, _ = c.call("hello", client="raw")
    assert h["ok"] and h["versions"] == [1, 2] and h["capabilities"]["action"]["kind"] == \
        "ee_delta"
    h, _ = c.call("reset", scene=SCENE, episode_id="ep-1")  # §5.4: unknown keys ignored
    assert h["ok"] and h["ready"] is True, h
    h, bufs = c.call("act", action=[0.01, 0, 0, 0, 0, 0, 1.0], terminate=False, seq=0,
                     sent_wall_ns=0, episode_id="ep-1")
    assert (h["ok"], h["code"]) == (False, "STALE_COMMAND"), h  # dated 1970: too old
    h, bufs = c.call("act", action=[1e300, 0, 0, 0, 0, 0, 1.0], terminate=False, seq=1,
                     sent_wall_ns=time.time_ns(), episode_id="ep-1")
    assert h["ok"] and h["applied"][0] == 0.05 and h["clipped"][0] is True, h  # §8.1 step 6
    assert [f["camera"] for f in h["frames"]] == ["front", "wrist"] and len(bufs) == 2
    assert len(h["obs"]["state"]) == 7 and "proprio" not in h["obs"]
    h, _ = c.call("act", action=[0.0] * 8, terminate=False, seq=2, sent_wall_ns=time.time_ns(),
                  episode_id="ep-1")
    assert (h["ok"], h["code"]) == (False, "BAD_MESSAGE") and "ee_delta[7]" in h["message"]


def test_refusals_on_the_wire(raw) -> None:  # type: ignore[no-untyped-def]
    _, c = raw(zmq.REQ, versions=(2,), space="joint_position", refuse_reset="no gripper")
    h, _ = c.call("hello", v=1, client="old")  # §3: v1 cannot express a gantry
    assert (h["code"], h["versions"], h["v"]) == ("UNSUPPORTED_VERSION", [2], 2), h
    h, _ = c.call("hello", client="x" * 4097)  # §2: strings at most 4096 characters
    assert (h["code"], h["id"]) == ("BAD_MESSAGE", c.next_id), h
    h, _ = c.call("heartbeat", extra=1)  # §2.1: unknown request fields refused
    assert h["code"] == "BAD_MESSAGE", h
    h, _ = c.call("reset", scene=SCENE, episode_id="ep-1")  # §8.8
    assert h["code"] == "DRIVER_ERROR" and h["message"].endswith("no gripper (arm held)"), h
    h, _ = c.call("status")
    assert h["status"]["counters"]["driver_errors"] == 1
    assert h["st"]["counters"]["refused_total"] == 4, h["st"]
