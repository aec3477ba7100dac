"""JSON with numpy arrays, compatible with the `json-numpy` package (pure, no I/O).

OpenVLA's `vla-scripts/deploy.py` REST server and its clients call `json_numpy.patch()`, so
every JSON body they exchange carries arrays (and numpy scalars) as objects

    {"__numpy__": base64(the C-order bytes), "dtype": "<f4", "shape": [7]}

`dtype` is numpy's array-protocol type string (`dtype.str`: byte order, kind, item size);
`shape` a list of ints, empty for a numpy scalar. Anything else is plain JSON. We speak the
format ourselves (json-numpy is not a dependency): object, void (structured) and complex
dtypes, and any dtype given in another form than a type string, are refused both ways;
decoding checks that the buffer length matches dtype x shape and turns every malformed input
into one `WireFormatError` line. NaN and infinity are refused outside arrays (not JSON).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np

from policies.remote.msgpack_numpy import WireFormatError

__all__ = ["WireFormatError", "decode_array", "dumps", "encode_array", "loads"]

REFUSED_KINDS = frozenset("OVcUSMm")  # object, void, complex, text, datetime: numbers only
MAX_DIMS = 32
MARK = "__numpy__"


def _check_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.kind in REFUSED_KINDS or dtype.hasobject or dtype.fields is not None:
        raise WireFormatError(f"json-numpy {where}: dtype {dtype.str!r} is refused (only bool, "
                              "integer and float arrays cross this wire)")


def encode_array(a: np.ndarray | np.generic) -> dict[str, Any]:
    """One array or numpy scalar as json-numpy's object (the bytes in C order)."""
    _check_dtype(a.dtype, "encode")
    arr = np.ascontiguousarray(a)
    return {MARK: base64.b64encode(arr.tobytes()).decode("ascii"), "dtype": a.dtype.str,
            "shape": [int(n) for n in np.shape(a)]}


def _default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        return encode_array(obj)
    raise WireFormatError(f"json-numpy encode: cannot send a {type(obj).__name__}; send "
                          "numbers, strings, lists, dicts or numpy arrays")


def dumps(obj: Any) -> str:
    """`obj` (dicts, lists, str, numbers, numpy arrays and scalars) as json-numpy text."""
    try:
        return json.dumps(obj, default=_default, allow_nan=False)
    except WireFormatError:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise WireFormatError(f"json-numpy encode: {_line(e)}") from e


def decode_array(d: dict[str, Any]) -> np.ndarray | np.generic:
    """json-numpy's object -> a read-only array (shape [] -> a numpy scalar)."""
    data, dtype_s, shape = d.get(MARK), d.get("dtype"), d.get("shape")
    if set(d) != {MARK, "dtype", "shape"}:
        raise WireFormatError(f"json-numpy decode: an array object has keys {sorted(d)}; "
                              f"expected {MARK}, dtype, shape")
    if not isinstance(data, str) or not isinstance(dtype_s, str):
        raise WireFormatError("json-numpy decode: __numpy__ and dtype must be strings (a "
                              "structured dtype given as a list is refused)")
    try:
        dtype = np.dtype(dtype_s)
    except (TypeError, ValueError) as e:
        raise WireFormatError(f"json-numpy decode: unknown dtype {dtype_s[:40]!r}") from e
    _check_dtype(dtype, "decode")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in shape)):
        raise WireFormatError(f"json-numpy decode: shape must be a list of at most {MAX_DIMS} "
                              f"non-negative ints, got {str(shape)[:60]}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise WireFormatError("json-numpy decode: __numpy__ is not valid base64") from e
    want = math.prod(shape) * dtype.itemsize
    if len(raw) != want:
        raise WireFormatError(f"json-numpy decode: {len(raw)} data bytes for dtype "
                              f"{dtype.str} shape {tuple(shape)} (expected {want})")
    arr = np.frombuffer(raw, dtype=dtype)
    return arr.reshape(shape) if shape else arr[0]


def _hook(d: dict[str, Any]) -> Any:
    return decode_array(d) if MARK in d else d


def _refuse_constant(name: str) -> Any:
    raise WireFormatError(f"json-numpy decode: {name} is not JSON")


def loads(text: str | bytes, *, max_bytes: int | None = None) -> Any:
    """json-numpy text -> Python values with numpy arrays; `max_bytes` bounds the input."""
    if max_bytes is not None and len(text) > max_bytes:
        raise WireFormatError(f"json-numpy decode: {len(text)} bytes exceed the limit of "
                              f"{max_bytes}")
    try:
        return json.loads(text, object_hook=_hook, parse_constant=_refuse_constant)
    except WireFormatError:
        raise
    except (ValueError, TypeError, RecursionError) as e:  # JSONDecodeError, bad UTF-8
        raise WireFormatError(f"json-numpy decode: not JSON: {_line(e)}") from e


def _line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else e.__class__.__name__
    return text[:200]
