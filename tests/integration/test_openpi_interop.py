"""Interop with PyPI's openpi packages, each run in its own venv (benchmarks/interop_venv.py:
`pip install openpi-client openpi-server`, numpy 1.x; never an evalfleet dependency):

(a) openpi-client's WebsocketClientPolicy talks to `evalfleet policy serve`: it reads the
    server's metadata, gets for each observation exactly the chunk the hosted policy
    computed from it, and a wrong Api-Key is refused at the handshake (HTTP 401);
(b) evalfleet's kind `openpi` talks to openpi-server's WebsocketPolicyServer wrapping a
    trivial policy: the server's metadata is kept with the policy, every action is the one
    the server computed, and the server's policy raising (traceback text + close 1011) is one
    clear line.

Skipped, with the reason, when the venv cannot be built (no package registry, no python3.11).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from benchmarks.interop_venv import InteropUnavailable, openpi_venv
from policies.base import PolicyInput
from policies.registry import build_policy
from policies.remote.openpi_client import OpenpiServerError, healthz

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[2]
START_S = 90.0  # an upper bound for a server process to come up, polled
KEY = "interop-s3cret"
STATE = ("j1", "j2", "j3", "j4", "j5", "j6")
MAPPING = {"images": {"observation/image": {"camera": "front", "role": "external"}},
           "state": {"observation/state": list(STATE)},
           "prompt": "prompt",
           "actions": {"space": "joint_position", "dim": 7, "gripper": "open_is_1"}}


@pytest.fixture(scope="module")
def openpi_python() -> Path:
    try:
        return openpi_venv()
    except InteropUnavailable as e:
        pytest.skip(f"PyPI openpi packages unavailable here: {e}")


def expected_chunk(state: np.ndarray, horizon: int = 4) -> np.ndarray:
    """tests.policy_kit.ChunkedPolicy (space joint_position): the observed joints, joint 0
    ramped by 0.001 per row, gripper open."""
    rows = np.zeros((horizon, 7))
    rows[:, :6] = state
    rows[:, 0] += 0.001 * (np.arange(horizon) + 1)
    rows[:, 6] = 1.0
    return rows


@contextmanager
def evalfleet_serve(tmp: Path, *, api_key: str | None = None) -> Iterator[str]:
    """`evalfleet policy serve` of the chunked test policy on a free port; yields ws://..."""
    import yaml

    (tmp / "policy.yaml").write_text(yaml.safe_dump({
        "name": "chunked-joint", "kind": "tests.policy_kit:ChunkedPolicy",
        "options": {"space": "joint_position", "horizon": 4, "execute_steps": 2}}))
    (tmp / "mapping.yaml").write_text(yaml.safe_dump(MAPPING))
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300"}
    cmd = [str(Path(sys.executable).parent / "evalfleet"), "policy", "serve",
           str(tmp / "policy.yaml"), "--preset", "generic", "--mapping", str(tmp / "mapping.yaml"),
           "--port", "0", "--log-file", str(tmp / "serve.log")]
    if api_key is not None:
        env["INTEROP_KEY"] = api_key
        cmd += ["--api-key-env", "INTEROP_KEY"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout or ()],
                     daemon=True).start()
    try:
        url, deadline, seen = None, time.monotonic() + START_S, []
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"policy serve not ready within {START_S} s: {seen}") from None
            seen.append(line.rstrip())
            m = re.search(r"listening on (ws://[\d.]+:\d+)", line)
            url = m.group(1) if m else url
            if "ready" in line and url is not None:
                break
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


OPENPI_CLIENT = """
import json, sys
import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy

url, key = sys.argv[1], sys.argv[2] or None
try:
    client = WebsocketClientPolicy(host=url, api_key=key)
except Exception as e:  # the handshake refused
    print(json.dumps({"refused": f"{type(e).__name__}: {e}"}))
    sys.exit(0)
replies = []
for i in range(3):
    state = np.arange(6, dtype=np.float64) / 10 + i
    obs = {"observation/image": np.full((224, 224, 3), i, np.uint8),
           "observation/state": state, "prompt": "pick coke can"}
    r = client.infer(obs)
    replies.append({"state": state.tolist(), "actions": r["actions"].tolist(),
                    "dtype": str(r["actions"].dtype), "timing": sorted(r["server_timing"])})
print(json.dumps({"metadata": client.get_server_metadata(), "replies": replies}))
"""


def run_openpi_client(python: Path, url: str, key: str | None) -> dict:
    p = subprocess.run([str(python), "-c", OPENPI_CLIENT, url, key or ""], capture_output=True,
                       text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_pypi_openpi_client_drives_evalfleet_policy_serve(openpi_python: Path,
                                                          tmp_path: Path) -> None:
    with evalfleet_serve(tmp_path, api_key=KEY) as url:
        got = run_openpi_client(openpi_python, url, KEY)
        refused = run_openpi_client(openpi_python, url, "wrong-key")
        anonymous = run_openpi_client(openpi_python, url, None)
    meta = got["metadata"]
    assert meta["policy"]["name"] == "chunked-joint" and meta["preset"] == "generic"
    assert len(got["replies"]) == 3
    for r in got["replies"]:
        assert r["dtype"] == "float64" and "infer_ms" in r["timing"]
        assert np.array_equal(np.asarray(r["actions"]), expected_chunk(np.asarray(r["state"])))
    assert "401" in refused["refused"] and "401" in anonymous["refused"], (refused, anonymous)


OPENPI_SERVER = """
import sys
import numpy as np
from openpi_client import base_policy
from openpi_server import WebsocketPolicyServer

class Ramp(base_policy.BasePolicy):
    def infer(self, obs):
        if obs["prompt"] == "fail please":
            raise ValueError("asked to fail")
        assert obs["observation/image"].shape == (224, 224, 3)
        rows = np.zeros((4, 7))
        rows[:, :6] = obs["observation/state"]
        rows[:, 0] += 0.001 * (np.arange(4) + 1)
        rows[:, 6] = 1.0
        return {"actions": rows}

WebsocketPolicyServer(Ramp(), host="127.0.0.1", port=int(sys.argv[1]),
                      metadata={"policy": "ramp", "version": "7"}).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def pypi_openpi_server(python: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([str(python), "-c", OPENPI_SERVER, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"ws://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while not healthz(url, timeout_s=1.0):
            assert proc.poll() is None, (proc.stderr.read() if proc.stderr else "")[-2000:]
            assert time.monotonic() < deadline, f"openpi-server not up within {START_S} s"
            time.sleep(0.1)  # polling interval of a deadline-bounded wait
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def frame_input(arm: str, state: tuple[float, ...], prompt: str = "pick coke can") -> PolicyInput:
    return PolicyInput(frames={"front": np.zeros((96, 128, 3), np.uint8)}, proprio=state,
                       instruction=prompt, arm=arm, state_names=STATE)


def test_evalfleet_openpi_kind_drives_pypi_openpi_server(openpi_python: Path) -> None:
    with pypi_openpi_server(openpi_python) as url:
        policy = build_policy({"name": "ramp", "kind": "openpi", "options": {
            "url": url, "preset": "generic", "mapping": MAPPING, "horizon": 4,
            "execute_steps": 2, "call_timeout_s": 10.0}})
        try:
            states = [tuple(float(v) for v in np.arange(6) / 10 + i) for i in range(2)]
            outs, _ = policy.act([frame_input("a1", states[0]), frame_input("a2", states[1])])
            again, _ = policy.act([frame_input("a1", states[1])])
            with pytest.raises(OpenpiServerError) as e:
                policy.act([frame_input("a2", states[0], prompt="fail please")])
        finally:
            policy.close()
    assert policy.metadata.config["server_metadata"] == {"policy": "ramp", "version": "7"}
    assert policy.metadata.version == "7"
    for out, state in zip([*outs, *again], [*states, states[1]], strict=True):
        assert np.array_equal(out.the_chunk.values, expected_chunk(np.asarray(state)))
    msg = str(e.value)
    assert "ValueError: asked to fail" in msg and "\n" not in msg, msg
