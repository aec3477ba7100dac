"""robots.protocol: every message round-trips; malformed input raises ProtocolError only."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots import protocol as P
from robots.drivers.base import CameraSpec, Capabilities
from robots.spaces import ActionSpec, CameraRole, GripperConvention, SpaceKind, StateSpec
from robots.types import ActionSpace, Observation, SceneSpec, Workspace

E = P.ErrorCode
SCENE = SceneSpec("pick", "coke_can", ("coke_can", "apple"), distractors=("sponge",), seed=7).to_dict()

_COMMON = [
    ("hello", 1, {"client": "orchestrator-1"}),
    ("reset", 2, {"scene": SCENE, "episode_id": "ep-1"}),
    ("observe", 3, {}),
    ("hold", 5, {}),
    ("estop", 6, {"reason": "operator"}),
    ("rearm", 7, {}),
    ("status", 8, {}),
    ("heartbeat", 9, {}),
    ("privileged", 10, {}),
    ("end_episode", 11, {"episode_id": "ep-1"}),
]
REQUESTS = [P.Request(t, i, f, v) for v in (1, 2) for t, i, f in _COMMON] + [
    P.Request("act", 4, {"action": [0.0, 0.01, -0.02, 0.0, 0.1, 0.0, 0.0, 1.0], "seq": 17,
                         "sent_wall_ns": 1_700_000_000_000_000_000, "episode_id": "ep-1"}, 1),
    P.Request("act", 4, {"action": [0.5, -1.0, 3], "terminate": True, "seq": 17,
                         "sent_wall_ns": -5, "episode_id": "ep-1"}, 2),
]


def test_every_request_type_is_covered():
    for v in (1, 2):
        assert {r.type for r in REQUESTS if r.v == v} == set(P.REQUESTS_BY_VERSION[v]) == set(P.REQUESTS)


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: f"{r.type}-v{r.v}")
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
    assert _code(_raw(good | {"v": 3})) == E.UNSUPPORTED_VERSION
    assert _code(_raw(good | {"v": 0})) == E.UNSUPPORTED_VERSION
    assert _code(_raw(good | {"v": 2})) == E.BAD_MESSAGE  # v1 fields in a v2 act: no terminate
    assert _code(_raw(good | {"v": "1"})) == E.BAD_MESSAGE
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


# --- version 2 ----------------------------------------------------------------------------

JOINT = ActionSpec(SpaceKind.JOINT_POSITION, ("j1", "j2", "gripper"), ("rad", "rad", "1"), (-1.0, -2.0, 0.0),
                   (1.0, 2.0, 1.0), GripperConvention.CLOSED_IS_1, 15.0)
JOINT_STATE = StateSpec(("j1", "j2", "gripper", "ee_x"), ("rad", "rad", "1", "m"))
JOINT_CAPS = Capabilities("sim", (CameraSpec("main", 48, 64), CameraSpec("wrist", 32, 32, "jpeg", CameraRole.WRIST)),
                          ActionSpace(control_hz=15.0), Workspace(), tags=("drawer",), action=JOINT,
                          state=JOINT_STATE)
V2_ACT = {"v": 2, "type": "act", "id": 3, "action": [0.0, 0.5, 1.0], "terminate": False, "seq": 1,
          "sent_wall_ns": 0, "episode_id": ""}


def test_v1_capabilities_map_is_unchanged():
    assert set(P.capabilities_to_wire(CAPS, 1)) == {"driver", "cameras", "action_space", "workspace",
                                                    "needs_operator_reset", "privileged_state", "tags"}
    assert set(P.capabilities_to_wire(CAPS, 1)["cameras"][0]) == {"name", "height", "width", "encoding"}


def test_v2_capabilities_round_trip_and_rt2_arms_read_the_same_in_both_versions():
    assert P.capabilities_from_wire(P.capabilities_to_wire(JOINT_CAPS, 2), 2) == JOINT_CAPS
    wire = P.capabilities_to_wire(CAPS, 2)
    assert wire["action"]["kind"] == "ee_delta" and wire["action"]["names"][0] == "dx"
    assert wire["cameras"][1]["role"] == "external" and wire["state"]["names"][0] == "ee_x"
    assert P.capabilities_from_wire(wire, 2) == CAPS == P.capabilities_from_wire(P.capabilities_to_wire(CAPS, 1), 1)
    assert P.capabilities_from_wire(wire, 2).control_hz == 10.0
    assert P.capabilities_from_wire(P.capabilities_to_wire(JOINT_CAPS, 2), 2).control_hz == 15.0


def test_v1_cannot_express_a_joint_arm():
    assert P.v1_compatible(CAPS) and not P.v1_compatible(JOINT_CAPS)
    with pytest.raises(P.ProtocolError) as ei:
        P.capabilities_to_wire(JOINT_CAPS, 1)
    assert ei.value.code == E.UNSUPPORTED_VERSION and "joint_position[3]" in str(ei.value)


@pytest.mark.parametrize("path,value", [
    (("action", "kind"), "joint_torque"), (("action", "gripper"), "half"), (("action", "low"), [0.0, 0.0]),
    (("action", "low"), [2.0, 3.0, 2.0]), (("action", "control_hz"), 0.0), (("action", "names"), ["a", "a", "b"]),
    (("state", "units"), ["rad"]), (("cameras",), [{"name": "c", "role": "belly", "height": 1, "width": 1,
                                                    "encoding": "raw"}]),
])
def test_bad_v2_capabilities_refused(path, value):
    wire = P.capabilities_to_wire(JOINT_CAPS, 2)
    d = wire
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    with pytest.raises(P.ProtocolError, match="bad capabilities"):
        P.capabilities_from_wire(wire, 2)


def test_v2_act_length_checked_against_the_declared_space():
    assert P.decode_request(_raw(V2_ACT), JOINT).fields["action"] == [0.0, 0.5, 1.0]
    for n in (0, 2, 4, 8):
        with pytest.raises(P.ProtocolError, match="arm declares|at least") as ei:
            P.decode_request(_raw(V2_ACT | {"action": [0.0] * n}), JOINT if n else None)
        assert ei.value.code == E.BAD_MESSAGE
    assert _code(_raw(V2_ACT | {"terminate": 0})) == E.BAD_MESSAGE  # ints are not bools
    assert _code(_raw(V2_ACT | {"action": [0.0] * 33})) == E.BAD_MESSAGE
    assert _code(_raw({k: v for k, v in V2_ACT.items() if k != "terminate"})) == E.BAD_MESSAGE


def test_act_fields_both_versions():
    v1 = P.act_request_fields(1, (0.1,) * 7, True, 3, 9, "e")
    assert v1["action"] == [1.0] + [0.1] * 7 and "terminate" not in v1
    req = P.decode_request(P.encode_request(P.Request("act", 1, v1, 1)))
    assert P.act_command(req) == ((0.1,) * 7, True)
    with pytest.raises(ValueError):
        P.act_request_fields(1, (0.1,) * 8, False, 3, 9, "e")
    v2 = P.act_request_fields(2, (0.1, 0.2, 0.3), False, 3, 9, "e")
    req = P.decode_request(P.encode_request(P.Request("act", 1, v2, 2)), JOINT)
    assert P.act_command(req) == ((0.1, 0.2, 0.3), False)
    f = P.act_reply_fields(2, (0.1, 0.2, 0.3), True, (False, True, False))
    assert P.act_reply_from_wire(f, 2, 3) == ((0.1, 0.2, 0.3), True, (False, True, False))
    with pytest.raises(P.ProtocolError):
        P.act_reply_from_wire(f, 2, 4)
    f1 = P.act_reply_fields(1, (0.0,) * 7, False, (False,) * 7)
    assert P.act_reply_from_wire(f1, 1, 7) == ((0.0,) * 7, False, (False,) * 7)


def test_v2_observation_carries_the_named_state():
    obs = _obs({})
    wire = P.observation_to_wire(obs, 2)
    assert "state" in wire and "proprio" not in wire
    assert P.observation_from_wire(wire, {}, 2, 7).proprio == obs.proprio
    with pytest.raises(P.ProtocolError):
        P.observation_from_wire(wire, {}, 2, 4)  # not the declared number of fields
    wire1 = P.observation_to_wire(obs, 1)
    assert "proprio" in wire1 and P.observation_from_wire(wire1, {}, 1).proprio == obs.proprio


def test_scene_keys_typed_unknown_ignored():
    full = SceneSpec("pick", "can", ("can",), station_needs=("drawer",), operator_confirmed=True, seed=3)
    assert P.scene_from_wire(full.to_dict()) == full
    assert P.scene_from_wire({"skill": "pick", "target": "can", "future_key": {"x": 1}}) == SceneSpec("pick", "can", ())
    for bad in [{}, {"skill": "pick"}, {"skill": 1, "target": "a"}, {"skill": "pick", "target": "a", "seed": "x"},
                {"skill": "pick", "target": "a", "operator_confirmed": 1},
                {"skill": "pick", "target": "a", "objects": "can"}, {"skill": "x" * 4097, "target": "a"}]:
        with pytest.raises(P.ProtocolError):
            P.scene_from_wire(bad)


def test_strings_up_to_4096_chars_and_signed_sent_wall_ns():
    ok = P.decode_request(_raw({"v": 2, "type": "hello", "id": 1, "client": "é" * 4096}))
    assert len(ok.fields["client"]) == 4096
    assert _code(_raw({"v": 2, "type": "hello", "id": 1, "client": "x" * 4097})) == E.BAD_MESSAGE
    for t in (-(2**63), -1, 2**63 - 1):
        assert P.decode_request(_raw(V2_ACT | {"sent_wall_ns": t})).fields["sent_wall_ns"] == t
    assert _code(_raw(V2_ACT | {"sent_wall_ns": 2**63})) == E.BAD_MESSAGE


def test_protocol_error_pickles_with_its_code():
    import pickle

    e = pickle.loads(pickle.dumps(P.ProtocolError("bad", E.NOT_READY, 7)))
    assert (str(e), e.code, e.request_id) == ("bad", E.NOT_READY, 7)


def test_doc_byte_example_of_a_v2_act():
    h = {"v": 2, "type": "act", "id": 7, "action": [0.5, 1.0], "terminate": False, "seq": 3,
         "sent_wall_ns": 0x17979CFE362A0000, "episode_id": "ep-1"}
    b = P.pack_header(h)
    assert b.hex().startswith("88a17602a474797065a3616374a2696407a6616374696f6e92cb3fe0000000000000"
                              "cb3ff0000000000000a97465726d696e617465c2a373657103")
