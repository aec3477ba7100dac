"""The bridge wire protocol: message schema and codec (docs/protocol.md is the normative text).

A message is a ZeroMQ multipart message. Part 0 is a msgpack map (the header); parts 1..n are
raw binary buffers (camera frames), each described by an entry of the header's `frames`
list. No pickle, no msgpack extension types. Decoding is strict: anything malformed raises
ProtocolError (one exception type) carrying the error code the server replies with.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack
import numpy as np

from robots.drivers.base import CameraSpec, Capabilities
from robots.types import ActionSpace, Observation, Workspace

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1})

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
v_t3 = v_list(v_int, 3)
v_flags7 = v_list(v_bool, 7)
v_floats = v_list(v_num)
v_maps = v_list(v_map, max_n=MAX_FRAMES)
v_shape = v_list(v_uint, max_n=4)
v_opt_uint = v_opt(v_uint)
v_opt_bool = v_opt(v_bool)

#: Request type -> {field: validator}. All listed fields are required; no others allowed.
REQUESTS: dict[str, dict[str, Validator]] = {
    "hello": {"client": v_str},
    "reset": {"scene": v_map, "episode_id": v_str},
    "observe": {},
    "act": {"action": v_action8, "seq": v_uint, "sent_wall_ns": v_int, "episode_id": v_str},
    "hold": {},
    "estop": {"reason": v_str},
    "rearm": {},
    "status": {},
    "heartbeat": {},
    "privileged": {},
    "end_episode": {"episode_id": v_str},
}
BASE_KEYS = frozenset({"v", "type", "id"})
REPLY_BASE_KEYS = frozenset({"v", "type", "id", "ok", "sid", "t", "st"})
_ALLOWED_KEYS = {t: BASE_KEYS | set(spec) for t, spec in REQUESTS.items()}


@dataclass(frozen=True)
class Request:
    type: str
    id: int
    fields: dict[str, Any] = field(default_factory=dict)
    v: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class ServerTiming:
    """Server monotonic ns at receipt and just before sending, and server wall ns at send."""

    recv_ns: int
    send_ns: int
    wall_ns: int


@dataclass(frozen=True)
class SafetySummary:
    """Carried by every reply: the latch/hold state and the non-zero intervention counters
    (absent means 0; status has every counter)."""

    estopped: bool
    holding: bool
    in_episode: bool
    counters: dict[str, int]


@dataclass(frozen=True)
class Reply:
    type: str  # the request's type, or "error"
    id: int | None  # the request's id (None if the request's id was unreadable)
    ok: bool
    sid: str  # the bridge's session id (new on every bridge start)
    timing: ServerTiming
    summary: SafetySummary
    fields: dict[str, Any] = field(default_factory=dict)
    buffers: tuple[Any, ...] = ()
    v: int = PROTOCOL_VERSION


# --- codec --------------------------------------------------------------------------------


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


def _base(h: dict, kinds: dict[str, Any] | None) -> tuple[int, str, int | None]:
    rid = h.get("id")
    rid = rid if type(rid) is int and 0 <= rid <= MAX_ID else None
    ver = h.get("v")
    if type(ver) is not int:
        raise ProtocolError("field 'v' (protocol version) must be an int", request_id=rid)
    if ver not in SUPPORTED_VERSIONS:
        raise ProtocolError(f"protocol version {ver} not supported (supported: {sorted(SUPPORTED_VERSIONS)})",
                            ErrorCode.UNSUPPORTED_VERSION, rid)
    typ = h.get("type")
    if type(typ) is not str:
        raise ProtocolError("field 'type' must be a string", request_id=rid)
    if kinds is not None and typ not in kinds:
        raise ProtocolError(f"unknown message type {typ[:64]!r}", ErrorCode.UNKNOWN_TYPE, rid)
    if rid is None and kinds is not None:  # requests need an id; error replies may lack one
        raise ProtocolError("field 'id' must be a non-negative 63-bit int")
    return ver, typ, rid


def encode_request(req: Request) -> list[bytes]:
    return [pack_header({"v": req.v, "type": req.type, "id": req.id, **req.fields})]


def decode_request(parts: Sequence[bytes | memoryview]) -> Request:
    """Validate a request strictly against REQUESTS. Requests carry no buffers."""
    if not parts:
        raise ProtocolError("empty message")
    h = unpack_header(parts[0])
    ver, typ, rid = _base(h, REQUESTS)
    if len(parts) != 1:
        raise ProtocolError(f"a {typ!r} request has exactly 1 part, got {len(parts)}", request_id=rid)
    spec = REQUESTS[typ]
    if not h.keys() <= _ALLOWED_KEYS[typ]:
        extra = sorted(set(h) - _ALLOWED_KEYS[typ])[:8]
        raise ProtocolError(f"unknown fields for {typ!r}: {extra}", request_id=rid)
    fields: dict[str, Any] = {}
    for name, check in spec.items():
        if name not in h:
            raise ProtocolError(f"{typ!r} request misses field {name!r}", request_id=rid)
        try:
            fields[name] = check(h[name], name)
        except ProtocolError as e:
            raise ProtocolError(f"{typ!r} request: {e}", e.code, rid) from None
    return Request(typ, rid, fields, ver)


def reply_header(rtype: str, rid: int | None, ok: bool, sid: str, t: tuple[int, int, int] | list[int],
                 st: dict, fields: dict) -> dict:
    """The reply header map (st: estopped, holding, in_episode, counters)."""
    return {"v": PROTOCOL_VERSION, "type": rtype, "id": rid, "ok": ok, "sid": sid, "t": t, "st": st, **fields}


def encode_reply(reply: Reply) -> list[Any]:
    t, s = reply.timing, reply.summary
    st = {"estopped": s.estopped, "holding": s.holding, "in_episode": s.in_episode, "counters": s.counters}
    h = reply_header(reply.type, reply.id, reply.ok, reply.sid, [t.recv_ns, t.send_ns, t.wall_ns], st, reply.fields)
    return [pack_header(h | {"v": reply.v}), *reply.buffers]


def decode_reply(parts: Sequence[Any]) -> Reply:
    """Decode a reply (client side). Unknown extra fields are kept, not refused."""
    if not parts:
        raise ProtocolError("empty reply")
    if len(parts) > 1 + MAX_FRAMES:
        raise ProtocolError(f"reply has {len(parts)} parts, limit {1 + MAX_FRAMES}", ErrorCode.TOO_LARGE)
    h = unpack_header(parts[0])
    ver, typ, _ = _base(h, None)
    pop = h.pop
    del h["v"], h["type"]
    try:  # what is popped is checked; what remains are the type's fields
        rid = v_opt_uint(pop("id", None), "id")
        ok, sid = v_bool(pop("ok", None), "ok"), v_str(pop("sid", None), "sid")
        t = v_t3(pop("t", None), "t")
        st = v_map(pop("st", None), "st")
        counters = v_map(st.get("counters"), "st.counters")
        if not (set(map(type, counters)) <= _STR and set(map(type, counters.values())) <= _INT):
            raise ProtocolError("st.counters must map names to ints")
        summary = SafetySummary(v_bool(st.get("estopped"), "st.estopped"), v_bool(st.get("holding"), "st.holding"),
                                v_bool(st.get("in_episode"), "st.in_episode"), counters)
    except ProtocolError as e:
        raise ProtocolError(f"bad reply header: {e}") from None
    return Reply(typ, rid, ok, sid, ServerTiming(*t), summary, h, tuple(parts[1:]), ver)


# --- frames -------------------------------------------------------------------------------


def _jpeg_encode(img: np.ndarray, quality: int) -> bytes:
    import cv2  # lazy: only when a camera is configured for JPEG

    bgr = np.ascontiguousarray(img[..., ::-1]) if img.ndim == 3 and img.shape[2] == 3 else img
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ProtocolError("JPEG encoding failed", ErrorCode.INTERNAL)
    return buf.tobytes()


def _jpeg_decode(data: Any, shape: tuple[int, ...]) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ProtocolError("JPEG frame does not decode")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]
    if arr.shape != shape:
        raise ProtocolError(f"JPEG frame decodes to {arr.shape}, header says {shape}")
    return arr


def pack_frames(frames: dict[str, np.ndarray], encodings: dict[str, str] | None = None,
                first_part: int = 1, jpeg_quality: int = 90) -> tuple[list[dict], list[Any]]:
    """Frames -> (descriptors for the header, buffers for parts first_part..). Raw frames are
    passed as contiguous arrays (sendable zero-copy)."""
    descs: list[dict] = []
    bufs: list[Any] = []
    for i, (cam, img) in enumerate(frames.items()):
        enc = encodings.get(cam, "raw") if encodings else "raw"
        dtype = _DTYPE_NAMES.get(img.dtype)
        if dtype is None:
            raise ProtocolError(f"camera {cam!r}: dtype {img.dtype} cannot be sent", ErrorCode.INTERNAL)
        if enc == "jpeg":
            buf: Any = _jpeg_encode(img, jpeg_quality)
        else:
            buf = img if img.flags.c_contiguous else np.ascontiguousarray(img)
        descs.append({"camera": cam, "shape": list(img.shape), "dtype": dtype, "encoding": enc,
                      "part": first_part + i})
        bufs.append(buf)
    return descs, bufs


_DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "float32": np.float32}
_DTYPE_NAMES = {np.dtype(t): name for name, t in _DTYPES.items()}
_ITEMSIZE = {name: np.dtype(t).itemsize for name, t in _DTYPES.items()}


def unpack_frames(descs: Any, parts: Sequence[Any]) -> dict[str, np.ndarray]:
    """Descriptors + all message parts -> read-only arrays. Raw frames are zero-copy views
    of the received buffers (`parts` may be zmq.Frame objects: their .buffer is used)."""
    descs = v_maps(descs, "frames")
    out: dict[str, np.ndarray] = {}
    for d in descs:
        cam = v_str(d.get("camera"), "frames.camera")
        shape = tuple(v_shape(d.get("shape"), "frames.shape"))
        dtype = d.get("dtype")
        if dtype not in _DTYPES:
            raise ProtocolError(f"frame dtype {dtype!r} not supported ({sorted(_DTYPES)})")
        part = v_uint(d.get("part"), "frames.part")
        if not 1 <= part < len(parts):
            raise ProtocolError(f"frame {cam!r} points at part {part}, message has {len(parts)}")
        p = parts[part]
        data = getattr(p, "buffer", p)
        if len(data) > MAX_BUFFER_BYTES:
            raise ProtocolError(f"frame {cam!r} is {len(data)} bytes", ErrorCode.TOO_LARGE)
        enc = d.get("encoding")
        if enc == "raw":
            want = math.prod(shape) * _ITEMSIZE[dtype]
            if len(data) != want:
                raise ProtocolError(f"frame {cam!r} has {len(data)} bytes, shape needs {want}")
            arr = np.frombuffer(data, dtype=_DTYPES[dtype]).reshape(shape)
        elif enc == "jpeg":
            arr = _jpeg_decode(data, shape)
        else:
            raise ProtocolError(f"frame encoding {enc!r} not supported (raw, jpeg)")
        arr.flags.writeable = False
        out[cam] = arr
    return out


# --- typed payloads -----------------------------------------------------------------------


def capabilities_to_wire(c: Capabilities) -> dict:
    a, w = c.action_space, c.workspace
    return {"driver": c.driver,
            "cameras": [{"name": s.name, "height": s.height, "width": s.width, "encoding": s.encoding}
                        for s in c.cameras],
            "action_space": {"low": list(a.low), "high": list(a.high), "control_hz": a.control_hz},
            "workspace": {"low": list(w.low), "high": list(w.high)},
            "needs_operator_reset": c.needs_operator_reset, "privileged_state": c.privileged_state,
            "tags": list(c.tags)}


def capabilities_from_wire(d: Any) -> Capabilities:
    try:
        d = v_map(d, "capabilities")
        cams = tuple(CameraSpec(v_str(c["name"], "name"), v_uint(c["height"], "height"), v_uint(c["width"], "width"),
                                v_str(c["encoding"], "encoding")) for c in v_maps(d["cameras"], "cameras"))
        a, w = v_map(d["action_space"], "action_space"), v_map(d["workspace"], "workspace")
        f7, f3 = v_list(v_num, 7), v_list(v_num, 3)
        return Capabilities(v_str(d["driver"], "driver"), cams,
                            ActionSpace(tuple(f7(a["low"], "low")), tuple(f7(a["high"], "high")),
                                        v_num(a["control_hz"], "control_hz")),
                            Workspace(tuple(f3(w["low"], "low")), tuple(f3(w["high"], "high"))),
                            v_bool(d["needs_operator_reset"], "needs_operator_reset"),
                            v_bool(d["privileged_state"], "privileged_state"), tuple(v_list(v_str)(d["tags"], "tags")))
    except ProtocolError as e:
        raise ProtocolError(f"bad capabilities: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"bad capabilities: {type(e).__name__}: {e}") from e


def sanitize(obj: Any, depth: int = 0) -> Any:
    """Keep only msgpack-safe plain data (for driver `info` dicts): numpy scalars/arrays
    become numbers/lists, anything else becomes its repr, depth is bounded."""
    if obj is None or type(obj) in (bool, int, float, str, bytes):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if depth > 8:
        return repr(obj)[:200]
    if isinstance(obj, dict):
        return {str(k): sanitize(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v, depth + 1) for v in obj]
    if isinstance(obj, np.ndarray) and obj.size <= 4096:
        return obj.tolist()
    return repr(obj)[:200]


def observation_wire(seq: int, mono_ns: int, wall_ns: int, proprio: Sequence[float], sim_success: bool | None,
                     episode_id: str, info: dict) -> dict:
    """The `obs` map of observe/act replies (docs/protocol.md section 6)."""
    return {"seq": seq, "mono_ns": mono_ns, "wall_ns": wall_ns, "proprio": [float(x) for x in proprio],
            "sim_success": sim_success, "episode_id": episode_id, "info": sanitize(info) if info else {}}


def observation_to_wire(obs: Observation) -> dict:
    return observation_wire(obs.seq, obs.robot_monotonic_ns, obs.robot_wall_ns, obs.proprio, obs.sim_success,
                            obs.episode_id, obs.info)


def observation_from_wire(d: Any, frames: dict[str, np.ndarray]) -> Observation:
    d = v_map(d, "obs")
    try:
        return Observation(v_uint(d["seq"], "seq"), v_int(d["mono_ns"], "mono_ns"), v_int(d["wall_ns"], "wall_ns"),
                           frames, tuple(v_floats(d["proprio"], "proprio")), v_str(d["episode_id"], "episode_id"),
                           v_opt_bool(d["sim_success"], "sim_success"), v_map(d["info"], "info"))
    except KeyError as e:
        raise ProtocolError(f"observation misses field {e}") from None


# --- live stream (PUB) --------------------------------------------------------------------
# One single-part message per camera frame (CONFLATE needs single-part messages):
#   topic: camera name UTF-8 + 0x00 | u32 big-endian header length | msgpack header | frame

_U32 = struct.Struct(">I")


def stream_topic(camera: str) -> bytes:
    return camera.encode("utf-8") + b"\0"


def pack_stream(camera: str, header: dict, buf: Any) -> bytes:
    h = pack_header(header)
    return b"".join((stream_topic(camera), _U32.pack(len(h)), h, memoryview(buf).cast("B")))


def unpack_stream(data: Any) -> tuple[str, dict, np.ndarray]:
    """-> (camera, header, read-only frame). Raw frames are views of `data` (zero-copy)."""
    mv = memoryview(data).cast("B")
    nul = bytes(mv[: MAX_STR + 1]).find(b"\0")
    if nul < 0 or len(mv) < nul + 1 + _U32.size:
        raise ProtocolError("stream message has no camera topic / length prefix")
    try:
        camera = bytes(mv[:nul]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError("stream topic is not UTF-8") from e
    (hlen,) = _U32.unpack(mv[nul + 1 : nul + 1 + _U32.size])
    start = nul + 1 + _U32.size
    if start + hlen > len(mv):
        raise ProtocolError(f"stream header length {hlen} exceeds the message")
    header = unpack_header(mv[start : start + hlen])
    desc = dict(header.get("frame") or {}, part=1)
    frames = unpack_frames([desc], [None, mv[start + hlen :]])
    return camera, header, frames[v_str(desc.get("camera"), "camera")]
