"""Policy kind `openpi`: a policy served elsewhere behind openpi's websocket protocol.

    name: pi05-droid
    kind: openpi
    options:
      url: ws://gpu-host:8000
      preset: droid              # droid | libero | aloha | generic (+ mapping:)
      api_key_env: PI_API_KEY    # the NAME of an env var holding the key (never the key)
      control_hz: 15             # the rate the server's action rows are planned for
      horizon: 10                # rows per reply (declared; the reply decides)
      execute_steps: 8           # rows executed before the next query

One websocket connection per arm (openpi's server answers one observation at a time): `act`
sends each arm's observation over its own connection concurrently, each with its own
deadline (policies/remote/openpi_client.py). A call that misses its deadline or loses its
connection closes that connection (its late reply is never read) and the arm's output is a
`PolicyUnreachable`: the episode aborts with cause `worker` and its trial is re-queued, not
counted against it. The next call reconnects (backoff between failed connects). A server
whose policy raised (error text + close 1011) fails the arm's step with the server's one-line
message: a policy fault. `inference_s` is the server's own `server_timing.infer_ms` (the
largest in the batch; the round trip when the server does not say).

The server's metadata (its first message) is read when the policy is built, kept in
`metadata.config["server_metadata"]`, and part of `metadata.checksum` with the options that
decide the actions (url, preset, mapping, rate, chunking; not timeouts): the episodes record
exactly which served policy ran. A RoboArena-style server (its metadata is a
`PolicyServerConfig`: image_resolution, needs_wrist_camera, action_space, ...) is recognised:
each request carries `endpoint: infer`, an episode start sends `endpoint: reset`, and the
preset's image size follows the server's resolution.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.base import (
    Chunking,
    PartialBatch,
    Policy,
    PolicyBatchResult,
    PolicyInput,
    PolicyMetadata,
    PolicyOutput,
    PolicyUnreachable,
    check_inputs,
    sha256_of,
)
from policies.remote.openpi_client import (
    Backoff,
    OpenpiClient,
    OpenpiReply,
    OpenpiUnavailable,
)
from policies.remote.presets import Preset, PresetError, preset, roboarena_config
from robots.spaces import PolicyIO
from robots.types import ActionSpace

KIND = "openpi"


class OpenpiOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(pattern=r"^wss?://[^\s/:]+(:\d+)?(/\S*)?$", description="ws://host:port")
    preset: Literal["droid", "libero", "aloha", "generic"] = "droid"
    mapping: dict[str, Any] | None = Field(
        default=None, description="generic: the whole mapping; a named preset: overrides")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="name of the env var holding the Api-Key")
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    call_timeout_s: float = Field(default=5.0, gt=0, le=300)
    control_hz: float = Field(default=15.0, gt=0, le=1000)
    horizon: int = Field(default=10, ge=1, le=4096)
    execute_steps: int = Field(default=8, ge=1, le=4096)
    max_message_mb: float = Field(default=64.0, gt=0, le=1024)
    backoff_max_s: float = Field(default=10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _fits(self) -> OpenpiOptions:
        if self.execute_steps > self.horizon:
            raise ValueError(f"execute_steps {self.execute_steps} > horizon {self.horizon}")
        try:
            preset(self.preset, self.mapping)
        except PresetError as e:
            raise ValueError(str(e)) from None
        return self


def api_key(opts: OpenpiOptions, name: str) -> str | None:
    """The key named by `api_key_env`, read from the environment where the policy runs."""
    if opts.api_key_env is None:
        return None
    key = os.environ.get(opts.api_key_env)
    if not key:
        raise ValueError(f"policy {name!r} (kind openpi): env var {opts.api_key_env} (api_key_env) "
                         "is not set where the policy runs; export the server's Api-Key there")
    return key


class PolicyChanged(RuntimeError):
    """The server now answers with another policy than the one this policy was built against
    (its metadata differs on a new connection): nothing it answers may count under this
    policy. Counted against the trial like any policy error, so a campaign whose server was
    swapped gives its trials up and says why instead of mixing two policies."""


def json_safe(v: Any, depth: int = 0) -> Any:
    """Server metadata as JSON for the store and the checksum (arrays as lists, bytes as hex)."""
    if depth > 8:
        return str(v)[:200]
    if isinstance(v, dict):
        return {str(k if not isinstance(k, bytes) else k.decode("utf-8", "replace")):
                json_safe(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x, depth + 1) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= 1024 else f"<array {list(v.shape)} {v.dtype.str}>"
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v[:256].hex()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)[:200]


class OpenpiPolicy(Policy):
    """See the module docstring."""

    needs_privileged = False
    Options = OpenpiOptions

    @classmethod
    def declared_io(cls, options: OpenpiOptions) -> PolicyIO:
        return preset(options.preset, options.mapping).io

    def __init__(self, options: OpenpiOptions | dict, name: str = "openpi") -> None:
        o = options if isinstance(options, OpenpiOptions) else OpenpiOptions(**options)
        self.options, self.name = o, name
        self._key = api_key(o, name)
        self._clients: dict[str, OpenpiClient] = {}
        self._checked: dict[str, int] = {}  # arm -> the connection whose metadata was checked
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix=f"openpi-{name}")
        probe = self._client("(metadata)")
        try:
            server = probe.connect()
        finally:
            probe.close()
        self.server_metadata: dict[str, Any] = json_safe(server)
        self.roboarena = roboarena_config(server)
        p = preset(o.preset, o.mapping)
        if self.roboarena is not None:
            p = self.roboarena.adapt(p, name)
        self.preset: Preset = p
        # identity: what decides the actions (not timeouts, nor where the key is kept)
        ident = o.model_dump(include={"url", "preset", "mapping", "control_hz", "horizon",
                                      "execute_steps"})
        config = {"kind": KIND, "options": ident, "server_metadata": self.server_metadata}
        self.metadata = PolicyMetadata(
            name=name, version=str(server.get("version", "1"))[:40], kind=KIND,
            action_space=ActionSpace(control_hz=o.control_hz), checksum=sha256_of(config),
            config=config, io=p.io, chunking=Chunking(o.horizon, o.execute_steps))

    def _client(self, arm: str) -> OpenpiClient:
        o = self.options
        return OpenpiClient(o.url, api_key=self._key, connect_timeout_s=o.connect_timeout_s,
                            call_timeout_s=o.call_timeout_s,
                            max_bytes=int(o.max_message_mb * 1024 * 1024),
                            backoff=Backoff(max_s=o.backoff_max_s),
                            name=f"policy {self.name!r} arm {arm!r}")

    def client(self, arm: str) -> OpenpiClient:
        """The arm's own connection (created on first use)."""
        with self._lock:
            c = self._clients.get(arm)
            if c is None:
                c = self._clients[arm] = self._client(arm)
            return c

    def reset(self, arm: str, instruction: str) -> None:
        if self.roboarena is not None:
            try:
                self.client(arm).reset({"endpoint": "reset"})
            except OpenpiUnavailable as e:
                raise PolicyUnreachable(str(e)) from e

    def _same_policy(self, arm: str, c: OpenpiClient) -> None:
        """On every new connection, before its first observation: the server still serves
        the policy this one was built against (its metadata is unchanged)."""
        meta = c.connect()
        if self._checked.get(arm) == c.connects:
            return
        now = json_safe(meta)
        if now != self.server_metadata:
            c.close()
            changed = sorted(k for k in {*now, *self.server_metadata}
                             if now.get(k) != self.server_metadata.get(k))
            raise PolicyChanged(
                f"policy {self.name!r}: the server at {self.options.url} now serves another "
                f"policy (its metadata changed: {', '.join(changed)[:200]}); episodes never "
                "count under a policy that did not run them: register the new server as a "
                "new policy version and evaluate it in a new campaign")
        self._checked[arm] = c.connects

    def _one(self, x: PolicyInput) -> tuple[PolicyOutput, float]:
        obs = self.preset.request(x)
        if self.roboarena is not None:
            obs["endpoint"] = "infer"
        c = self.client(x.arm)
        self._same_policy(x.arm, c)
        reply: OpenpiReply = c.infer(obs)
        chunk = self.preset.chunk(reply.data, self.options.control_hz)
        infer_s = reply.infer_ms / 1000.0 if reply.infer_ms is not None else reply.round_trip_s
        return PolicyOutput(chunk=chunk, chunk_hz=self.options.control_hz), infer_s

    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        check_inputs(inputs, where=f"policy {self.name!r}")
        o = self.options
        futures: list[Future[tuple[PolicyOutput, float]]] = [
            self._pool.submit(self._one, x) for x in inputs]
        # each call has its own deadlines; this guard only catches a send that never returns
        guard = time.monotonic() + o.connect_timeout_s + o.call_timeout_s + 1.0
        outputs: list[PolicyOutput | None] = []
        errors: list[BaseException | None] = []
        infer: list[float] = []
        for x, f in zip(inputs, futures, strict=True):
            try:
                out, s = f.result(timeout=max(0.0, guard - time.monotonic()))
                outputs.append(out)
                errors.append(None)
                infer.append(s)
            except FutureTimeout:
                self.client(x.arm).close()  # unblocks the call; its reply is never read
                outputs.append(None)
                errors.append(PolicyUnreachable(
                    f"policy {self.name!r} arm {x.arm!r}: server at {o.url} did not answer in time"))
            except OpenpiUnavailable as e:
                outputs.append(None)
                errors.append(PolicyUnreachable(str(e)))
            except Exception as e:  # noqa: BLE001 - the server's policy raised, bad reply: the arm's fault
                outputs.append(None)
                errors.append(e)
        inference_s = max(infer, default=0.0)
        if all(e is None for e in errors):
            return PolicyBatchResult([out for out in outputs if out is not None], inference_s)
        if len(inputs) == 1 and errors[0] is not None:
            raise errors[0]
        raise PartialBatch(outputs, errors, inference_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            c.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def openpi_io(options: dict[str, Any]) -> PolicyIO:
    """What an `openpi` policy config emits and reads, without connecting (for matching)."""
    return OpenpiPolicy.declared_io(OpenpiOptions(**options))

