"""The wire codecs: the bridge protocol (docs/protocol.md is the normative text) and the policy
data plane (robots/protocol_dataplane.py). The only place either wire is encoded or decoded.

A message is a ZeroMQ multipart message. Part 0 is a msgpack map (the header); parts 1..n are
raw binary buffers (camera frames), each described by an entry of the header's `frames`
list. No pickle, no msgpack extension types. Decoding is strict: anything malformed raises
ProtocolError (one exception type) carrying the error code the server replies with.

The codec is one module to its users (`from robots import protocol as P`); its parts live in
robots/protocol_values.py (constants, errors, validators, header codec), robots/
protocol_frames.py (frames, live stream), robots/protocol_payloads.py (capabilities, scene,
act, observations), robots/protocol_actions.py (RT-2 Action <-> values, the only such
conversion) and robots/protocol_dataplane.py (the policy data plane, its own version).
Bridge protocol versions 1 and 2 are both served (docs/protocol.md section 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from robots.protocol_actions import (  # noqa: F401
    RT2_DIM,
    RT2_WIRE_DIM,
    action_from_rt2_wire,
    action_of,
    action_to_rt2_wire,
    action_values,
)
from robots.protocol_frames import (  # noqa: F401
    pack_frames,
    pack_stream,
    stream_topic,
    unpack_frames,
    unpack_stream,
)
from robots.protocol_payloads import (  # noqa: F401
    SCENE_KEYS,
    SCENE_REQUIRED,
    act_reply_fields,
    act_reply_from_wire,
    act_request_fields,
    capabilities_from_wire,
    capabilities_to_wire,
    observation_from_wire,
    observation_to_wire,
    observation_wire,
    sanitize,
    scene_from_wire,
    scene_to_wire,
    v1_compatible,
)
from robots.protocol_values import (  # noqa: F401
    MALFORMED_CODES,
    MAX_ACTION_DIM,
    MAX_BUFFER_BYTES,
    MAX_FRAMES,
    MAX_HEADER_BYTES,
    MAX_ID,
    MAX_STATE_DIM,
    MAX_STR,
    MIN_VERSION,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    V1,
    V2,
    ErrorCode,
    ProtocolError,
    Validator,
    pack_header,
    unpack_header,
    v_action,
    v_action8,
    v_bool,
    v_flags,
    v_flags7,
    v_floats,
    v_int,
    v_list,
    v_map,
    v_maps,
    v_num,
    v_opt,
    v_opt_bool,
    v_opt_str,
    v_opt_uint,
    v_shape,
    v_str,
    v_strs,
    v_t3,
    v_uint,
)
from robots.spaces import ActionSpec

if TYPE_CHECKING:  # re-exported lazily (below): the robot side never imports `policies`
    from robots.protocol_dataplane import (  # noqa: F401
        CHUNK_DTYPE,
        DATAPLANE_VERSION,
        MAX_CHUNK_ROWS,
        PolicyEnd,
        PolicyFailure,
        PolicyReply,
        PolicyRequest,
        decode_policy_message,
        decode_policy_reply,
        encode_policy_end,
        encode_policy_failure,
        encode_policy_reply,
        encode_policy_request,
    )

#: The policy data plane's names (robots/protocol_dataplane.py), loaded on first use: that
#: codec speaks the policies' own types, which a bridge process has no use for.
_DATAPLANE_NAMES = frozenset({
    "CHUNK_DTYPE", "DATAPLANE_VERSION", "MAX_CHUNK_ROWS", "PolicyEnd", "PolicyFailure",
    "PolicyReply", "PolicyRequest", "decode_policy_message", "decode_policy_reply",
    "encode_policy_end", "encode_policy_failure", "encode_policy_reply",
    "encode_policy_request",
})


def __getattr__(name: str) -> Any:
    if name in _DATAPLANE_NAMES:
        from robots import protocol_dataplane

        value = getattr(protocol_dataplane, name)
        globals()[name] = value  # once: later lookups are plain module attributes
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_STR, _INT = {str}, {int}

_COMMON: dict[str, dict[str, Validator]] = {
    "hello": {"client": v_str},
    "reset": {"scene": v_map, "episode_id": v_str},
    "observe": {},
    "hold": {},
    "estop": {"reason": v_str},
    "rearm": {},
    "status": {},
    "heartbeat": {},
    "privileged": {},
    "end_episode": {"episode_id": v_str},
}
#: version -> request type -> {field: validator}. All listed fields are required; no others.
REQUESTS_BY_VERSION: dict[int, dict[str, dict[str, Validator]]] = {
    V1: {**_COMMON, "act": {"action": v_action8, "seq": v_uint, "sent_wall_ns": v_int, "episode_id": v_str}},
    V2: {**_COMMON, "act": {"action": v_action, "terminate": v_bool, "seq": v_uint, "sent_wall_ns": v_int,
                            "episode_id": v_str}},
}
#: The request types (the same in every version).
REQUESTS: dict[str, dict[str, Validator]] = REQUESTS_BY_VERSION[V2]
#: v1 requests a bridge refuses (UNSUPPORTED_VERSION) when its arm is not RT-2-shaped.
V1_NEEDS_RT2_ARM = frozenset({"hello", "reset", "observe", "act"})
BASE_KEYS = frozenset({"v", "type", "id"})
REPLY_BASE_KEYS = frozenset({"v", "type", "id", "ok", "sid", "t", "st"})
_ALLOWED_KEYS = {ver: {t: BASE_KEYS | set(spec) for t, spec in reqs.items()}
                 for ver, reqs in REQUESTS_BY_VERSION.items()}


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


# --- message codec ---------------------------------------------------------------------


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


def decode_request(parts: Sequence[bytes | memoryview], action: ActionSpec | None = None) -> Request:
    """Validate a request strictly against REQUESTS_BY_VERSION[its v]. Requests carry no
    buffers. `action`: the arm's declared space; a v2 act of another length is BAD_MESSAGE."""
    if not parts:
        raise ProtocolError("empty message")
    h = unpack_header(parts[0])
    ver, typ, rid = _base(h, REQUESTS)
    assert rid is not None  # _base refuses a request without a readable id
    if len(parts) != 1:
        raise ProtocolError(f"a {typ!r} request has exactly 1 part, got {len(parts)}", request_id=rid)
    spec = REQUESTS_BY_VERSION[ver][typ]
    allowed = _ALLOWED_KEYS[ver][typ]
    if not h.keys() <= allowed:
        extra = sorted(set(h) - allowed)[:8]
        raise ProtocolError(f"unknown fields for {typ!r} (protocol v{ver}): {extra}", request_id=rid)
    fields: dict[str, Any] = {}
    for name, check in spec.items():
        if name not in h:
            raise ProtocolError(f"{typ!r} request misses field {name!r}", request_id=rid)
        try:
            fields[name] = check(h[name], name)
        except ProtocolError as e:
            raise ProtocolError(f"{typ!r} request: {e}", e.code, rid) from None
    if ver >= V2 and typ == "act":
        n = len(fields["action"])
        if n == 0 or (action is not None and n != action.dim):
            want = action.label if action is not None else "at least 1"
            raise ProtocolError(f"act: action has {n} values, arm declares {want}", request_id=rid)
    return Request(typ, rid, fields, ver)


def reply_header(rtype: str, rid: int | None, ok: bool, sid: str, t: tuple[int, int, int] | list[int],
                 st: dict, fields: dict, v: int = PROTOCOL_VERSION) -> dict:
    """The reply header map (st: estopped, holding, in_episode, counters), in version v."""
    return {"v": v, "type": rtype, "id": rid, "ok": ok, "sid": sid, "t": t, "st": st, **fields}


def encode_reply(reply: Reply) -> list[Any]:
    t, s = reply.timing, reply.summary
    st = {"estopped": s.estopped, "holding": s.holding, "in_episode": s.in_episode, "counters": s.counters}
    h = reply_header(reply.type, reply.id, reply.ok, reply.sid, [t.recv_ns, t.send_ns, t.wall_ns], st, reply.fields,
                     reply.v)
    return [pack_header(h), *reply.buffers]


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


def act_command(req: Request) -> tuple[tuple[float, ...], bool]:
    """(values, terminate) of a decoded act request, in any version (v1: terminate >= 0.5)."""
    a = req.fields["action"]
    if req.v == V1:
        return tuple(a[1:]), a[0] >= 0.5
    return tuple(a), req.fields["terminate"]
