"""The bridge wire as docs/protocol.md describes it (§2 framing, §2.1 header fields, §9 errors):
strict decoding of one request header, encoding of replies. Written from the page alone."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

MAX_HEADER = 65_536  # §2: "at most 65,536 bytes"
MAX_ID = 2**63 - 1  # §2: "*uint* means 0 .. 2^63-1"
MAX_STR = 4096  # §2: "every string in a request ... is at most 4096 characters"


class WireError(Exception):
    """A request the bridge refuses before dispatch: `code` is a §9 error code."""

    def __init__(self, code: str, message: str, *, req_id: int | None = None,
                 req_type: str | None = None, version: int | None = None,
                 versions: list[int] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.req_id = req_id
        self.req_type = req_type
        self.version = version
        self.versions = versions


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def _check_plain(x: Any, where: str) -> None:
    """§2: nil, bool, int (64-bit), float, str, bin, array, map; no extension types."""
    if x is None or isinstance(x, bool | float | str | bytes):
        return
    if isinstance(x, int):
        if not -(2**63) <= x < 2**64:
            raise ValueError(f"{where}: integer out of 64-bit range")
        return
    if isinstance(x, list):
        for i, v in enumerate(x):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(x, dict):
        for k, v in x.items():
            _check_plain(k, f"{where} key")
            _check_plain(v, f"{where}.{k}")
        return
    raise ValueError(f"{where}: type {type(x).__name__} is not allowed (extension type?)")


def long_string(x: Any, where: str = "header") -> str | None:
    """Where the first string over MAX_STR characters is, or None."""
    if isinstance(x, str):
        return f"{where}: string of {len(x)} characters (limit {MAX_STR})" \
            if len(x) > MAX_STR else None
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
    for k, v in items:
        found = long_string(k, f"{where} key") or long_string(v, f"{where}.{k}")
        if found:
            return found
    return None


def decode_header(raw: bytes) -> dict[str, Any]:
    """Part 0 of a request -> its map; WireError(TOO_LARGE | BAD_MESSAGE) otherwise."""
    if len(raw) > MAX_HEADER:
        raise WireError("TOO_LARGE", f"header is {len(raw)} bytes, the limit is {MAX_HEADER}")
    try:
        obj = msgpack.unpackb(raw, raw=False, ext_hook=_no_ext, strict_map_key=False,
                              timestamp=0, use_list=True)
        _check_plain(obj, "header")
    except WireError:
        raise
    except Exception as e:
        raise WireError("BAD_MESSAGE", f"header is not valid msgpack: {e}") from e
    if not isinstance(obj, dict):
        raise WireError("BAD_MESSAGE", f"header must be a msgpack map, got {type(obj).__name__}")
    if not all(isinstance(k, str) for k in obj):
        raise WireError("BAD_MESSAGE", "header keys must be UTF-8 strings")
    return obj


# field checkers: value -> True when it has the type the page gives
def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    return (isinstance(x, int | float)) and not isinstance(x, bool)


def is_bool(x: Any) -> bool:
    return isinstance(x, bool)


def is_str(x: Any) -> bool:
    return isinstance(x, str)


def is_map(x: Any) -> bool:
    return isinstance(x, dict)


def is_uint(x: Any) -> bool:
    return is_int(x) and 0 <= x <= MAX_ID


def is_int64(x: Any) -> bool:
    return is_int(x) and -(2**63) <= x < 2**63


def numbers(n: int | None) -> Callable[[Any], bool]:
    def check(x: Any) -> bool:
        return isinstance(x, list) and (n is None or len(x) == n) and all(map(is_number, x))
    return check


def str_list(x: Any) -> bool:
    return isinstance(x, list) and all(map(is_str, x))


Schema = Mapping[str, Callable[[Any], bool]]


@dataclass(frozen=True)
class Request:
    v: int
    type: str
    id: int
    fields: dict[str, Any]


def check_request(header: dict[str, Any], schemas: Mapping[int, Mapping[str, Schema]],
                  ) -> Request:
    """§2.1/§3/§4: common fields, version, type, then the type's fields, strictly."""
    rid = header.get("id")
    rid = rid if is_uint(rid) else None
    rtype = header.get("type") if is_str(header.get("type")) else None
    v = header.get("v")
    for name, check in (("v", is_int), ("type", is_str), ("id", is_int)):
        if name not in header:
            raise WireError("BAD_MESSAGE", f"missing field '{name}'", req_id=rid, req_type=rtype)
        if not check(header[name]):
            raise WireError("BAD_MESSAGE", f"field '{name}' has the wrong type "
                            f"({type(header[name]).__name__})", req_id=rid, req_type=rtype)
    if rid is None:
        raise WireError("BAD_MESSAGE", "field 'id' must be in 0..2^63-1", req_type=rtype)
    v, rtype = int(header["v"]), str(header["type"])
    too_long = long_string(header)
    if too_long:
        raise WireError("BAD_MESSAGE", too_long, req_id=rid, req_type=rtype,
                        version=v if v in schemas else None)
    if v not in schemas:
        raise WireError("UNSUPPORTED_VERSION",
                        f"version {v} is not supported; this bridge speaks "
                        f"{sorted(schemas)}", req_id=rid, req_type=rtype)
    by_type = schemas[v]
    if rtype not in by_type:
        raise WireError("UNKNOWN_TYPE", f"unknown message type {rtype!r}", req_id=rid,
                        req_type=rtype, version=v)
    schema = by_type[rtype]
    extra = sorted(set(header) - {"v", "type", "id"} - set(schema))
    if extra:
        raise WireError("BAD_MESSAGE", f"{rtype}: unknown field(s) {', '.join(extra)}",
                        req_id=rid, req_type=rtype, version=v)
    fields = {}
    for name, valid in schema.items():
        if name not in header:
            raise WireError("BAD_MESSAGE", f"{rtype}: missing field '{name}'", req_id=rid,
                            req_type=rtype, version=v)
        if not valid(header[name]):
            raise WireError("BAD_MESSAGE", f"{rtype}: field '{name}' has the wrong type or "
                            f"length: {header[name]!r}"[:300], req_id=rid, req_type=rtype,
                            version=v)
        fields[name] = header[name]
    return Request(v=v, type=rtype, id=rid, fields=fields)


def encode(header: dict[str, Any]) -> bytes:
    return msgpack.packb(header, use_bin_type=True)
