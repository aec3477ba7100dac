"""msgpack with numpy arrays, byte-compatible with openpi's wire format (pure, no I/O).

openpi's websocket policy protocol sends every message as msgpack. An ndarray travels as a map
whose keys are msgpack *bin* strings, in this order:

    {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": arr.shape}

and a numpy scalar as {b"__npgeneric__": True, b"data": scalar.item(), b"dtype": dtype.str}.
Object, void (structured) and complex dtypes are refused both ways: object arrays would need
pickle, which never crosses our wires. Decoding accepts str or bytes keys (other writers send
str), checks that the buffer length matches dtype x shape, refuses msgpack extension types,
and turns every malformed input into one `WireFormatError` line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

REFUSED_KINDS = frozenset("OVc")  # object, void/structured, complex
MAX_DIMS = 32


class WireFormatError(ValueError):
    """A message that cannot be encoded or decoded; the text is one line."""


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        _check_dtype(obj.dtype, "encode")
        if isinstance(obj, np.ndarray):
            return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str,
                    b"shape": obj.shape}
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise WireFormatError(f"msgpack-numpy encode: cannot send a {type(obj).__name__}; send "
                          "numbers, strings, bytes, lists, dicts or numpy arrays")


def _check_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.kind in REFUSED_KINDS or dtype.hasobject:
        raise WireFormatError(f"msgpack-numpy {where}: dtype {dtype.str!r} is refused (object, "
                              "void and complex arrays do not cross the wire); send a numeric array")


def packb(obj: Any) -> bytes:
    """`obj` (dicts, lists, scalars, str, bytes, numpy arrays and scalars) as openpi's msgpack."""
    try:
        out = msgpack.packb(obj, default=_encode_default, use_bin_type=True)
    except WireFormatError:
        raise
    except (TypeError, ValueError, OverflowError) as e:
        raise WireFormatError(f"msgpack-numpy encode: {_line(e)}") from e
    assert isinstance(out, bytes)
    return out


def _get(obj: Mapping[Any, Any], key: str) -> Any:
    if key.encode() in obj:
        return obj[key.encode()]
    if key in obj:
        return obj[key]
    raise WireFormatError(f"msgpack-numpy decode: array map has no {key!r} entry")


def _flag(obj: Mapping[Any, Any], key: str) -> bool:
    return key in obj or key.encode() in obj


def _dtype(obj: Mapping[Any, Any]) -> np.dtype:
    raw = _get(obj, "dtype")
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    if not isinstance(raw, str) or not raw or len(raw) > 16:
        raise WireFormatError(f"msgpack-numpy decode: dtype must be a short string like '<f4', got {raw!r:.40}")
    try:
        dtype = np.dtype(raw)
    except (TypeError, ValueError, SyntaxError) as e:
        raise WireFormatError(f"msgpack-numpy decode: unknown dtype {raw!r}") from e
    _check_dtype(dtype, "decode")
    return dtype


def _shape(obj: Mapping[Any, Any]) -> tuple[int, ...]:
    raw = _get(obj, "shape")
    if not isinstance(raw, (list, tuple)) or len(raw) > MAX_DIMS or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in raw):
        raise WireFormatError(f"msgpack-numpy decode: shape must be a list of non-negative ints, "
                              f"got {raw!r:.60}")
    return tuple(raw)


def _decode_hook(obj: dict[Any, Any]) -> Any:
    if _flag(obj, "__ndarray__"):
        dtype, shape = _dtype(obj), _shape(obj)
        data = _get(obj, "data")
        if not isinstance(data, bytes):
            raise WireFormatError(f"msgpack-numpy decode: array data must be bytes, got {type(data).__name__}")
        want = math.prod(shape) * dtype.itemsize
        if len(data) != want:
            raise WireFormatError(f"msgpack-numpy decode: array of shape {list(shape)} dtype "
                                  f"{dtype.str!r} needs {want} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if _flag(obj, "__npgeneric__"):
        dtype = _dtype(obj)
        try:
            return dtype.type(_get(obj, "data"))
        except (TypeError, ValueError, OverflowError) as e:
            raise WireFormatError(f"msgpack-numpy decode: bad {dtype.str!r} scalar: {_line(e)}") from e
    return obj


def _refuse_ext(code: int, data: bytes) -> Any:
    raise WireFormatError(f"msgpack-numpy decode: msgpack extension type {code} is refused")


def unpackb(data: bytes, *, max_bytes: int | None = None) -> Any:
    """One msgpack message -> Python values with numpy arrays (read-only) and scalars.

    `max_bytes` refuses a larger message before parsing it."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireFormatError(f"msgpack-numpy decode: expected bytes, got {type(data).__name__} "
                              "(a text frame is not a msgpack message)")
    if max_bytes is not None and len(data) > max_bytes:
        raise WireFormatError(f"msgpack-numpy decode: message of {len(data)} bytes is over the "
                              f"{max_bytes}-byte limit")
    try:
        return msgpack.unpackb(bytes(data), object_hook=_decode_hook, ext_hook=_refuse_ext, raw=False,
                               strict_map_key=True)
    except WireFormatError:
        raise
    except Exception as e:  # msgpack raises many types (ExtraData, FormatError, StackError, ...)
        raise WireFormatError(f"msgpack-numpy decode: malformed message: {_line(e)}") from e


def _line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:200] if text else type(e).__name__
