"""openpi's msgpack-numpy wire format, byte by byte (pure): arrays as bin-keyed maps, numpy
scalars, refused dtypes both ways, the size limit and malformed input as one-line errors."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from policies.remote.msgpack_numpy import WireFormatError, packb, unpackb


def test_an_array_is_a_map_with_bin_keys_dtype_string_and_shape() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = packb(a)
    # fixmap of 4; first key is bin8 of length 11 "__ndarray__" (0xc4 0x0b), then true (0xc3)
    assert raw[:15] == b"\x84\xc4\x0b__ndarray__\xc3"
    m = msgpack.unpackb(raw, raw=False)
    assert list(m) == [b"__ndarray__", b"data", b"dtype", b"shape"]
    assert all(isinstance(k, bytes) for k in m)
    assert m[b"__ndarray__"] is True
    assert m[b"data"] == a.tobytes()
    assert m[b"dtype"] == "<f4"
    assert m[b"shape"] == [2, 3]
    expected = msgpack.packb({b"__ndarray__": True, b"data": a.tobytes(), b"dtype": "<f4",
                              b"shape": [2, 3]}, use_bin_type=True)
    assert raw == expected


def test_a_numpy_scalar_is_an_npgeneric_map() -> None:
    m = msgpack.unpackb(packb(np.int64(-5)), raw=False)
    assert m == {b"__npgeneric__": True, b"data": -5, b"dtype": "<i8"}
    assert list(m) == [b"__npgeneric__", b"data", b"dtype"]


def test_nested_observation_round_trips_exactly() -> None:
    rng = np.random.default_rng(0)
    obs = {
        "observation/exterior_image_1_left": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/joint_position": rng.standard_normal(7).astype(np.float32),
        "ids": np.arange(5, dtype=np.int64),
        "step": np.int32(3), "scale": np.float64(0.25), "flag": np.bool_(True),
        "prompt": "pick up the cube", "raw": b"\x00\x01", "nested": [1, 2.5, None, {"k": "v"}],
    }
    back = unpackb(packb(obs))
    assert set(back) == set(obs)
    for k in ("observation/exterior_image_1_left", "observation/joint_position", "ids"):
        assert back[k].dtype == obs[k].dtype and back[k].shape == obs[k].shape
        assert np.array_equal(back[k], obs[k])
    assert back["step"] == 3 and back["step"].dtype == np.int32
    assert back["scale"] == 0.25  # np.float64 is a Python float: msgpack sends it as one (as openpi)
    assert back["flag"].dtype == np.bool_ and bool(back["flag"]) is True
    assert back["prompt"] == "pick up the cube" and back["raw"] == b"\x00\x01"
    assert back["nested"] == [1, 2.5, None, {"k": "v"}]


def test_non_contiguous_and_big_endian_arrays_keep_their_values() -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]
    assert np.array_equal(unpackb(packb(a)), a)
    b = np.arange(4, dtype=">i4")
    back = unpackb(packb(b))
    assert back.dtype.str == ">i4" and np.array_equal(back, b)


def test_decoding_accepts_str_keys() -> None:
    a = np.array([1.0, 2.0], dtype=np.float32)
    raw = msgpack.packb({"x": {"__ndarray__": True, "data": a.tobytes(), "dtype": "<f4",
                               "shape": [2]}}, use_bin_type=True)
    assert np.array_equal(unpackb(raw)["x"], a)


@pytest.mark.parametrize("bad", [
    np.array([object()], dtype=object),
    np.zeros(2, dtype=[("a", "<f4")]),
    np.zeros(2, dtype=np.complex64),
    np.complex128(1 + 2j),
    np.void(b"\x00\x01"),
])
def test_object_void_and_complex_are_refused_when_encoding(bad: object) -> None:
    with pytest.raises(WireFormatError, match="refused"):
        packb({"x": bad})


@pytest.mark.parametrize("dtype", ["|O", "<c8", "|V4", "<c16"])
def test_object_void_and_complex_are_refused_when_decoding(dtype: str) -> None:
    raw = msgpack.packb({b"__ndarray__": True, b"data": b"\x00" * 16, b"dtype": dtype, b"shape": [1]},
                        use_bin_type=True)
    with pytest.raises(WireFormatError, match="refused") as e:
        unpackb(raw)
    assert "\n" not in str(e.value)


def test_a_message_over_max_bytes_is_refused_before_parsing() -> None:
    raw = packb(np.zeros(1000, dtype=np.uint8))
    assert unpackb(raw, max_bytes=len(raw)).shape == (1000,)
    with pytest.raises(WireFormatError, match="over the"):
        unpackb(raw, max_bytes=len(raw) - 1)


def _array_map(**over: object) -> bytes:
    m: dict[bytes, object] = {b"__ndarray__": True, b"data": b"\x00" * 8, b"dtype": "<f4", b"shape": [2]}
    m.update({k.encode(): v for k, v in over.items()})
    return msgpack.packb(m, use_bin_type=True)


@pytest.mark.parametrize("raw", [
    b"\xc1",  # never-used msgpack byte
    b"\x92\x01",  # array of 2 with only one element
    packb({"a": 1}) + b"\x00",  # trailing data
    _array_map(data=b"\x00" * 7),  # buffer length does not match dtype x shape
    _array_map(shape=[-1]),
    _array_map(shape="2"),
    _array_map(dtype="not-a-dtype"),
    _array_map(dtype=5),
    _array_map(data="text"),
    msgpack.packb({b"__ndarray__": True, b"dtype": "<f4", b"shape": [2]}, use_bin_type=True),
    msgpack.packb(msgpack.ExtType(7, b"x")),
    msgpack.packb({1: 2}),  # int map keys
])
def test_malformed_input_raises_one_line_wire_format_error(raw: bytes) -> None:
    with pytest.raises(WireFormatError) as e:
        unpackb(raw)
    assert str(e.value).startswith("msgpack-numpy decode:")
    assert "\n" not in str(e.value)


def test_a_text_frame_is_not_a_message() -> None:
    with pytest.raises(WireFormatError, match="text frame"):
        unpackb("hello")  # type: ignore[arg-type]


def test_unsupported_python_objects_are_refused_with_one_line() -> None:
    with pytest.raises(WireFormatError, match="cannot send a set"):
        packb({"x": {1, 2}})
