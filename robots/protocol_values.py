"""Bridge wire values: version constants, limits, error codes, ProtocolError, the strict field
validators and the header codec. Part of robots.protocol (import it from there); split out
only to keep modules small. docs/protocol.md is the normative text.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

import msgpack

V1, V2 = 1, 2
PROTOCOL_VERSION = V2  # the newest version: what a client offers first (docs/protocol.md section 3)
SUPPORTED_VERSIONS: frozenset[int] = frozenset({V1, V2})
MIN_VERSION = min(SUPPORTED_VERSIONS)
MAX_ACTION_DIM = 32
MAX_STATE_DIM = 64

MAX_HEADER_BYTES = 64 * 1024  # any header, either direction
MAX_FRAMES = 16  # buffers per message
MAX_BUFFER_BYTES = 64 * 1024 * 1024  # one frame buffer
MAX_STR = 4096  # any string field
MAX_ID = 2**63 - 1



class ErrorCode(StrEnum):
    BAD_MESSAGE = "BAD_MESSAGE"  # not decodable, wrong field types, missing/unknown fields
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    TOO_LARGE = "TOO_LARGE"
    UNAUTHORIZED = "UNAUTHORIZED"  # sender's CURVE key is not on the allow list
    ESTOPPED = "ESTOPPED"  # e-stop latched: re-arm first
    NOT_IN_EPISODE = "NOT_IN_EPISODE"  # act/end_episode outside (or for another) episode
    NOT_READY = "NOT_READY"  # v2: observe before the arm's first reset (nothing to show yet)
    STALE_COMMAND = "STALE_COMMAND"  # seq not increasing, or too old / from the future
    NON_FINITE = "NON_FINITE"  # NaN or inf in an action
    NOT_SUPPORTED = "NOT_SUPPORTED"  # e.g. privileged state on a real arm
    DRIVER_ERROR = "DRIVER_ERROR"  # the arm's driver raised; the arm was held
    INTERNAL = "INTERNAL"


#: Codes counted as malformed input (the fuzz test's "refused" count).
MALFORMED_CODES = frozenset(
    {ErrorCode.BAD_MESSAGE, ErrorCode.UNSUPPORTED_VERSION, ErrorCode.UNKNOWN_TYPE, ErrorCode.TOO_LARGE}
)


class ProtocolError(ValueError):
    """Malformed or unacceptable input. `code` is what the server replies with;
    `request_id` is the request's id when it could be read (else None)."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_MESSAGE, request_id: int | None = None):
        super().__init__(message)
        self.code = code
        self.request_id = request_id

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # pickles with its code (it may cross Ray)
        return type(self), (str(self.args[0]) if self.args else "", self.code, self.request_id)


# --- field validators ---------------------------------------------------------------------

Validator = Callable[[Any, str], Any]


def _fail(name: str, want: str, v: Any) -> ProtocolError:
    return ProtocolError(f"field {name!r} must be {want}, got {type(v).__name__}")


def v_int(v: Any, name: str) -> int:
    if type(v) is not int or not -MAX_ID - 1 <= v <= MAX_ID:
        raise _fail(name, "a 64-bit int", v)
    return v


def v_uint(v: Any, name: str) -> int:
    if type(v) is not int or not 0 <= v <= MAX_ID:
        raise _fail(name, "a non-negative 63-bit int", v)
    return v


def v_num(v: Any, name: str) -> float:
    """int or float (NaN/inf pass here; safety refuses them with NON_FINITE)."""
    if type(v) is float:
        return v
    if type(v) is not int or not -(2**63) <= v < 2**64:
        raise _fail(name, "a number", v)
    return float(v)


def v_bool(v: Any, name: str) -> bool:
    if type(v) is not bool:
        raise _fail(name, "a bool", v)
    return v


def v_str(v: Any, name: str) -> str:
    if type(v) is not str or len(v) > MAX_STR:
        raise _fail(name, f"a string of at most {MAX_STR} chars", v)
    return v


def v_map(v: Any, name: str) -> dict:
    if type(v) is not dict:
        raise _fail(name, "a map", v)
    return v


def v_opt(inner: Validator) -> Validator:
    return lambda v, name: None if v is None else inner(v, name)


_STR = {str}
_FLOAT = {float}
_INT = {int}
_BOOL = {bool}


def v_list(inner: Validator, n: int | None = None, max_n: int = 64) -> Validator:
    # fast path, C-level loops: a list of exactly float (v_num) or int in range (v_int/v_uint)
    lo = -MAX_ID - 1 if inner is v_int else 0 if inner is v_uint else None

    def check(v: Any, name: str) -> list:
        if type(v) is not list or (n is not None and len(v) != n) or len(v) > max_n:
            want = f"a list of {n}" if n is not None else f"a list of at most {max_n}"
            raise _fail(name, want, v)
        if v:
            if inner is v_num and set(map(type, v)) <= _FLOAT:
                return v
            if inner is v_bool and set(map(type, v)) <= _BOOL:
                return v
            if lo is not None and set(map(type, v)) <= _INT and min(v) >= lo and max(v) <= MAX_ID:
                return v
        return [inner(x, name) for x in v]  # element errors name the list

    return check


v_action8 = v_list(v_num, 8)
v_action = v_list(v_num, max_n=MAX_ACTION_DIM)  # v2: D numbers, D checked against the arm
v_t3 = v_list(v_int, 3)
v_flags7 = v_list(v_bool, 7)
v_flags = v_list(v_bool, max_n=MAX_ACTION_DIM)
v_floats = v_list(v_num)
v_strs = v_list(v_str)
v_maps = v_list(v_map, max_n=MAX_FRAMES)
v_shape = v_list(v_uint, max_n=4)
v_opt_uint = v_opt(v_uint)
v_opt_bool = v_opt(v_bool)
v_opt_str = v_opt(v_str)

# --- header codec ----------------------------------------------------------------------


def _reject_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} is not allowed")


def pack_header(header: dict) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def unpack_header(data: bytes | memoryview) -> dict:
    """Strictly unpack part 0: one msgpack map with string keys, at most MAX_HEADER_BYTES."""
    n = len(data)
    if n > MAX_HEADER_BYTES:
        raise ProtocolError(f"header is {n} bytes, limit {MAX_HEADER_BYTES}", ErrorCode.TOO_LARGE)
    if n == 0:
        raise ProtocolError("empty header part")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_reject_ext,
                              use_list=True, timestamp=0)
    except ProtocolError:
        raise
    except Exception as e:  # msgpack raises many types (ExtraData, ValueError, UnicodeError, ...)
        raise ProtocolError(f"header is not valid msgpack: {type(e).__name__}: {e}") from e
    if type(obj) is not dict:
        raise ProtocolError(f"header must be a msgpack map, got {type(obj).__name__}")
    if not set(map(type, obj)) <= _STR:
        raise ProtocolError("header keys must be strings")
    return obj

