"""`evalfleet policy serve` (policies/remote/openpi_server.py) spoken to by a raw `websockets`
client, byte for byte as openpi's clients do: metadata first, msgpack-numpy observations,
`{"actions", "server_timing"}` replies equal to what the hosted policy returns (a class kind,
`random`, the tiny VLA; `oracle` for the error path), concurrent connections batched into one act call, RoboArena's reset
endpoint, the Api-Key (HTTP 401), /healthz, oversize (1009) and malformed messages and policy
errors (one line + 1011) that never take the server down, and a clean stop. The CLI process
is started once and stopped with SIGTERM."""

from __future__ import annotations

import http.client
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from orchestrator.store import migrate
from orchestrator.store.campaigns import PolicySpec, register_policy
from orchestrator.store.db import Store, make_engine
from policies.base import Policy, PolicyBatchResult, PolicyInput
from policies.registry import build_policy
from policies.remote.msgpack_numpy import packb, unpackb
from policies.remote.openpi_server import OpenpiPolicyServer, ServeError, ServeOptions
from policies.remote.presets import preset
from tests.policy_kit import CHUNKED_KIND, ChunkedPolicy

REPO = Path(__file__).resolve().parents[2]
T = 20.0  # seconds: every blocking call's deadline
SIM_MAPPING: dict[str, Any] = {
    "images": {"observation/image": {"camera": "main", "role": "external"}},
    "size": None,
    "state": {"observation/state": ["ee_x", "ee_y", "ee_z", "ee_roll", "ee_pitch", "ee_yaw",
                                    "gripper"]},
    "actions": {"space": "ee_delta", "dim": 7, "gripper": "open_is_1"},
}
SIM = preset("generic", SIM_MAPPING)
CHUNKED = {"name": "chunked", "kind": CHUNKED_KIND, "options": {"horizon": 4, "execute_steps": 2}}


def observation(prompt: str = "pick up the can", *, seed: int = 0, **extra: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {"observation/image": rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
            "observation/state": rng.uniform(-0.5, 0.5, 7), "prompt": prompt, **extra}


class CountingPolicy(ChunkedPolicy):
    """ChunkedPolicy that records every act call's arms and every reset (a class kind:
    tests.integration.test_policy_serve:CountingPolicy)."""

    def __init__(self, options: Any = None, name: str = "counting") -> None:
        super().__init__(options, name=name)
        self.batches: list[tuple[str, ...]] = []
        self.resets: list[tuple[str, str]] = []
        self.gate: threading.Event | None = None  # set: act waits for it
        self.privileged: list[dict | None] = []

    def reset(self, arm: str, instruction: str) -> None:
        self.resets.append((arm, instruction))
        super().reset(arm, instruction)

    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        if self.gate is not None:
            assert self.gate.wait(T), "the test never opened the gate"
        self.batches.append(tuple(x.arm for x in inputs))
        self.privileged.extend(x.privileged for x in inputs)
        return super().act(inputs)


@contextmanager
def served(policy: Any, **options: Any) -> Iterator[OpenpiPolicyServer]:
    opts = ServeOptions(host="127.0.0.1", port=0, **options)
    with OpenpiPolicyServer(policy, options.pop("preset", SIM), opts) as server:
        yield server


@contextmanager
def client(server: OpenpiPolicyServer, key: str | None = None) -> Iterator[tuple[ClientConnection, dict]]:
    headers = {"Authorization": f"Api-Key {key}"} if key else None
    with connect(server.url, open_timeout=T, close_timeout=5, max_size=None, compression=None,
                 additional_headers=headers) as ws:
        meta = unpackb(ws.recv(timeout=T))
        yield ws, meta


def infer(ws: ClientConnection, obs: dict[str, Any]) -> dict[str, Any]:
    ws.send(packb(obs))
    reply = ws.recv(timeout=T)
    assert isinstance(reply, bytes), f"error from the server: {reply}"
    out = unpackb(reply)
    assert isinstance(out, dict)
    return out


def refused(ws: ClientConnection, message: bytes | str) -> str:
    """Send `message`; the server answers one error text frame, then closes with 1011."""
    ws.send(message)
    text = ws.recv(timeout=T)
    assert isinstance(text, str), "expected an error text frame"
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=T)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    return text


def assert_one_line(text: str) -> None:
    assert "\n" not in text and "Traceback" not in text and 'File "' not in text, text
    assert 0 < len(text) <= 300


def healthz(server: OpenpiPolicyServer) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=T)
    try:
        conn.request("GET", "/healthz")
        res = conn.getresponse()
        return res.status, res.read().decode()
    finally:
        conn.close()


def expected_chunk(config: dict[str, Any], arm: str, obs: dict[str, Any]) -> np.ndarray:
    """What an identical policy instance answers for `obs` as the first step of `arm`."""
    pol = build_policy(config)
    inp = SIM.input(obs, arm)
    pol.reset(arm, inp.instruction)
    return pol.act([inp]).outputs[0].the_chunk.values


# --- the protocol -----------------------------------------------------------------------------

def test_metadata_first_then_the_policys_actions_with_server_timing() -> None:
    with served(lambda: build_policy(CHUNKED)) as server:
        server.wait_ready(T)
        with client(server) as (ws, meta):
            reference = ChunkedPolicy(CHUNKED["options"], name="chunked").metadata
            assert meta["server"] == "evalfleet" and meta["preset"] == "generic"
            assert meta["policy"]["checksum"] == reference.checksum
            assert meta["policy"]["kind"] == CHUNKED_KIND
            assert meta["policy"]["chunking"]["horizon"] == 4
            obs = observation()
            for step in range(3):
                reply = infer(ws, obs)
                assert np.array_equal(reply["actions"], expected_chunk(CHUNKED, "conn-1", obs))
                assert reply["actions"].shape == (4, 7) and reply["actions"].dtype == np.float64
                timing = reply["server_timing"]
                assert timing["batch_size"] == 1 and timing["infer_ms"] >= 0
                assert ("prev_total_ms" in timing) == (step > 0)


def test_random_kind_actions_equal_what_the_policy_returns() -> None:
    config = {"name": "rand", "kind": "random", "options": {"seed": 7}}
    with served(lambda: build_policy(config)) as server:
        server.wait_ready(T)
        with client(server) as (ws, meta):
            assert meta["policy"]["kind"] == "random"
            obs = observation(seed=3)
            reply = infer(ws, obs)
            assert reply["actions"].shape == (1, 7)
            assert np.array_equal(reply["actions"], expected_chunk(config, "conn-1", obs))


def test_the_tiny_vla_is_served_with_its_checkpoint_checksum(tmp_path: Path) -> None:
    from orchestrator.weights import build_verified_policy, checksum_path
    from tests.policy_kit import build_tiny_vla

    path = build_tiny_vla(tmp_path / "tiny-vla", seed=0)
    config = {"name": "tiny-vla", "kind": "vla", "path": str(path), "options": {"device": "cpu"}}
    sha = checksum_path(path)
    with served(lambda: build_verified_policy(config, sha)) as server:
        server.wait_ready(120)
        with client(server) as (ws, meta):
            assert meta["policy"]["kind"] == "vla" and meta["policy"]["name"] == "tiny-vla"
            obs = observation("pick coke can", **{
                "observation/image": np.random.default_rng(1).integers(
                    0, 256, (224, 224, 3), dtype=np.uint8)})
            reply = infer(ws, obs)
    expected = build_policy(config)
    inp = SIM.input(obs, "conn-1")
    expected.reset("conn-1", inp.instruction)
    assert np.array_equal(reply["actions"], expected.act([inp]).outputs[0].the_chunk.values)
    assert reply["actions"].shape == (1, 7)


def test_sixteen_concurrent_clients_share_act_calls() -> None:
    pol = CountingPolicy({"horizon": 4, "execute_steps": 2})
    n = 16
    # a long window: the batch closes as soon as every open connection is in it
    with served(pol, max_batch=n, batch_wait_s=10.0) as server:
        server.wait_ready(T)
        barrier = threading.Barrier(n, timeout=T)
        replies: queue.Queue[tuple[int, Any]] = queue.Queue()

        def one(i: int) -> None:
            try:
                with client(server) as (ws, _):
                    barrier.wait()
                    replies.put((i, infer(ws, observation(seed=i))))
            except Exception as e:  # noqa: BLE001 - reported by the test thread
                replies.put((i, e))

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        got = [replies.get(timeout=3 * T) for _ in range(n)]
        for t in threads:
            t.join(T)
    errors = [r for _, r in got if isinstance(r, Exception)]
    assert not errors, errors
    want = ChunkedPolicy({"horizon": 4, "execute_steps": 2}).act(
        [SIM.input(observation(), "x")]).outputs[0].the_chunk.values
    assert all(np.array_equal(r["actions"], want) for _, r in got)
    sizes = [len(b) for b in pol.batches]
    assert sum(sizes) == n and max(sizes) > 1 and len(sizes) < n, sizes
    assert sorted(a for b in pol.batches for a in b) == sorted(f"conn-{i}" for i in range(1, n + 1))
    assert max(r["server_timing"]["batch_size"] for _, r in got) == max(sizes)


def test_each_connection_is_an_arm_whose_episode_starts_at_a_reset_or_a_new_prompt() -> None:
    pol = CountingPolicy({"horizon": 2, "execute_steps": 1})
    with served(pol) as server, client(server) as (ws, _), client(server) as (other, _):
        infer(ws, observation("pick"))
        infer(ws, observation("pick"))
        infer(other, observation("open the drawer"))
        ws.send(packb({"endpoint": "reset"}))
        assert ws.recv(timeout=T) == "reset successful"
        infer(ws, {**observation("pick"), "endpoint": "infer"})
        infer(ws, observation("place"))
    assert pol.resets == [("conn-1", "pick"), ("conn-2", "open the drawer"), ("conn-1", "pick"),
                          ("conn-1", "place")]


def test_an_evalfleet_clients_privileged_sim_state_reaches_the_policy() -> None:
    pol = CountingPolicy({"horizon": 2, "execute_steps": 1})
    with served(pol) as server:
        with client(server) as (ws, _):
            infer(ws, observation(**{"evalfleet/privileged": {"joints": [0.1, 0.2]}}))
            infer(ws, observation())
        with client(server) as (ws, _):
            text = refused(ws, packb(observation(**{"evalfleet/privileged": [1, 2]})))
    assert pol.privileged == [{"joints": [0.1, 0.2]}, None]
    assert text == "bad observation: TypeError: evalfleet/privileged must be a map, got list"


def test_inference_never_blocks_the_event_loop() -> None:
    pol = CountingPolicy({"horizon": 2, "execute_steps": 1})
    pol.gate = threading.Event()
    with served(pol) as server, client(server) as (ws, _):
        ws.send(packb(observation()))  # its act now waits for the gate
        assert healthz(server) == (200, "OK\n")
        with client(server) as (_, meta):  # a new connection is served meanwhile
            assert meta["policy"]["name"] == "counting"
        pol.gate.set()
        assert isinstance(ws.recv(timeout=T), bytes)


# --- refusals ---------------------------------------------------------------------------------

def test_wrong_or_missing_api_key_is_refused_at_the_handshake_with_401() -> None:
    with served(ChunkedPolicy(), api_key="s3cret") as server:
        for key in ("wrong", None):
            with pytest.raises(InvalidStatus) as e, client(server, key):
                pass
            assert e.value.response.status_code == 401
        assert healthz(server)[0] == 200  # a health probe needs no key
        with client(server, "s3cret") as (ws, _):
            assert infer(ws, observation())["actions"].shape == (16, 7)


def test_healthz_says_loading_then_ok_and_a_failed_load_is_one_line() -> None:
    loaded = threading.Event()

    def slow() -> Policy:
        assert loaded.wait(T)
        return ChunkedPolicy()

    with served(slow) as server:
        assert healthz(server)[0] == 503
        with pytest.raises(InvalidStatus) as e, client(server):
            pass
        assert e.value.response.status_code == 503
        loaded.set()
        server.wait_ready(T)
        assert healthz(server) == (200, "OK\n")

    def broken() -> Policy:
        raise FileNotFoundError("no checkpoint at /models/x\nmore")

    with served(broken) as server:
        with pytest.raises(ServeError) as err:
            server.wait_ready(T)
        assert_one_line(str(err.value))
        assert "no checkpoint at /models/x" in str(err.value)
        assert healthz(server)[0] == 500


def test_oversize_message_closes_that_connection_with_1009_and_others_keep_working() -> None:
    with served(ChunkedPolicy(), max_message_bytes=64 * 1024) as server:
        with client(server) as (ok, _), client(server) as (big, _):
            big.send(packb(observation(**{"observation/image": np.zeros((200, 200, 3), np.uint8)})))
            with pytest.raises(ConnectionClosed) as e:
                big.recv(timeout=T)
            assert e.value.rcvd is not None and e.value.rcvd.code == 1009
            assert infer(ok, observation())["actions"].shape == (16, 7)
        with client(server) as (again, _):
            assert infer(again, observation())["actions"].shape == (16, 7)


BAD_ARRAY = {b"__ndarray__": True, b"data": b"\x00" * 3, b"dtype": "<f8", b"shape": [7]}


@pytest.mark.parametrize(("message", "says"), [
    ("a text frame", "bad request: expected a binary msgpack message"),
    (b"\xc1\xc1 not msgpack", "bad request: msgpack-numpy decode"),
    (packb([1, 2, 3]), "bad request: expected a msgpack map"),
    (packb({**observation(), "observation/state": BAD_ARRAY}), "needs 56 bytes"),
    (packb({k: v for k, v in observation().items() if k != "prompt"}), "bad observation"),
    (packb({k: v for k, v in observation().items() if k != "observation/image"}),
     "no 'observation/image'"),
    (packb({**observation(), "endpoint": "act"}), "unknown endpoint 'act'"),
])
def test_malformed_messages_get_one_line_and_1011_without_affecting_others(
        message: bytes | str, says: str) -> None:
    with served(ChunkedPolicy()) as server, client(server) as (ok, _):
        with client(server) as (bad, _):
            text = refused(bad, message)
        assert says in text
        assert_one_line(text)
        assert infer(ok, observation())["actions"].shape == (16, 7)
        assert server.stats.refused == 1


def test_a_policy_error_is_one_line_on_the_wire_and_a_traceback_in_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    config = {"name": "oracle", "kind": "oracle", "options": {}}
    with served(lambda: build_policy(config)) as server:
        server.wait_ready(T)
        with client(server) as (ws, meta):
            assert meta["needs_privileged"] is True
            text = refused(ws, packb(observation()))  # no evalfleet/privileged: act raises
        assert text.startswith("policy act failed: ")
        assert_one_line(text)
        with client(server) as (ws, _):  # the server is still serving
            assert isinstance(ws, ClientConnection)
    assert "Traceback" in caplog.text and "policy act failed" in caplog.text


def test_stop_closes_open_connections_and_the_thread() -> None:
    server = OpenpiPolicyServer(ChunkedPolicy(), SIM, ServeOptions(port=0)).start()
    try:
        with client(server) as (ws, _):
            infer(ws, observation())
            server.stop()
            with pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=T)
            assert e.value.rcvd is not None and e.value.rcvd.code == 1001
        assert not server.running
    finally:
        server.stop()


# --- the CLI ----------------------------------------------------------------------------------

def test_serve_help_teaches_the_options() -> None:
    from orchestrator.cli import app

    res = CliRunner().invoke(app, ["policy", "serve", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for opt in ("--host", "--port", "--preset", "--mapping", "--max-batch", "--batch-wait-ms",
                "--max-message-mb", "--api-key-env", "--log-file", "--version", "/healthz"):
        assert opt in res.output, opt


def test_serve_refuses_a_preset_that_cannot_carry_the_policy_and_a_missing_key(
        tmp_path: Path) -> None:
    from orchestrator.cli import app

    cfg = tmp_path / "rand.yaml"
    cfg.write_text(yaml.safe_dump({"name": "rand", "kind": "random"}))
    res = CliRunner().invoke(app, ["policy", "serve", str(cfg), "--preset", "libero"])
    assert res.exit_code == 2 and "gripper open_is_1" in res.output
    mapping = tmp_path / "sim.yaml"
    mapping.write_text(yaml.safe_dump(SIM_MAPPING))
    res = CliRunner().invoke(app, ["policy", "serve", str(cfg), "--preset", "generic",
                                   "--mapping", str(mapping), "--api-key-env", "NO_SUCH_VAR_X"])
    assert res.exit_code == 2 and "NO_SUCH_VAR_X is not set" in res.output


@pytest.mark.parametrize("source", ["config file", "registered name"])
def test_serve_process_serves_a_policy_and_stops_on_sigterm(tmp_path: Path, source: str) -> None:
    env = {**os.environ, "SERVE_KEY": "k3y", "COLUMNS": "300"}
    if source == "config file":
        cfg = tmp_path / "rand.yaml"
        cfg.write_text(yaml.safe_dump({"name": "rand", "kind": "random", "options": {"seed": 7}}))
        target = str(cfg)
    else:
        url = f"sqlite:///{tmp_path / 'store.db'}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        with Store(engine) as store, store.write() as s:
            register_policy(s, PolicySpec(name="rand", kind="random",
                                          config={"kind": "random", "options": {"seed": 7}}))
        env["EVALFLEET_DATABASE_URL"] = url
        target = "rand"
    mapping = tmp_path / "sim.yaml"
    mapping.write_text(yaml.safe_dump(SIM_MAPPING))
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "evalfleet"), "policy", "serve", target, "--port", "0",
         "--preset", "generic", "--mapping", str(mapping), "--api-key-env", "SERVE_KEY",
         "--log-file", str(log)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout or ()],
                              daemon=True)
    reader.start()
    try:
        seen: list[str] = []
        while not any("ready" in ln for ln in seen):
            try:
                seen.append(lines.get(timeout=60))
            except queue.Empty:
                raise AssertionError(f"serve printed no 'ready' line: {seen}") from None
        port = int(re.search(r"ws://127\.0\.0\.1:(\d+)", "".join(seen)).group(1))  # type: ignore[union-attr]
        headers = {"Authorization": "Api-Key k3y"}
        with connect(f"ws://127.0.0.1:{port}", open_timeout=T, additional_headers=headers,
                     max_size=None) as ws:
            meta = unpackb(ws.recv(timeout=T))
            assert meta["policy"]["name"] == "rand" and meta["policy"]["kind"] == "random"
            assert infer(ws, observation())["actions"].shape == (1, 7)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        reader.join(T)
        rest = []
        while not lines.empty():
            rest.append(lines.get_nowait())
        assert any("stopped" in ln for ln in rest), seen + rest
        assert "conn-1 opened" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
