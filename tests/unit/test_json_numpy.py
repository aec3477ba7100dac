"""json-numpy codec (policies/remote/json_numpy.py) and the pure parts of the `openvla_rest`
kind: the bytes OpenVLA's deploy.py clients send (golden strings produced by the json-numpy
2.1.1 package), round trips, refusals, and the /act reply parsing."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from policies.registry import PolicyConfigError, parse_policy_config, policy_io, validate_options
from policies.remote import json_numpy as jn
from policies.remote.openvla_rest import (
    OpenVLARestError,
    OpenVLARestOptions,
    act_body,
    parse_action,
    parse_size,
    prepare_image,
)
from robots.spaces import RT2_IO, CameraRole, GripperConvention, SpaceKind

# what json_numpy.dumps (2.1.1) writes for these values, byte for byte
GOLDEN_BODY = ('{"image": {"__numpy__": "AAECAwQFBgcICQoL", "dtype": "|u1", "shape": [2, 2, 3]}, '
               '"instruction": "pick coke can", "unnorm_key": "bridge_orig"}')
GOLDEN_ACTION = '{"__numpy__": "CtcjPArXo7yPwvU8zczMPc3MzL3NzEw+AACAPw==", "dtype": "<f4", "shape": [7]}'
GOLDEN_SCALAR = '{"__numpy__": "AAAAPw==", "dtype": "<f4", "shape": []}'
GOLDEN_BIG_ENDIAN_VIEW = '{"__numpy__": "AAAAAgAAAAEAAAAEAAAAAw==", "dtype": ">i4", "shape": [2, 2]}'
ACTION = np.array([0.01, -0.02, 0.03, 0.1, -0.1, 0.2, 1.0], dtype=np.float32)


def test_encodes_exactly_what_json_numpy_sends() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert act_body(image, "pick coke can", "bridge_orig") == GOLDEN_BODY.encode()
    assert jn.dumps(ACTION) == GOLDEN_ACTION
    assert jn.dumps(np.float32(0.5)) == GOLDEN_SCALAR
    # a non-contiguous view travels as its C-order bytes, in its own byte order
    assert jn.dumps(np.array([[1, 2], [3, 4]], dtype=">i4")[:, ::-1]) == GOLDEN_BIG_ENDIAN_VIEW


def test_decodes_what_json_numpy_sends() -> None:
    body = jn.loads(GOLDEN_BODY)
    assert body["instruction"] == "pick coke can" and body["unnorm_key"] == "bridge_orig"
    assert body["image"].dtype == np.uint8 and body["image"].shape == (2, 2, 3)
    assert np.array_equal(body["image"], np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
    assert np.array_equal(jn.loads(GOLDEN_ACTION), ACTION)
    scalar = jn.loads(GOLDEN_SCALAR)
    assert isinstance(scalar, np.float32) and scalar == np.float32(0.5)
    view = jn.loads(GOLDEN_BIG_ENDIAN_VIEW)
    assert view.dtype == np.dtype(">i4") and view.tolist() == [[2, 1], [4, 3]]


@pytest.mark.parametrize("value", [
    np.zeros((224, 224, 3), np.uint8), np.array([True, False]), np.arange(6, dtype=np.int64),
    np.array([], dtype=np.float64), np.float32(-2.5), np.int16(7),
    {"nested": [np.ones((2, 3), np.float16), "text", 1, None]},
])
def test_round_trip(value: object) -> None:
    back = jn.loads(jn.dumps(value).encode())
    if isinstance(value, dict):
        assert back["nested"][1:] == ["text", 1, None]
        assert np.array_equal(back["nested"][0], value["nested"][0])
    else:
        assert np.array_equal(back, value) and back.dtype == value.dtype  # type: ignore[union-attr]
        assert np.shape(back) == np.shape(value)


def test_a_float64_scalar_is_a_plain_number() -> None:
    """np.float64 is a Python float: JSON writes it as a number (json-numpy does too)."""
    assert jn.dumps({"x": np.float64(-2.5)}) == '{"x": -2.5}'


@pytest.mark.parametrize("value", [
    np.array([1 + 2j]), np.array([object()], dtype=object),
    np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]), np.array(["text"]),
    np.array(["2020-01-01"], dtype="datetime64[D]"),
])
def test_refuses_non_numeric_arrays_on_encode(value: np.ndarray) -> None:
    with pytest.raises(jn.WireFormatError, match="json-numpy encode: dtype .* is refused"):
        jn.dumps(value)


def test_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(jn.WireFormatError, match="cannot send a set"):
        jn.dumps({"x": {1, 2}})
    with pytest.raises(jn.WireFormatError, match="json-numpy encode: Out of range float"):
        jn.dumps({"x": float("nan")})


def _obj(data: bytes = b"\x00" * 4, dtype: object = "<f4", shape: object = (1,), **extra: object) -> str:
    return json.dumps({"__numpy__": base64.b64encode(data).decode(), "dtype": dtype,
                       "shape": shape, **extra})


@pytest.mark.parametrize(("text", "why"), [
    (_obj(dtype="<c8", data=b"\x00" * 8), "dtype '<c8' is refused"),
    (_obj(dtype="|O"), "dtype '|O' is refused"),
    (_obj(dtype=[["a", "<f4"]]), "structured dtype"),
    (_obj(dtype="<q9"), "unknown dtype"),
    (_obj(shape=[2]), "4 data bytes for dtype <f4 shape (2,) (expected 8)"),
    (_obj(shape=[-1]), "shape must be a list"),
    (_obj(shape="1"), "shape must be a list"),
    (_obj(shape=[True]), "shape must be a list"),
    (_obj(extra=1), "an array object has keys"),
    ('{"__numpy__": "@@@@", "dtype": "<f4", "shape": [1]}', "not valid base64"),
    ('{"__numpy__": 5, "dtype": "<f4", "shape": [1]}', "must be strings"),
    ("{not json", "not JSON"),
    (b"\xff\xfe{", "not JSON"),
    ('[NaN]', "NaN is not JSON"),
])
def test_refuses_malformed_input_in_one_line(text: str | bytes, why: str) -> None:
    with pytest.raises(jn.WireFormatError) as e:
        jn.loads(text)
    assert why in str(e.value) and "\n" not in str(e.value)


def test_size_limit() -> None:
    with pytest.raises(jn.WireFormatError, match="exceed the limit of 10"):
        jn.loads(GOLDEN_ACTION, max_bytes=10)


# --- openvla_rest: the pure parts --------------------------------------------------------------

def test_parse_action_reads_deploy_py_replies() -> None:
    got = parse_action(200, "OK", GOLDEN_ACTION.encode(), max_bytes=1 << 20)
    assert got.dtype == np.float64 and np.array_equal(got, ACTION.astype(np.float64))
    as_list = json.dumps([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]).encode()
    assert parse_action(200, "OK", as_list, max_bytes=1 << 20).tolist()[-1] == 1.0
    wrapped = ('{"action": ' + GOLDEN_ACTION + "}").encode()
    assert np.array_equal(parse_action(200, "OK", wrapped, max_bytes=1 << 20), got)


@pytest.mark.parametrize(("status", "body", "why"), [
    (500, b"Internal Server Error", "HTTP 500 Internal: Internal Server Error"),
    (200, b'"error"', "the server answered 'error' (deploy.py does when inference raised"),
    (200, b"<html>", "reply is not json-numpy"),
    (200, b"[1, 2, 3]", "reply has shape (3,); an OpenVLA action has 7 values"),
    (200, b'{"x": 1}', "reply is not an array of numbers"),
    (200, b'[1, 2, 3, 4, 5, 6, "open"]', "reply is not an array of numbers"),
    (200, jn.dumps(np.array([0, 0, 0, 0, 0, 0, np.inf])).encode(), "non-finite"),
])
def test_parse_action_refuses_what_is_not_an_action(status: int, body: bytes, why: str) -> None:
    with pytest.raises(OpenVLARestError) as e:
        parse_action(status, "Internal", body, max_bytes=1 << 20)
    assert why in str(e.value) and "\n" not in str(e.value)


def test_prepare_image_resizes_to_the_declared_size() -> None:
    frame = np.full((96, 128, 3), 200, np.uint8)
    out = prepare_image(frame, (224, 224))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8 and int(out[10, 10, 0]) == 200
    assert prepare_image(frame, None) is not None and prepare_image(frame, None).shape == (96, 128, 3)
    assert prepare_image(np.zeros((480, 640, 3), np.uint8), (224, 224)).shape == (224, 224, 3)
    assert parse_size("256x320") == (256, 320)
    with pytest.raises(ValueError, match="expected HxW"):
        parse_size("224")


def test_options_and_declared_io() -> None:
    cfg = {"name": "ovla", "kind": "openvla_rest",
           "options": {"url": "http://gpu-host:8000/", "unnorm_key": "bridge_orig"}}
    opts = validate_options(parse_policy_config(cfg))
    assert isinstance(opts, OpenVLARestOptions) and opts.url == "http://gpu-host:8000"
    assert opts.image_size == "224x224" and opts.timeout_s == 2.0
    io = policy_io(cfg)
    assert io == RT2_IO  # ee_delta[7], gripper 0 close .. 1 open, one external camera
    assert (io.emits, io.action_dim, io.gripper, io.cameras) == (
        SpaceKind.EE_DELTA, 7, GripperConvention.OPEN_IS_1, (CameraRole.EXTERNAL,))
    named = policy_io({**cfg, "options": {**cfg["options"], "camera": "front"}})
    assert named.camera_names == ("front",)
    with pytest.raises(PolicyConfigError, match="unnorm_key: Field required"):
        validate_options(parse_policy_config({**cfg, "options": {"url": "http://h:1"}}))
    with pytest.raises(PolicyConfigError, match="expected http://host:port"):
        validate_options(parse_policy_config(
            {**cfg, "options": {"url": "ws://h:1", "unnorm_key": "k"}}))
    with pytest.raises(PolicyConfigError, match="image_size '224': expected HxW"):
        validate_options(parse_policy_config(
            {**cfg, "options": {"url": "http://h:1", "unnorm_key": "k", "image_size": "224"}}))
