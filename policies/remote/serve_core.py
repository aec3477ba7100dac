"""The pure core of `evalfleet policy serve` (policies/remote/openpi_server.py is its shell).

Everything the server decides without a socket, a thread or a clock of its own:

- **batching**: `keep_collecting` says whether the server should wait for more requests
  before running the batch it holds. openpi's protocol is strictly request/reply per
  connection, so a connection that already has a request in the batch cannot send another:
  when every open connection is in the batch, waiting is pointless. Otherwise the server waits
  (at most the batch window, at most `max_batch`) for connections that are new or whose
  rhythm is not known yet, and for those predicted to send within the window
  (orchestrator/batching.py `expected_soon`, the rule evalfleet's own policy data plane uses).
- **requests**: `parse_request` turns one websocket message into an `InferRequest` or a
  `ResetRequest` (RoboArena's variant: an `endpoint` key "infer" | "reset"), or raises
  `BadRequest` with one line (not msgpack, not a map, a bad array, an unknown endpoint).
- **episodes**: `needs_reset` says when a connection (one "arm" of the hosted policy) starts
  a new episode: its first request, after an explicit reset, or when its prompt changes.
- **replies**: `server_timing` (openpi's `infer_ms`, `prev_total_ms`, plus the batch size and
  the time the request waited) and `error_line` (one line, never a traceback).
- **handshake**: `api_key_ok` (`Authorization: Api-Key <key>`), `server_metadata` (the map
  sent first: the hosted policy's identity and the preset) and `preset_mismatch` (a preset
  that cannot carry the policy's inputs and actions is refused before serving: nothing is
  converted on the server).
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from orchestrator.batching import expected_soon
from policies.remote.msgpack_numpy import WireFormatError, unpackb
from robots.spaces import PolicyIO

__all__ = [
    "BadRequest",
    "Endpoint",
    "InferRequest",
    "ResetRequest",
    "Rhythm",
    "api_key_ok",
    "error_line",
    "keep_collecting",
    "needs_reset",
    "next_rhythm",
    "parse_request",
    "preset_mismatch",
    "server_metadata",
    "server_timing",
]

#: (last arrival, smoothed period) of one connection's requests; None: not known yet.
Rhythm = tuple[float | None, float | None]

MAX_PERIOD_S = 5.0  # longer gaps between a connection's requests are not its control period
ENDPOINT_KEY = "endpoint"
RESET_REPLY = "reset successful"  # RoboArena's answer to a reset message (a text frame)
MAX_ERROR_CHARS = 300


class BadRequest(ValueError):
    """A message the server refuses; the text is one line saying what was wrong."""


class Endpoint(StrEnum):
    INFER = "infer"
    RESET = "reset"


@dataclass(frozen=True)
class InferRequest:
    """An observation to act on (the message without its `endpoint` key)."""

    observation: Mapping[str, Any]


@dataclass(frozen=True)
class ResetRequest:
    """RoboArena's `{"endpoint": "reset", ...}`: the connection's episode ends here."""

    info: Mapping[str, Any]


# --- batching ---------------------------------------------------------------------------------

def next_rhythm(prev: Rhythm | None, now: float) -> Rhythm:
    """A connection's rhythm after a request arrived at `now` (pure): the period is smoothed
    over the gaps between its requests; gaps over MAX_PERIOD_S (an episode boundary, a pause)
    do not count."""
    last, period = prev or (None, None)
    if last is not None:
        gap = now - last
        if 0 < gap < MAX_PERIOD_S:
            period = gap if period is None else 0.7 * period + 0.3 * gap
    return (now, period)


def keep_collecting(*, in_batch: Collection[str], open_arms: Mapping[str, Rhythm], now: float,
                    until: float, max_batch: int,
                    returning: Mapping[str, float] | None = None) -> bool:
    """Should the server wait for more requests before running the batch? (pure)

    `in_batch`: the connections with a request in the batch; `open_arms`: every open
    connection and its rhythm; `until`: the end of the batch window; `returning`: when a
    connection answered by an earlier batch is expected back (serve_core.expected_back), so
    that clients that ask again as soon as they are answered (a closed loop) are gathered
    into one batch instead of settling into two half batches that alternate."""
    if len(in_batch) >= max_batch or now >= until:
        return False
    others = {arm: r for arm, r in open_arms.items() if arm not in in_batch}
    if not others:
        return False  # every connection is waiting for this batch: nobody else can send
    if any(period is None for _, period in others.values()):
        return True  # a new connection, or one whose rhythm is unknown yet: give it the window
    if any(arm in others and t <= until for arm, t in (returning or {}).items()):
        return True
    return expected_soon(others, set(in_batch), now, until)


#: a reply-to-next-request gap longer than this is not a closed loop (an arm executing its
#: chunk, a pause): such a connection is not waited for by its think time
MAX_THINK_S = 0.05


def next_think(prev: float | None, replied_at: float | None, arrived: float) -> float | None:
    """A connection's think time (from our reply to its next request), smoothed (pure); None
    until known, and gaps over MAX_THINK_S reset it."""
    if replied_at is None:
        return prev
    gap = arrived - replied_at
    if not 0 <= gap <= MAX_THINK_S:
        return None
    return gap if prev is None else 0.7 * prev + 0.3 * gap


def expected_back(replied_at: float, think: float | None) -> float | None:
    """When a connection just answered is expected to ask again; None: not expected soon."""
    return None if think is None else replied_at + think


# --- requests ---------------------------------------------------------------------------------

def parse_request(message: bytes | str, *, max_bytes: int | None = None) -> InferRequest | ResetRequest:
    """One client message -> the request it makes (pure); BadRequest with one line otherwise."""
    if isinstance(message, str):
        raise BadRequest("expected a binary msgpack message, got a text frame")
    try:
        obj = unpackb(message, max_bytes=max_bytes)
    except WireFormatError as e:
        raise BadRequest(str(e)) from e
    if not isinstance(obj, dict):
        raise BadRequest(f"expected a msgpack map (observation key -> value), got "
                         f"{type(obj).__name__}")
    keys = [k.decode("utf-8", "replace") if isinstance(k, bytes) else k for k in obj]
    if len(set(keys)) != len(keys):
        raise BadRequest("the observation has a key twice (once as str, once as bytes)")
    obs = dict(zip(keys, obj.values(), strict=True))
    endpoint = obs.pop(ENDPOINT_KEY, Endpoint.INFER.value)
    if isinstance(endpoint, bytes):
        endpoint = endpoint.decode("utf-8", "replace")
    if endpoint == Endpoint.RESET:
        return ResetRequest(obs)
    if endpoint != Endpoint.INFER:
        raise BadRequest(f"unknown endpoint {endpoint!r:.40}: expected 'infer' or 'reset'")
    if not obs:
        raise BadRequest("the observation is an empty map")
    return InferRequest(obs)


def needs_reset(current: str | None, instruction: str, reset_requested: bool) -> bool:
    """Does this request start a new episode on its connection? (pure) `current`: the
    instruction the connection's episode started with (None: no episode yet)."""
    return reset_requested or current is None or current != instruction


# --- replies ----------------------------------------------------------------------------------

def server_timing(*, infer_s: float, policy_s: float, queue_s: float, batch_size: int,
                  prev_total_s: float | None) -> dict[str, float | int]:
    """openpi's `server_timing` map (infer_ms; prev_total_ms from the second request of a
    connection on) plus what batching adds: the policy's own seconds for the batch, the
    batch size and how long the request waited before its batch started."""
    out: dict[str, float | int] = {
        "infer_ms": infer_s * 1000.0,
        "policy_ms": policy_s * 1000.0,
        "queue_ms": queue_s * 1000.0,
        "batch_size": batch_size,
    }
    if prev_total_s is not None:
        out["prev_total_ms"] = prev_total_s * 1000.0
    return out


def error_line(what: str, e: BaseException | str) -> str:
    """`what: ErrorType: message`, one line, at most MAX_ERROR_CHARS (never a traceback)."""
    if isinstance(e, BaseException):
        text = " ".join(str(e).split())
        detail = f"{type(e).__name__}: {text}" if text else type(e).__name__
        if isinstance(e, BadRequest):
            detail = text
    else:
        detail = " ".join(e.split())
    line = f"{what}: {detail}" if what else detail
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


# --- handshake --------------------------------------------------------------------------------

API_KEY_SCHEME = "api-key"


def api_key_ok(authorization: str | None, key: str) -> bool:
    """Does an `Authorization` header carry `Api-Key <key>`? (pure; constant-time compare)"""
    if not authorization:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != API_KEY_SCHEME:
        return False
    return hmac.compare_digest(given.strip().encode(), key.encode())


def server_metadata(policy: Mapping[str, Any], *, preset: str, max_batch: int,
                    needs_privileged: bool, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The map sent first on every connection (openpi: the server's metadata).

    `policy`: `PolicyMetadata.to_dict()` of the hosted policy (name, version, kind,
    checksum, io, chunking, action space), so a client records exactly which policy answered;
    `extra`: what the preset adds (e.g. RoboArena's PolicyServerConfig keys)."""
    out: dict[str, Any] = dict(extra or {})
    out.update({
        "server": "evalfleet",
        "protocol": "openpi",
        "preset": preset,
        "max_batch": max_batch,
        "needs_privileged": needs_privileged,
        "endpoints": [e.value for e in Endpoint],  # RoboArena's reset is understood too
        "policy": dict(policy),
    })
    return out


# --- the hosted policy and the preset ---------------------------------------------------------

PRIVILEGED_KEY = "evalfleet/privileged"  # an evalfleet client's sim ground truth (optional)


def preset_mismatch(policy: str, io: PolicyIO, preset: str, wire: PolicyIO) -> str | None:
    """Why `preset` (its PolicyIO `wire`: what clients send and get back) cannot carry the
    hosted policy's inputs and actions, in one line; None when it fits. Nothing is converted
    on the server: the preset replies in exactly the space the policy emits."""
    if (io.emits, io.action_dim, io.gripper) != (wire.emits, wire.action_dim, wire.gripper):
        return (f"policy {policy} emits {io.label} (gripper {io.gripper.value}) but preset "
                f"{preset} replies {wire.label} (gripper {wire.gripper.value}); pick the preset "
                "that matches, or --preset generic with a --mapping whose actions say "
                f"{{space: {io.emits.value}, dim: {io.action_dim}, gripper: {io.gripper.value}}}")
    missing = [n for n in io.camera_names if n not in wire.camera_names]
    if missing:
        return (f"policy {policy} reads camera {missing[0]!r}; preset {preset} names cameras "
                f"{list(wire.camera_names)}: map an image key to it (--mapping images)")
    for role in set(io.cameras):
        if wire.cameras.count(role) < io.cameras.count(role):
            return (f"policy {policy} reads a {role.value} camera; preset {preset} has "
                    f"{wire.cameras.count(role)}")
    state = [n for n in io.state if n not in wire.state]
    if state:
        return (f"policy {policy} reads state {state}; preset {preset} carries "
                f"{list(wire.state)}")
    return None
