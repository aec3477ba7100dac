"""The `remote` detector: each episode POSTed as JSON to an HTTP server that judges it.

Request (one per episode; json-numpy arrays, policies/remote/json_numpy.py):

    POST <url>  Content-Type: application/json
    {"instruction": str, "task": str, "frames": {camera: (frames, H, W, 3) uint8 array}}

Reply: 200 with {"success": bool, "score": float in 0..1} (an optional "detail" string). Any
other status, a malformed reply or no reply within `timeout_s` is a one-line DetectorError:
the batch is not written (docs/detectors.md).
"""

from __future__ import annotations

import http.client
import time
import urllib.parse
from collections.abc import Sequence

from orchestrator.detectors.base import (
    DetectorError,
    DetectorInput,
    DetectorKind,
    Verdict,
    pick_frames,
)
from orchestrator.detectors.options import RemoteOptions
from orchestrator.detectors.scoring import parse_reply, remote_body
from policies.remote import json_numpy

MAX_REPLY_BYTES = 1 << 20


class RemoteDetector:
    kind = DetectorKind.REMOTE
    needs_frames = True

    def __init__(self, options: RemoteOptions, name: str = "remote") -> None:
        self.options = options
        self.name = name
        u = urllib.parse.urlsplit(options.url)
        if not u.hostname:
            raise DetectorError(f"detector {name!r}: url {options.url!r} names no host")
        self._scheme, self._host = u.scheme, u.hostname
        self._port = u.port or (443 if u.scheme == "https" else 80)
        self._path = (u.path or "/") + (f"?{u.query}" if u.query else "")

    def cameras(self, recorded: Sequence[str]) -> tuple[str, ...]:
        cam = self.options.camera
        return tuple(recorded) if cam is None else tuple(c for c in recorded if c == cam)

    def judge_batch(self, inputs: Sequence[DetectorInput]) -> list[Verdict]:
        return [self._judge(x) for x in inputs]

    def _judge(self, x: DetectorInput) -> Verdict:
        where = f"detector {self.name!r} ({self.options.url}), episode {x.episode_id}"
        frames = pick_frames(x, self.options.camera, self.options.frames, where)
        body = json_numpy.dumps(remote_body(x.instruction, x.task_key, frames)).encode()
        status, reason, text = self._post(body, where)
        if status != 200:
            raise DetectorError(f"{where}: HTTP {status} {reason}: {text[:120]!r}")
        return parse_reply(text, where)

    def _post(self, body: bytes, where: str) -> tuple[int, str, str]:
        timeout = self.options.timeout_s
        deadline = time.monotonic() + timeout
        cls = (http.client.HTTPSConnection if self._scheme == "https"
               else http.client.HTTPConnection)
        conn = cls(self._host, self._port, timeout=timeout)
        try:
            conn.request("POST", self._path, body=body,
                         headers={"Content-Type": "application/json"})
            if conn.sock is not None:
                conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
            resp = conn.getresponse()
            data = resp.read(MAX_REPLY_BYTES + 1)
            if time.monotonic() > deadline:
                raise TimeoutError
        except TimeoutError:
            raise DetectorError(f"{where}: no reply within timeout_s={timeout:g} s; check the "
                                "server or raise -o timeout_s (a new --version)") from None
        except (OSError, http.client.HTTPException) as e:
            raise DetectorError(f"{where}: cannot reach the server: "
                                f"{e.__class__.__name__}: {e}".splitlines()[0]) from None
        finally:
            conn.close()
        if len(data) > MAX_REPLY_BYTES:
            raise DetectorError(f"{where}: the reply exceeds {MAX_REPLY_BYTES} bytes")
        return resp.status, resp.reason, data.decode("utf-8", "replace")

    def close(self) -> None:
        pass
