"""robots.protocol: every message round-trips; malformed input raises ProtocolError only."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots import protocol as P
from robots.drivers.base import CameraSpec, Capabilities
from robots.types import ActionSpace, Observation, SceneSpec, Workspace

E = P.ErrorCode
SCENE = SceneSpec("pick", "coke_can", ("coke_can", "apple"), distractors=("sponge",), seed=7).to_dict()

REQUESTS = [
    P.Request("hello", 1, {"client": "orchestrator-1"}),
    P.Request("reset", 2, {"scene": SCENE, "episode_id": "ep-1"}),
    P.Request("observe", 3),
    P.Request("act", 4, {"action": [0.0, 0.01, -0.02, 0.0, 0.1, 0.0, 0.0, 1.0], "seq": 17,
                         "sent_wall_ns": 1_700_000_000_000_000_000, "episode_id": "ep-1"}),
    P.Request("hold", 5),
    P.Request("estop", 6, {"reason": "operator"}),
    P.Request("rearm", 7),
    P.Request("status", 8),
    P.Request("heartbeat", 9),
    P.Request("privileged", 10),
    P.Request("end_episode", 11, {"episode_id": "ep-1"}),
]


def test_every_request_type_is_covered():
    assert {r.type for r in REQUESTS} == set(P.REQUESTS)


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: r.type)
def test_request_round_trip(req):
    parts = P.encode_request(req)
    assert len(parts) == 1 and isinstance(parts[0], bytes)
    assert P.decode_request(parts) == req
    assert P.decode_request([memoryview(parts[0])]) == req


def _summary():
    return P.SafetySummary(False, True, True, {"requests": 3, "watchdog_holds": 1})


def _reply(rtype, fields, buffers=(), ok=True, rid=42):
    return P.Reply(rtype, rid, ok, "a" * 32, P.ServerTiming(10, 20, 1_700_000_000_000_000_000),
                   _summary(), fields, tuple(buffers))


CAPS = Capabilities("sim", (CameraSpec("front", 48, 64), CameraSpec("wrist", 32, 32, "jpeg")),
                    ActionSpace(control_hz=10.0), Workspace((-0.3, -0.3, 0.0), (0.3, 0.3, 0.5)),
                    needs_operator_reset=True, privileged_state=True, tags=("drawer",))


def test_capabilities_round_trip():
    assert P.capabilities_from_wire(P.capabilities_to_wire(CAPS)) == CAPS
    wire = P.capabilities_to_wire(CAPS)
    del wire["workspace"]
    with pytest.raises(P.ProtocolError):
        P.capabilities_from_wire(wire)


def _frames():
    rng = np.random.default_rng(1)
    return {"front": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
            "wrist": np.full((32, 32, 3), (200, 30, 30), dtype=np.uint8)}


def _obs(frames):
    return Observation(5, 123, 1_700_000_000_000_000_001, frames, (0.1, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0),
                       "ep-1", True, {"contacts": 2, "np": np.float32(1.5)})


@pytest.mark.parametrize("rtype", ["observe", "act"])
def test_observation_reply_round_trip_raw_and_jpeg(rtype):
    frames = _frames()
    descs, bufs = P.pack_frames(frames, {"wrist": "jpeg"}, first_part=1)
    fields = {"obs": P.observation_to_wire(_obs(frames)), "frames": descs}
    if rtype == "act":
        fields |= {"applied": [0.0, 0.05, 0, 0, 0, 0, 0, 1.0], "clipped": [True] + [False] * 6}
    parts = P.encode_reply(_reply(rtype, fields, bufs))
    parts = [bytes(memoryview(p).cast("B")) for p in parts]  # as received off the wire
    back = P.decode_reply(parts)
    assert back.type == rtype and back.id == 42 and back.ok and back.summary == _summary()
    assert back.timing == P.ServerTiming(10, 20, 1_700_000_000_000_000_000)
    got = P.unpack_frames(back.fields["frames"], (None, *back.buffers))
    obs = P.observation_from_wire(back.fields["obs"], got)
    assert obs.seq == 5 and obs.proprio[0] == 0.1 and obs.sim_success is True and obs.info["np"] == 1.5
    np.testing.assert_array_equal(got["front"], frames["front"])
    assert not got["front"].flags.writeable
    assert got["wrist"].shape == (32, 32, 3)
    assert np.abs(got["wrist"].astype(int) - frames["wrist"]).max() <= 8  # JPEG keeps RGB order
    if rtype == "act":
        assert back.fields["clipped"][0] is True


@pytest.mark.parametrize("rtype,fields", [
    ("hello", {"session_id": "s", "versions": [1], "capabilities": P.capabilities_to_wire(CAPS),
               "watchdog_ms": 500.0, "max_command_age_ms": 250.0, "stream": {"endpoint": None, "fps": 10.0}}),
    ("reset", {"ready": False, "instructions": "put the can down", "episode_id": "ep"}),
    ("status", {"status": {"estopped": False, "counters": {"requests": 1}}}),
    ("privileged", {"state": {"objects": [{"name": "can", "pos": [0.1, 0.2, 0.0]}]}}),
    ("hold", {}), ("estop", {}), ("rearm", {}), ("heartbeat", {}), ("end_episode", {}),
    ("error", {"code": "NON_FINITE", "message": "nan", "request_type": "act"}),
])
def test_other_replies_round_trip(rtype, fields):
    r = _reply(rtype, fields, ok=rtype != "error")
    assert P.decode_reply(P.encode_reply(r)) == r


def test_error_reply_without_request_id():
    r = _reply("error", {"code": "BAD_MESSAGE", "message": "x", "request_type": None}, ok=False, rid=None)
    assert P.decode_reply(P.encode_reply(r)).id is None


def test_stream_message_round_trip():
    img = _frames()["front"]
    descs, bufs = P.pack_frames({"front": img})
    msg = P.pack_stream("front", {"v": 1, "seq": 3, "wall_ns": 9, "frame": descs[0]}, bufs[0])
    assert msg.startswith(P.stream_topic("front"))
    cam, header, back = P.unpack_stream(msg)
    assert cam == "front" and header["seq"] == 3
    np.testing.assert_array_equal(back, img)
    with pytest.raises(P.ProtocolError):
        P.unpack_stream(msg[:20])


def _raw(h: dict) -> list[bytes]:
    return [msgpack.packb(h)]


def _code(parts) -> P.ErrorCode:
    with pytest.raises(P.ProtocolError) as ei:
        P.decode_request(parts)
    return ei.value.code


def test_malformed_requests():
    good = {"v": 1, "type": "act", "id": 3, "action": [0.0] * 8, "seq": 1, "sent_wall_ns": 0, "episode_id": ""}
    assert _code([]) == E.BAD_MESSAGE
    assert _code([b""]) == E.BAD_MESSAGE
    assert _code([b"\xc1"]) == E.BAD_MESSAGE  # never-used msgpack byte
    assert _code([msgpack.packb([1, 2])]) == E.BAD_MESSAGE
    assert _code([msgpack.packb(good)[:-3]]) == E.BAD_MESSAGE  # truncated
    assert _code([msgpack.packb(good) + b"\x00"]) == E.BAD_MESSAGE  # trailing bytes
    assert _code([msgpack.packb({1: 2})]) == E.BAD_MESSAGE
    assert _code(_raw(good | {"v": 2})) == E.UNSUPPORTED_VERSION
    assert _code(_raw(good | {"type": "fly"})) == E.UNKNOWN_TYPE
    assert _code(_raw(good | {"id": -1})) == E.BAD_MESSAGE
    assert _code(_raw(good | {"action": [0.0] * 7})) == E.BAD_MESSAGE
    assert _code(_raw(good | {"action": ["0"] * 8})) == E.BAD_MESSAGE
    assert _code(_raw(good | {"seq": True})) == E.BAD_MESSAGE  # bools are not ints
    assert _code(_raw(good | {"seq": 1.0})) == E.BAD_MESSAGE
    assert _code(_raw(good | {"extra": 1})) == E.BAD_MESSAGE
    assert _code(_raw({k: v for k, v in good.items() if k != "seq"})) == E.BAD_MESSAGE
    assert _code(_raw(good) + [b"frame"]) == E.BAD_MESSAGE  # requests carry no buffers
    assert _code([msgpack.packb(msgpack.ExtType(5, b"x"))]) == E.BAD_MESSAGE
    assert _code([msgpack.packb({"v": 1, "type": "hello", "id": 1, "client": "x" * 70_000})]) == E.TOO_LARGE
    nested = b"\x91" * 5000 + b"\x00"  # deeply nested arrays
    assert _code([nested]) == E.BAD_MESSAGE


def test_error_keeps_request_id_when_readable():
    with pytest.raises(P.ProtocolError) as ei:
        P.decode_request(_raw({"v": 1, "type": "act", "id": 77}))
    assert ei.value.request_id == 77


def test_nan_passes_decoding_for_safety_to_refuse():
    req = P.decode_request(_raw({"v": 1, "type": "act", "id": 1, "action": [float("nan")] * 8, "seq": 1,
                                 "sent_wall_ns": 0, "episode_id": ""}))
    assert req.fields["action"][0] != req.fields["action"][0]


def test_bad_frame_descriptors():
    img = np.zeros((4, 4, 3), np.uint8)
    good = {"camera": "c", "shape": [4, 4, 3], "dtype": "uint8", "encoding": "raw", "part": 1}
    P.unpack_frames([good], [None, img.tobytes()])
    for bad in [good | {"part": 2}, good | {"shape": [4, 4, 4]}, good | {"dtype": "object"},
                good | {"encoding": "png"}, good | {"shape": "4x4"}]:
        with pytest.raises(P.ProtocolError):
            P.unpack_frames([bad], [None, img.tobytes()])
    with pytest.raises(P.ProtocolError):
        P.unpack_frames([good | {"encoding": "jpeg"}], [None, b"not a jpeg"])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_protocol_error(data):
    try:
        P.decode_request([data])
    except P.ProtocolError:
        pass


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(P.REQUESTS)), st.dictionaries(st.sampled_from(["v", "type", "id", "action", "seq",
       "sent_wall_ns", "episode_id", "scene", "client", "reason"]), json_like, max_size=8))
def test_wrongly_typed_fields_only_raise_protocol_error(rtype, fields):
    try:
        P.decode_request([msgpack.packb({"v": 1, "type": rtype, "id": 1} | fields)])
    except P.ProtocolError:
        pass
