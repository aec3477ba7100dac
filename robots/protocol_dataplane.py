"""The policy data plane's codec: RobotActor (PolicyClient) <-> PolicyWorker (PolicyServer),
one DEALER -> ROUTER connection per arm (orchestrator/actors/dataplane.py does the sockets).
Part of robots.protocol (import it from there). docs/architecture.md ("Policy serving").

Same framing as the bridge wire: part 0 a msgpack map (the header), then raw buffers. No
pickle, no msgpack extension types. Strict like the bridge codec: every message type has an
exact set of fields (unknown or missing fields raise ProtocolError), every size is bounded,
and its own message version `v` (DATAPLANE_VERSION; another version is UNSUPPORTED_VERSION).

    request  {"v", "t": "act", "id", "arm", "instruction", "state", "state_names", "privileged",
              "frames"}  (state_names: the arm's name of each state value, [] if not known)
             + one raw part per camera frame (descriptors as on the bridge wire)
    end      {"v", "t": "end", "arm"}   (the arm's episode ended; no reply)
    reply    {"v", "id", "ok": true, "action", "chunk", "tokens", "text", "plan",
              "hold_reason", "inference_s", "batch", "queued_s"}
             + one raw part: the chunk, H x D little-endian float64, row-major
             (`chunk`: {"shape": [H, D], "dtype": "float64", "hz", "terminate_at"};
             `action`: RT-2's [terminate, 7 values] for a single-step policy, else nil)
    failure  {"v", "id" (nil if unreadable), "ok": false, "error", "unavailable"}
             (unavailable: a remote policy did not answer, not the policy's fault)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.base import ActionChunk, PolicyInput, PolicyOutput
from robots.protocol_actions import action_from_rt2_wire, action_to_rt2_wire
from robots.protocol_frames import pack_frames, unpack_frames
from robots.protocol_values import (
    MAX_ACTION_DIM,
    MAX_FRAMES,
    MAX_ID,
    MAX_STATE_DIM,
    ErrorCode,
    ProtocolError,
    Validator,
    pack_header,
    unpack_header,
    v_action8,
    v_bool,
    v_int,
    v_list,
    v_map,
    v_maps,
    v_num,
    v_opt,
    v_str,
    v_uint,
)

#: The data plane's own message version (independent of the bridge protocol's).
DATAPLANE_VERSION = 2  # 2: act carries state_names; a failure may say `unavailable`
MAX_CHUNK_ROWS = 4096  # H
MAX_TOKENS = 8192
MAX_TEXT = 32 * 1024  # generated text / plan (the header stays under MAX_HEADER_BYTES)
MAX_ERROR = 1000
CHUNK_DTYPE = np.dtype("<f8")
CHUNK_DTYPE_NAME = "float64"


# --- typed messages --------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRequest:
    """One arm's query: decoded on the worker side."""

    id: int
    input: PolicyInput


@dataclass(frozen=True)
class PolicyEnd:
    """The arm's episode ended: the worker stops expecting its rhythm."""

    arm: str


@dataclass(frozen=True)
class PolicyReply:
    """The worker's answer to one request (it also crosses Ray: PolicyWorker.act)."""

    output: PolicyOutput
    inference_s: float  # the model's own time for the batch this request was part of
    batch_size: int
    queued_s: float  # time this request waited for its batch to start (worker side)


@dataclass(frozen=True)
class PolicyFailure:
    """The worker could not answer: the policy raised, or the request was malformed;
    `unavailable`: a policy that runs elsewhere did not answer (policies.base.PolicyUnreachable)."""

    error: str
    unavailable: bool = False


# --- validators ------------------------------------------------------------------------------


def _v_text(v: Any, name: str) -> str:
    if type(v) is not str or len(v) > MAX_TEXT:
        raise ProtocolError(f"field {name!r} must be a string of at most {MAX_TEXT} chars, "
                            f"got {type(v).__name__}{f' of {len(v)}' if type(v) is str else ''}")
    return v


def _v_pos_num(v: Any, name: str) -> float:
    x = v_num(v, name)
    if not 0 < x < float("inf"):
        raise ProtocolError(f"field {name!r} must be a finite number > 0, got {v!r}")
    return x


def _v_seconds(v: Any, name: str) -> float:
    x = v_num(v, name)
    if not 0 <= x < float("inf"):
        raise ProtocolError(f"field {name!r} must be finite seconds >= 0, got {v!r}")
    return x


_v_state = v_list(v_num, max_n=MAX_STATE_DIM)
_v_state_names = v_list(v_str, max_n=MAX_STATE_DIM)
_v_tokens = v_list(v_int, max_n=MAX_TOKENS)
_v_opt_text = v_opt(_v_text)
_v_opt_map = v_opt(v_map)


def _v_shape2(v: Any, name: str) -> tuple[int, int]:
    if (type(v) is not list or len(v) != 2 or not all(type(n) is int for n in v)
            or not 1 <= v[0] <= MAX_CHUNK_ROWS or not 1 <= v[1] <= MAX_ACTION_DIM):
        raise ProtocolError(f"field {name!r} {v!r} is not [H, D] with 1 <= H <= {MAX_CHUNK_ROWS}, "
                            f"1 <= D <= {MAX_ACTION_DIM}")
    return v[0], v[1]


_REQUEST: dict[str, dict[str, Validator]] = {
    "act": {"id": v_uint, "arm": v_str, "instruction": v_str, "state": _v_state,
            "state_names": _v_state_names, "privileged": _v_opt_map, "frames": v_maps},
    "end": {"arm": v_str},
}
_REPLY_OK: dict[str, Validator] = {
    "id": v_uint, "ok": v_bool, "action": v_opt(v_action8), "chunk": v_map,
    "tokens": v_opt(_v_tokens), "text": _v_opt_text, "plan": _v_opt_text,
    "hold_reason": _v_opt_text, "inference_s": _v_seconds, "batch": v_uint, "queued_s": _v_seconds,
}
_REPLY_FAIL: dict[str, Validator] = {"id": v_opt(v_uint), "ok": v_bool, "error": _v_text,
                                     "unavailable": v_bool}
_CHUNK: dict[str, Validator] = {"shape": _v_shape2, "dtype": v_str, "hz": _v_pos_num,
                                "terminate_at": v_opt(v_uint)}


def _fields(h: dict, spec: dict[str, Validator], what: str, rid: int | None) -> dict[str, Any]:
    """Exactly `spec`'s keys (plus `v`, `t` already read), each validated."""
    extra = sorted(set(h) - set(spec) - {"v", "t"})
    if extra:
        raise ProtocolError(f"{what}: unknown fields {extra[:8]} (data plane v{DATAPLANE_VERSION})",
                            request_id=rid)
    out: dict[str, Any] = {}
    for name, check in spec.items():
        if name not in h:
            raise ProtocolError(f"{what}: missing field {name!r}", request_id=rid)
        try:
            out[name] = check(h[name], name)
        except ProtocolError as e:
            raise ProtocolError(f"{what}: {e}", e.code, rid) from None
    return out


def _header(parts: Sequence[Any], what: str) -> tuple[dict, int | None]:
    if not parts:
        raise ProtocolError(f"{what}: empty message")
    h = unpack_header(_buffer(parts[0]))
    rid = h.get("id")
    rid = rid if type(rid) is int and 0 <= rid <= MAX_ID else None
    ver = h.get("v")
    if ver != DATAPLANE_VERSION or type(ver) is not int:
        raise ProtocolError(f"{what}: data plane version {ver!r} not supported (this side speaks "
                            f"{DATAPLANE_VERSION}): update the orchestrator and its policy workers "
                            "together", ErrorCode.UNSUPPORTED_VERSION, rid)
    return h, rid


def _buffer(part: Any) -> Any:
    return part.buffer if hasattr(part, "buffer") else part


# --- requests --------------------------------------------------------------------------------


def encode_policy_request(rid: int, inp: PolicyInput) -> list[Any]:
    """[header, frame buffers...] of an act request (frames as contiguous arrays: sendable
    without a copy into bytes)."""
    if len(inp.frames) > MAX_FRAMES:
        raise ProtocolError(f"policy request: {len(inp.frames)} cameras, limit {MAX_FRAMES}",
                            ErrorCode.TOO_LARGE)
    descs, bufs = pack_frames(inp.frames)
    header = {"v": DATAPLANE_VERSION, "t": "act", "id": rid, "arm": inp.arm,
              "instruction": inp.instruction, "state": [float(v) for v in inp.proprio],
              "state_names": list(inp.state_names), "privileged": inp.privileged, "frames": descs}
    return [pack_header(header), *bufs]


def encode_policy_end(arm: str) -> bytes:
    return pack_header({"v": DATAPLANE_VERSION, "t": "end", "arm": arm})


def decode_policy_message(parts: Sequence[Any]) -> PolicyRequest | PolicyEnd:
    """A message the worker received (act request or end), strictly. Frames are read-only,
    zero-copy views of the received parts. ProtocolError carries the request id if readable."""
    h, rid = _header(parts, "policy request")
    t = h.get("t")
    spec = _REQUEST.get(t) if type(t) is str else None
    if spec is None:
        raise ProtocolError(f"policy request: unknown type {str(t)[:64]!r} (act, end)",
                            ErrorCode.UNKNOWN_TYPE, rid)
    f = _fields(h, spec, f"policy {t}", rid)
    if t == "end":
        if len(parts) != 1:
            raise ProtocolError(f"policy end has {len(parts)} parts, expected 1")
        return PolicyEnd(f["arm"])
    if len(parts) != 1 + len(f["frames"]):
        raise ProtocolError(f"policy request has {len(parts)} parts, its header describes "
                            f"{len(f['frames'])} frames", request_id=rid)
    try:
        frames = unpack_frames(f["frames"], parts)
    except ProtocolError as e:
        raise ProtocolError(f"policy request: {e}", e.code, rid) from None
    return PolicyRequest(rid if rid is not None else 0, PolicyInput(
        frames=frames, proprio=tuple(f["state"]), instruction=f["instruction"],
        privileged=f["privileged"], arm=f["arm"], state_names=tuple(f["state_names"])))


# --- replies ---------------------------------------------------------------------------------


def encode_policy_reply(rid: int, reply: PolicyReply) -> list[Any]:
    """[header, chunk buffer]. Raises ProtocolError for an output the wire cannot carry
    (chunk too large, text too long): the worker answers that as a failure."""
    out = reply.output
    chunk = out.the_chunk
    _v_shape2([chunk.horizon, chunk.dim], "chunk.shape")
    for name, s in (("text", out.text), ("plan", out.plan), ("hold_reason", out.hold_reason)):
        _v_opt_text(s, name)
    if out.tokens is not None and len(out.tokens) > MAX_TOKENS:
        raise ProtocolError(f"policy reply: {len(out.tokens)} tokens, limit {MAX_TOKENS}",
                            ErrorCode.TOO_LARGE)
    header = {
        "v": DATAPLANE_VERSION, "id": rid, "ok": True,
        "action": None if out.action is None else action_to_rt2_wire(out.action),
        "chunk": {"shape": [chunk.horizon, chunk.dim], "dtype": CHUNK_DTYPE_NAME,
                  "hz": float(chunk.control_hz), "terminate_at": chunk.terminate_at},
        "tokens": None if out.tokens is None else [int(t) for t in out.tokens],
        "text": out.text, "plan": out.plan, "hold_reason": out.hold_reason,
        "inference_s": float(reply.inference_s), "batch": int(reply.batch_size),
        "queued_s": max(0.0, float(reply.queued_s)),
    }
    values = np.ascontiguousarray(chunk.values, dtype=CHUNK_DTYPE)
    return [pack_header(header), values.tobytes()]


def encode_policy_failure(rid: int | None, error: str, *, unavailable: bool = False) -> bytes:
    return pack_header({"v": DATAPLANE_VERSION, "id": rid, "ok": False, "error": error[:MAX_ERROR],
                        "unavailable": unavailable})


def _chunk(meta: dict, buf: Any, rid: int | None) -> ActionChunk:
    c = _fields(meta, _CHUNK, "policy reply chunk", rid)
    if c["dtype"] != CHUNK_DTYPE_NAME:
        raise ProtocolError(f"policy reply chunk: dtype {c['dtype'][:32]!r} not supported "
                            f"({CHUNK_DTYPE_NAME} only)", request_id=rid)
    h, d = c["shape"]
    mv = memoryview(buf).cast("B")
    need = h * d * CHUNK_DTYPE.itemsize
    if mv.nbytes != need:
        raise ProtocolError(f"policy reply: chunk buffer has {mv.nbytes} bytes; shape {[h, d]} "
                            f"needs {need}", request_id=rid)
    term = c["terminate_at"]
    if term is not None and term >= h:
        raise ProtocolError(f"policy reply chunk: terminate_at {term} outside 0..{h - 1}",
                            request_id=rid)
    values = np.frombuffer(mv, dtype=CHUNK_DTYPE).reshape(h, d)
    return ActionChunk(values, c["hz"], 0, term)


def decode_policy_reply(parts: Sequence[Any]) -> tuple[int | None, PolicyReply | PolicyFailure]:
    """(request id, reply or failure), strictly; the chunk's values are a read-only copy."""
    h, rid = _header(parts, "policy reply")
    if "t" in h:
        raise ProtocolError("policy reply: unknown fields ['t']", request_id=rid)
    if h.get("ok") is False:
        f = _fields(h, _REPLY_FAIL, "policy failure", rid)
        if len(parts) != 1:
            raise ProtocolError(f"policy failure has {len(parts)} parts, expected 1", request_id=rid)
        return f["id"], PolicyFailure(f["error"], f["unavailable"])
    f = _fields(h, _REPLY_OK, "policy reply", rid)
    if len(parts) != 2:
        raise ProtocolError(f"policy reply has {len(parts)} parts, expected 2 (header, chunk)",
                            request_id=rid)
    a = f["action"]
    try:
        out = PolicyOutput(
            action=None if a is None else action_from_rt2_wire(a),
            tokens=None if f["tokens"] is None else tuple(f["tokens"]),
            text=f["text"], plan=f["plan"], hold_reason=f["hold_reason"],
            chunk=_chunk(f["chunk"], _buffer(parts[1]), rid))
    except ValueError as e:
        if isinstance(e, ProtocolError):
            raise
        raise ProtocolError(f"policy reply: {e}", request_id=rid) from None
    return f["id"], PolicyReply(out, f["inference_s"], f["batch"], f["queued_s"])

