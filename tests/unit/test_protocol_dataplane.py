"""The policy data plane's codec (robots/protocol_dataplane.py): round trips, and strict
refusal of unknown/missing fields, oversized messages, bad dtypes and other versions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from policies.base import ActionChunk, PolicyInput, PolicyOutput
from robots import protocol as P
from robots.types import Action


def _input(**kw: Any) -> PolicyInput:
    frames = {"front": np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3),
              "wrist": np.full((2, 2, 3), 200, np.uint8)}
    base: dict[str, Any] = {"frames": frames, "proprio": (0.1, -0.2, 0.3), "instruction": "pick",
                            "privileged": {"ee": [0.0, 0.1, 0.2], "grasped": False}, "arm": "arm-3"}
    base.update(kw)
    return PolicyInput(**base)


def _bytes(parts: list[Any]) -> list[bytes]:
    return [p if isinstance(p, bytes) else memoryview(p).tobytes() for p in parts]


def _request(rid: int = 7, **kw: Any) -> list[bytes]:
    return _bytes(P.encode_policy_request(rid, _input(**kw)))


def _reply(out: PolicyOutput | None = None) -> list[bytes]:
    out = out or PolicyOutput(chunk=ActionChunk(np.arange(12.0).reshape(4, 3), 15.0,
                                                terminate_at=2), text="t", tokens=(1, 2))
    return _bytes(P.encode_policy_reply(9, P.PolicyReply(out, 0.02, 3, 0.001)))


def _with(parts: list[bytes], **changes: Any) -> list[bytes]:
    h = P.unpack_header(parts[0])
    for k, v in changes.items():
        if v is _DROP:
            del h[k]
        else:
            h[k] = v
    return [P.pack_header(h), *parts[1:]]


_DROP = object()


# --- round trips -----------------------------------------------------------------------------


def test_request_round_trip_keeps_every_field_and_frames_are_read_only() -> None:
    msg = P.decode_policy_message(_request())
    assert isinstance(msg, P.PolicyRequest) and msg.id == 7
    inp, want = msg.input, _input()
    assert (inp.arm, inp.instruction, inp.proprio, inp.privileged) == (
        want.arm, want.instruction, want.proprio, want.privileged)
    assert inp.frames.keys() == want.frames.keys()
    for cam, img in want.frames.items():
        assert np.array_equal(inp.frames[cam], img) and not inp.frames[cam].flags.writeable


def test_request_without_privileged_or_frames_round_trips() -> None:
    msg = P.decode_policy_message(_request(frames={}, privileged=None, proprio=()))
    assert isinstance(msg, P.PolicyRequest)
    assert msg.input.frames == {} and msg.input.privileged is None and msg.input.proprio == ()


def test_end_round_trips() -> None:
    assert P.decode_policy_message([P.encode_policy_end("arm-9")]) == P.PolicyEnd("arm-9")


def test_chunk_reply_round_trips_with_its_shape_rate_and_terminate_row() -> None:
    rid, r = P.decode_policy_reply(_reply())
    assert rid == 9 and isinstance(r, P.PolicyReply)
    assert (r.inference_s, r.batch_size, r.queued_s) == (0.02, 3, 0.001)
    c = r.output.the_chunk
    assert c == ActionChunk(np.arange(12.0).reshape(4, 3), 15.0, terminate_at=2)
    assert r.output.action is None and r.output.text == "t" and r.output.tokens == (1, 2)


def test_rt2_reply_keeps_its_action_nan_gripper_included() -> None:
    a = Action(terminate=True, dx=0.01, dyaw=-0.2, gripper=float("nan"))
    _, r = P.decode_policy_reply(_reply(PolicyOutput(a, chunk_hz=3.0, hold_reason="why")))
    assert isinstance(r, P.PolicyReply) and r.output.action is not None
    back = r.output.action
    assert back.terminate and back.dx == 0.01 and back.dyaw == -0.2 and np.isnan(back.gripper)
    assert r.output.the_chunk.values.shape == (1, 7) and r.output.the_chunk.terminate_at == 0
    assert r.output.hold_reason == "why" and r.output.the_chunk.control_hz == 3.0


def test_failure_round_trips_with_or_without_an_id() -> None:
    assert P.decode_policy_reply([P.encode_policy_failure(4, "boom")]) == (4, P.PolicyFailure("boom"))
    rid, f = P.decode_policy_reply([P.encode_policy_failure(None, "x" * 5000)])
    assert rid is None and isinstance(f, P.PolicyFailure) and len(f.error) == 1000


def test_rt2_action_helpers_are_inverse() -> None:
    a = Action(terminate=True, dx=0.1, dz=-0.2, gripper=0.5)
    assert P.action_from_rt2_wire(P.action_to_rt2_wire(a)) == a
    assert P.action_of(P.action_values(a), terminate=True) == a
    with pytest.raises(ValueError, match="7 continuous values"):
        P.action_of([0.0] * 6)


# --- strict refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("change, match", [
    ({"extra": 1}, r"unknown fields \['extra'\]"),
    ({"proprio": [0.0]}, r"unknown fields \['proprio'\]"),
    ({"instruction": _DROP}, "missing field 'instruction'"),
    ({"state": ["a"]}, "'state' must be a number"),
    ({"state": [0.0] * (P.MAX_STATE_DIM + 1)}, "'state' must be a list of at most"),
    ({"privileged": [1]}, "'privileged' must be a map"),
    ({"id": -1}, "'id' must be a non-negative"),
    ({"arm": "a" * (P.MAX_STR + 1)}, "'arm' must be a string of at most"),
])
def test_request_refuses_bad_fields(change: dict, match: str) -> None:
    with pytest.raises(P.ProtocolError, match=match) as ei:
        P.decode_policy_message(_with(_request(), **change))
    assert ei.value.code == P.ErrorCode.BAD_MESSAGE


def test_request_error_carries_the_request_id_when_readable() -> None:
    with pytest.raises(P.ProtocolError) as ei:
        P.decode_policy_message(_with(_request(rid=31), extra=1))
    assert ei.value.request_id == 31


def test_other_versions_and_types_are_refused_with_their_codes() -> None:
    for v in (1, 3, 0, "2", True, _DROP):
        with pytest.raises(P.ProtocolError, match="data plane version") as ei:
            P.decode_policy_message(_with(_request(), v=v))
        assert ei.value.code == P.ErrorCode.UNSUPPORTED_VERSION
        with pytest.raises(P.ProtocolError, match="data plane version"):
            P.decode_policy_reply(_with(_reply(), v=v))
    with pytest.raises(P.ProtocolError, match="unknown type") as ei:
        P.decode_policy_message(_with(_request(), t="observe"))
    assert ei.value.code == P.ErrorCode.UNKNOWN_TYPE


def test_request_parts_must_match_its_frames() -> None:
    parts = _request()
    with pytest.raises(P.ProtocolError, match="describes 2 frames"):
        P.decode_policy_message(parts[:-1])
    with pytest.raises(P.ProtocolError, match="describes 2 frames"):
        P.decode_policy_message([*parts, b"x"])
    with pytest.raises(P.ProtocolError, match="bytes, shape needs"):
        P.decode_policy_message([*parts[:-1], parts[-1][:-1]])
    with pytest.raises(P.ProtocolError, match="empty message"):
        P.decode_policy_message([])


def test_frame_with_a_bad_dtype_is_refused() -> None:
    h = P.unpack_header(_request()[0])
    h["frames"][0]["dtype"] = "int64"
    with pytest.raises(P.ProtocolError, match="dtype 'int64' not supported"):
        P.decode_policy_message([P.pack_header(h), *_request()[1:]])
    with pytest.raises(P.ProtocolError, match="cannot be sent"):
        P.encode_policy_request(1, _input(frames={"f": np.zeros((2, 2), np.int64)}))


def test_oversized_requests_are_refused() -> None:
    many = {f"c{i}": np.zeros((1, 1, 3), np.uint8) for i in range(P.MAX_FRAMES + 1)}
    with pytest.raises(P.ProtocolError, match="limit") as ei:
        P.encode_policy_request(1, _input(frames=many))
    assert ei.value.code == P.ErrorCode.TOO_LARGE
    big = _with(_request(), privileged={"blob": "x" * P.MAX_HEADER_BYTES})
    with pytest.raises(P.ProtocolError, match="header is") as ei:
        P.decode_policy_message(big)
    assert ei.value.code == P.ErrorCode.TOO_LARGE


@pytest.mark.parametrize("change, match", [
    ({"extra": 1}, r"unknown fields \['extra'\]"),
    ({"t": "act"}, r"unknown fields \['t'\]"),
    ({"batch": _DROP}, "missing field 'batch'"),
    ({"action": [0.0] * 7}, "'action' must be a list of 8"),
    ({"inference_s": -1.0}, "'inference_s' must be finite seconds"),
    ({"tokens": ["a"]}, "'tokens' must be a 64-bit int"),
    ({"text": 3}, "'text' must be a string"),
])
def test_reply_refuses_bad_fields(change: dict, match: str) -> None:
    with pytest.raises(P.ProtocolError, match=match):
        P.decode_policy_reply(_with(_reply(), **change))


@pytest.mark.parametrize("chunk, match", [
    ({"dtype": "float32"}, "dtype 'float32' not supported"),
    ({"dtype": _DROP}, "missing field 'dtype'"),
    ({"extra": 1}, r"unknown fields \['extra'\]"),
    ({"shape": [P.MAX_CHUNK_ROWS + 1, 3]}, "is not \\[H, D\\]"),
    ({"shape": [4, P.MAX_ACTION_DIM + 1]}, "is not \\[H, D\\]"),
    ({"shape": [4, 3, 1]}, "is not \\[H, D\\]"),
    ({"shape": [2, 3]}, "has 96 bytes; shape \\[2, 3\\] needs 48"),
    ({"hz": 0}, "'hz' must be a finite number > 0"),
    ({"hz": float("inf")}, "'hz' must be a finite number > 0"),
    ({"terminate_at": 4}, "terminate_at 4 outside 0..3"),
    ({"terminate_at": -1}, "'terminate_at' must be a non-negative"),
])
def test_reply_chunk_is_strict(chunk: dict, match: str) -> None:
    parts = _reply()
    h = P.unpack_header(parts[0])
    for k, v in chunk.items():
        if v is _DROP:
            del h["chunk"][k]
        else:
            h["chunk"][k] = v
    with pytest.raises(P.ProtocolError, match=match):
        P.decode_policy_reply([P.pack_header(h), parts[1]])


def test_reply_parts_are_exact() -> None:
    parts = _reply()
    with pytest.raises(P.ProtocolError, match="expected 2"):
        P.decode_policy_reply([*parts, b""])
    with pytest.raises(P.ProtocolError, match="expected 1"):
        P.decode_policy_reply([P.encode_policy_failure(1, "x"), b""])


def test_an_output_the_wire_cannot_carry_is_refused_at_encoding() -> None:
    wide = PolicyOutput(chunk=ActionChunk(np.zeros((2, P.MAX_ACTION_DIM + 1)), 10.0))
    with pytest.raises(P.ProtocolError, match="is not \\[H, D\\]"):
        P.encode_policy_reply(1, P.PolicyReply(wide, 0.0, 1, 0.0))
    chatty = PolicyOutput(Action(), text="x" * (64 * 1024))
    with pytest.raises(P.ProtocolError, match="'text' must be a string of at most"):
        P.encode_policy_reply(1, P.PolicyReply(chatty, 0.0, 1, 0.0))


def test_no_pickle_or_msgpack_extension_is_accepted() -> None:
    import msgpack

    ext = msgpack.packb({"v": 1, "t": "end", "arm": msgpack.ExtType(1, b"x")})
    with pytest.raises(P.ProtocolError, match="extension type"):
        P.decode_policy_message([ext])
    with pytest.raises(P.ProtocolError, match="not valid msgpack"):
        P.decode_policy_message([b"\x80\x04\x95"])  # a pickle protocol-4 preamble


def test_every_data_plane_name_is_re_exported_and_the_robot_side_never_imports_policies() -> None:
    import subprocess
    import sys
    from pathlib import Path

    from robots import protocol_dataplane

    for name in P._DATAPLANE_NAMES:
        assert getattr(P, name) is getattr(protocol_dataplane, name)
    script = ("import sys, robots.bridge, robots.cli, robots.client, robots.protocol\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'policies'))")
    out = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
