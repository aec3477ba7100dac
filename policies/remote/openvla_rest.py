"""Policy kind `openvla_rest`: an OpenVLA model served by OpenVLA's own `vla-scripts/deploy.py`.

OpenVLA pins its own transformers and torch, so it runs in its own environment, usually on
its own GPU host, behind a small REST server. Its protocol (deploy.py):

    POST <url>/act    body: json-numpy {"image": HxWx3 uint8, "instruction": str,
                                        "unnorm_key": str}
    reply 200         body: json-numpy, the 7-dim action (float32):
                      x y z roll pitch yaw deltas (un-normalised with the `unnorm_key`
                      dataset's statistics) and the gripper, 0 = close .. 1 = open
    on failure        deploy.py logs the traceback and answers 200 with the JSON string "error"

    policies:
      - name: openvla-bridge
        kind: openvla_rest
        options: {url: "http://gpu-host:8000", unnorm_key: bridge_orig, timeout_s: 2.0}

The gripper: OpenVLA's RLDS data loader aligns every dataset's gripper action to 0 = close,
1 = open, and the model emits that, so the kind declares `GripperConvention.OPEN_IS_1` (RT-2's
and the sim's convention; an arm with the other convention gets the explicit flip adapter).
The space is RT-2's ee_delta[7], one action per query (no chunk), at `control_hz`.

The server is stateless and answers one image at a time: each arm has its own keep-alive
connection and a batch's calls run concurrently; every call has a deadline, and a call that
fails or is late drops its connection, so a late reply is never executed
(policies/remote/rest_client.py). Each arm fails on its own (PartialBatch): one line naming
the policy, the arm, the URL and what to check. No answer in time or no connection is
PolicyUnreachable (the episode aborts, the trial is re-queued, not counted against it); an
HTTP error, deploy.py's "error" answer or a reply that is not an action is the policy's
failure (the episode aborts with cause `policy`).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from policies.base import (
    ActionChunk,
    PartialBatch,
    Policy,
    PolicyBatchResult,
    PolicyInput,
    PolicyMetadata,
    PolicyOutput,
    check_frame,
    check_inputs,
    sha256_of,
)
from policies.remote import json_numpy
from policies.remote.rest_client import RemoteCallError, RestArms, RestReply
from robots.spaces import CameraRole, GripperConvention, PolicyIO, SpaceKind
from robots.types import ActionSpace

__all__ = ["OpenVLARestError", "OpenVLARestOptions", "OpenVLARestPolicy", "act_body",
           "parse_action", "prepare_image"]

VERSION = "1"
KIND = "openvla_rest"
ACTION_DIM = 7
ACT_PATH = "/act"


class OpenVLARestError(RuntimeError):
    """The server's reply is not an action; the text is one line."""


class OpenVLARestOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(description="the deploy.py server's root, e.g. http://gpu-host:8000 "
                                 "(/act is appended)")
    unnorm_key: str = Field(min_length=1, description="the dataset whose statistics "
                            "un-normalise the actions, e.g. bridge_orig for openvla-7b")
    camera: str | None = Field(None, description="the arm camera sent as `image` "
                               "(unset: the first frame)")
    image_size: str | None = Field("224x224", description="HxW the frame is resized to "
                                   "before sending (OpenVLA's input size); unset: as captured")
    timeout_s: float = Field(2.0, gt=0.0, le=600.0,
                             description="deadline of each /act call, connect included")
    control_hz: float = Field(5.0, gt=0.0, le=1000.0, description="the rate the actions "
                              "are for (Bridge: 5 Hz)")
    max_reply_bytes: int = Field(1 << 20, ge=256, le=1 << 30)
    max_connections: int = Field(64, ge=1, le=1024, description="arms served at once")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        u = urllib.parse.urlsplit(v)
        if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment:
            raise ValueError(f"url {v!r}: expected http://host:port (or https://...)")
        return v.rstrip("/")

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v:
            parse_size(v)
        return v or None


def parse_size(text: str) -> tuple[int, int]:
    """"224x224" -> (224, 224) (height, width); ValueError otherwise."""
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or not (8 <= int(h) <= 4096
                                                            and 8 <= int(w) <= 4096):
        raise ValueError(f"image_size {text!r}: expected HxW with 8..4096 each, e.g. 224x224")
    return int(h), int(w)


def prepare_image(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """The frame OpenVLA gets: HxWx3 uint8, resized to `size` (h, w) when it differs."""
    if size is None or frame.shape[:2] == size:
        return np.ascontiguousarray(frame)
    import cv2

    h, w = size
    shrink = h <= frame.shape[0] and w <= frame.shape[1]
    return np.ascontiguousarray(cv2.resize(
        frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR))


def act_body(image: np.ndarray, instruction: str, unnorm_key: str) -> bytes:
    """The /act request body, json-numpy encoded like deploy.py's clients send it."""
    return json_numpy.dumps({"image": image, "instruction": instruction,
                             "unnorm_key": unnorm_key}).encode()


def parse_action(status: int, reason: str, body: bytes, *, max_bytes: int) -> np.ndarray:
    """A deploy.py reply -> the 7 action values (float64); OpenVLARestError (one line, what
    the server said) for anything else. The reply is the json-numpy array itself; a JSON
    list of 7 numbers or {"action": ...} are accepted too (servers built on deploy.py)."""
    if status != 200:
        raise OpenVLARestError(f"HTTP {status} {reason}: {_snippet(body)}")
    try:
        value: Any = json_numpy.loads(body, max_bytes=max_bytes)
    except json_numpy.WireFormatError as e:
        raise OpenVLARestError(f"reply is not json-numpy: {e}") from e
    if isinstance(value, Mapping) and "action" in value:
        value = value["action"]
    if isinstance(value, str):
        raise OpenVLARestError(f"the server answered {value[:80]!r} (deploy.py does when "
                               "inference raised: its log has the traceback; check "
                               "unnorm_key and the image)")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise OpenVLARestError(f"reply is not an array of numbers: {_snippet(body)}") from e
    if arr.shape != (ACTION_DIM,):
        raise OpenVLARestError(f"reply has shape {arr.shape}; an OpenVLA action has "
                               f"{ACTION_DIM} values (x y z roll pitch yaw gripper)")
    if not np.isfinite(arr).all():
        raise OpenVLARestError(f"reply has non-finite values: {arr.tolist()}")
    return arr


def _snippet(body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace").replace("\n", " ").strip()
    return text or "(empty body)"


class OpenVLARestPolicy(Policy):
    """An OpenVLA deploy.py server as a policy: one /act call per arm per step."""

    Options = OpenVLARestOptions
    requires_path = False
    needs_privileged = False

    @classmethod
    def declared_io(cls, options: OpenVLARestOptions) -> PolicyIO:
        return PolicyIO(emits=SpaceKind.EE_DELTA, action_dim=ACTION_DIM,
                        gripper=GripperConvention.OPEN_IS_1, cameras=(CameraRole.EXTERNAL,),
                        camera_names=(options.camera,) if options.camera else ())

    def __init__(self, options: OpenVLARestOptions | dict[str, Any],
                 name: str = KIND) -> None:
        self.options = (options if isinstance(options, OpenVLARestOptions)
                        else OpenVLARestOptions(**options))
        o = self.options
        self.size = parse_size(o.image_size) if o.image_size else None
        config = {"kind": KIND, "version": VERSION, "options": o.model_dump()}
        self.metadata = PolicyMetadata(
            name=name, version=VERSION, kind=KIND,
            action_space=ActionSpace(control_hz=o.control_hz), checksum=sha256_of(config),
            config=config, io=self.declared_io(o))
        self.where = f"openvla_rest policy {name!r}"
        self.arms = RestArms(o.url, timeout_s=o.timeout_s, max_reply_bytes=o.max_reply_bytes,
                             max_workers=o.max_connections, where=self.where)
        self.server_ms: dict[str, float] = {}  # arm -> its last call's wall time

    def reset(self, arm: str, instruction: str) -> None:
        """deploy.py keeps no episode state: nothing to tell the server."""

    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        """One /act call per input, concurrently. When some arms get no action, raises
        PartialBatch: the others' outputs, and per failed arm its one-line error (a
        RemoteCallError, i.e. PolicyUnreachable, when the server did not answer in time)."""
        t0 = time.perf_counter()
        check_inputs(inputs, where=self.where)
        o = self.options
        bodies = []
        for i, x in enumerate(inputs):
            frame = prepare_image(check_frame(x, i, o.camera, self.where), self.size)
            bodies.append((x.arm, act_body(frame, x.instruction, o.unnorm_key)))
        outs: list[PolicyOutput | None] = []
        errors: list[BaseException | None] = []
        for x, r in zip(inputs, self.arms.post(ACT_PATH, bodies), strict=True):
            try:
                if isinstance(r, BaseException):
                    raise r
                outs.append(self._output(x.arm, r))
                errors.append(None)
            except (RemoteCallError, OpenVLARestError) as e:
                outs.append(None)
                errors.append(e)
        if any(e is not None for e in errors):
            raise PartialBatch(outs, errors, time.perf_counter() - t0)
        return PolicyBatchResult([o_ for o_ in outs if o_ is not None], time.perf_counter() - t0)

    def _output(self, arm: str, reply: RestReply) -> PolicyOutput:
        try:
            values = parse_action(reply.status, reply.reason, reply.body,
                                  max_bytes=self.options.max_reply_bytes)
        except OpenVLARestError as e:
            raise OpenVLARestError(f"{self.where}: POST {self.arms.url}{ACT_PATH} for arm "
                                   f"{arm!r}: {e}") from e
        self.server_ms[arm] = reply.seconds * 1e3
        hz = self.options.control_hz
        return PolicyOutput(chunk=ActionChunk(values.reshape(1, ACTION_DIM), hz), chunk_hz=hz)

    def close(self) -> None:
        self.arms.close()
