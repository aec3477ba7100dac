"""Kind `openpi` against a fake openpi policy server written here from the protocol:
a websockets server in a thread that sends its metadata first, speaks msgpack-numpy (checked
at the byte level: array maps with bin keys), answers `{"actions": (H, D), "server_timing"}`,
checks `Authorization: Api-Key`, answers `GET /healthz`, and can fail on purpose: an error
text frame + close 1011, a connection that dies mid-episode, a reply held back until after
the client gave up.

Campaigns on sim arms (real bridges, local Ray) show: every executed step's action is exactly
a row the server sent; a server connection that dies mid-episode aborts that episode (cause
`worker`, not counted) and the trial is re-queued and completes (exact counts, nothing stale
executed); a late reply is never executed.
"""

from __future__ import annotations

import asyncio
import http
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import msgpack
import numpy as np
import pytest
from sqlalchemy import select
from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from orchestrator.fleet_config import ArmConfig, SimArm
from orchestrator.runner import FleetRunner
from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
from orchestrator.store.models import Episode, Step
from policies.base import PartialBatch, PolicyInput, PolicyUnreachable
from policies.remote.msgpack_numpy import packb, unpackb
from policies.remote.openpi_client import (
    OpenpiClient,
    OpenpiRefused,
    OpenpiServerError,
    OpenpiUnavailable,
    healthz,
)
from policies.remote.openpi_policy import OpenpiPolicy
from protocols.loader import load_protocol
from robots.spaces import EE_STATE
from tests.integration.fleet_support import (
    FAST_PROTOCOL,
    IMAGE,
    check_invariants,
    ray_local,  # noqa: F401 - pytest fixture (module-scoped local Ray)
    run_to_done,
    started,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

H = 4  # rows per reply
STEP = 1e-4  # row 0's dx is STEP * the request's number: which reply a step came from
MAPPING = {  # the sim's ee_delta arm, libero-like keys, state padded to 8 values
    "images": {"observation/image": {"camera": "main"}},
    "size": None,
    "state": {"observation/state": [*EE_STATE.names, 0.0]},
    "prompt": "prompt",
    "actions": {"space": "ee_delta", "dim": 7, "gripper": "open_is_1"},
}
METADATA = {"policy": "fake-pi0", "version": "7", "action_horizon": H}


def reply_rows(n: int) -> np.ndarray:
    """The reply to request n: H rows within the sim's limits, row 0 naming n."""
    rows = np.zeros((H, 8))
    rows[:, 0] = STEP * n
    rows[:, 1] = 0.001 * np.arange(H)
    rows[:, 2] = -0.002
    rows[:, 6] = 1.0
    rows[:, 7] = 9.0  # an 8th dimension the preset drops (first 7 dims executed)
    return rows


class FakeOpenpiServer:
    """openpi's protocol from its description; a context manager (thread + event loop)."""

    def __init__(self, *, api_key: str | None = None, metadata: dict | None = None) -> None:
        self.api_key = api_key
        self.metadata = dict(METADATA if metadata is None else metadata)
        self.observations: list[dict[str, Any]] = []
        self.bin_keys: list[bool] = []  # per request: every array map's keys were msgpack bin
        self.sent: dict[int, np.ndarray] = {}  # request number -> the actions sent
        self.unanswered: set[int] = set()
        self.late_sent: set[int] = set()
        self.late_attempted: set[int] = set()
        self.die_on: set[int] = set()
        self.error_on: set[int] = set()
        self.late_on: set[int] = set()
        self.release_late = threading.Event()
        self.connections = 0
        self._n = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="fake-openpi", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10), "fake openpi server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_late.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "fake openpi server did not stop"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0, process_request=self._process_request,
                         compression=None, max_size=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return conn.respond(http.HTTPStatus.OK, "OK\n")
        if self.api_key and request.headers.get("Authorization") != f"Api-Key {self.api_key}":
            return conn.respond(http.HTTPStatus.UNAUTHORIZED, "bad key\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        with self._lock:
            self.connections += 1
        await ws.send(packb(self.metadata))
        try:
            async for msg in ws:
                assert isinstance(msg, bytes)
                with self._lock:
                    self._n += 1
                    n = self._n
                self.bin_keys.append(_array_keys_are_bin(msg))
                self.observations.append(unpackb(msg))
                if n in self.die_on:  # the server dies: no reply, the TCP connection drops
                    self.unanswered.add(n)
                    ws.transport.abort()
                    return
                if n in self.error_on:
                    self.unanswered.add(n)
                    await ws.send("Traceback (most recent call last):\n  File \"policy.py\", "
                                  "line 3, in infer\nValueError: image has the wrong size")
                    await ws.close(1011, "Internal server error. Traceback included in previous frame.")
                    return
                rows = reply_rows(n)
                reply = packb({"actions": rows, "server_timing": {"infer_ms": 2.5}})
                if n in self.late_on:  # held back until the client gave up, then sent anyway
                    self.unanswered.add(n)
                    await asyncio.get_running_loop().run_in_executor(
                        None, self.release_late.wait, 60)
                    try:
                        await ws.send(reply)
                        self.late_sent.add(n)
                    except ConnectionClosed:
                        pass
                    finally:
                        self.late_attempted.add(n)
                    continue
                self.sent[n] = rows
                await ws.send(reply)
        except ConnectionClosed:
            pass


def _array_keys_are_bin(msg: bytes) -> bool:
    """Decode without numpy: every map holding an `__ndarray__` key has only bin keys."""
    ok = True

    def hook(d: dict) -> dict:
        nonlocal ok
        if b"__ndarray__" in d or "__ndarray__" in d:
            ok = ok and all(isinstance(k, bytes) for k in d) and isinstance(d[b"dtype"], str)
        return d

    msgpack.unpackb(msg, object_hook=hook, raw=False)
    return ok


def _input(arm: str = "sim-0", seed: int = 0) -> PolicyInput:
    frame = np.random.default_rng(seed).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    return PolicyInput({"main": frame}, tuple(0.1 * i for i in range(7)), "pick up the cube",
                       arm=arm, state_names=EE_STATE.names)


def _policy(url: str, **over: Any) -> OpenpiPolicy:
    opts = {"url": url, "preset": "generic", "mapping": MAPPING, "control_hz": 10.0,
            "horizon": H, "execute_steps": 2, "call_timeout_s": 2.0, "connect_timeout_s": 5.0}
    opts.update(over)
    return OpenpiPolicy(opts, name="remote")


# --- the client and the policy, directly --------------------------------------------------


def test_metadata_first_msgpack_numpy_both_ways_and_healthz() -> None:
    with FakeOpenpiServer() as srv, OpenpiClient(srv.url, call_timeout_s=5) as c:
        assert healthz(srv.url, timeout_s=5)
        assert c.connect() == METADATA
        obs = {"observation/image": np.zeros((4, 4, 3), np.uint8), "prompt": "x"}
        r = c.infer(obs)
        assert np.array_equal(r.data["actions"], reply_rows(1)) and r.infer_ms == 2.5
        assert srv.bin_keys == [True]
        got = srv.observations[0]
        assert got["observation/image"].dtype == np.uint8 and got["prompt"] == "x"


def test_a_policy_step_sends_the_presets_observation_and_returns_the_servers_rows() -> None:
    with FakeOpenpiServer() as srv:
        policy = _policy(srv.url)
        try:
            res = policy.act([_input("a", 1), _input("b", 2)])
        finally:
            policy.close()
        assert srv.connections == 3  # the metadata probe, then one per arm
        sent = sorted(srv.sent)
        assert sorted(o.the_chunk.values[0, 0] for o in res.outputs) == [STEP * n for n in sent]
        for out in res.outputs:
            n = round(out.the_chunk.values[0, 0] / STEP)
            assert np.array_equal(out.the_chunk.values, srv.sent[n][:, :7])
        assert res.inference_s == pytest.approx(0.0025)
        obs = srv.observations[0]
        assert set(obs) == {"observation/image", "observation/state", "prompt"}
        assert obs["observation/image"].shape == (96, 96, 3)
        assert obs["observation/state"].tolist() == [0.1 * i for i in range(7)] + [0.0]
        assert policy.metadata.config["server_metadata"] == METADATA
        assert policy.metadata.io.camera_names == ("main",)


def test_the_checksum_changes_with_the_servers_metadata() -> None:
    with FakeOpenpiServer() as a, FakeOpenpiServer(metadata={**METADATA, "version": "8"}) as b:
        pa, pb, pc = _policy(a.url), _policy(a.url), _policy(b.url)
        for p in (pa, pb, pc):
            p.close()
    assert pa.metadata.checksum == pb.metadata.checksum != pc.metadata.checksum


def test_a_late_reply_is_never_read_as_the_answer_to_the_next_request() -> None:
    with FakeOpenpiServer() as srv, OpenpiClient(srv.url, call_timeout_s=0.5) as c:
        srv.late_on = {2}
        c.infer({"x": 1})
        with pytest.raises(OpenpiUnavailable, match=r"did not answer within 0.5 s"):
            c.infer({"x": 2})
        assert not c.connected
        srv.release_late.set()
        wait_for(lambda: 2 in srv.late_attempted, timeout_s=10, what="the late reply to be sent")
        r = c.infer({"x": 3})  # a new connection: its own answer, never request 2's
        assert round(r.data["actions"][0, 0] / STEP) == 3 and c.connects == 2


def test_a_connection_that_dies_is_unavailable_then_reconnects() -> None:
    with FakeOpenpiServer() as srv, OpenpiClient(srv.url, call_timeout_s=5) as c:
        srv.die_on = {1}
        with pytest.raises(OpenpiUnavailable, match="closed the connection"):
            c.infer({"x": 1})
        assert round(c.infer({"x": 2}).data["actions"][0, 0] / STEP) == 2


def test_an_oversize_reply_is_refused_and_the_connection_closed() -> None:
    with FakeOpenpiServer() as srv, OpenpiClient(srv.url, max_bytes=200) as c:
        with pytest.raises(OpenpiUnavailable, match="over the 200-byte limit"):
            c.infer({"x": 1})  # the reply (4 x 8 float64 + keys) is larger
        assert not c.connected


def test_an_error_text_frame_and_close_1011_is_the_servers_one_line() -> None:
    with FakeOpenpiServer() as srv:
        srv.error_on = {1}
        policy = _policy(srv.url)
        try:
            with pytest.raises(OpenpiServerError) as e:
                policy.act([_input()])
            assert str(e.value).endswith("failed: ValueError: image has the wrong size")
            assert "\n" not in str(e.value)
            assert policy.act([_input()]).outputs  # reconnected
        finally:
            policy.close()


def test_one_arm_unavailable_leaves_the_others_answered() -> None:
    with FakeOpenpiServer() as srv:
        policy = _policy(srv.url)
        try:
            policy.act([_input("a")])  # request 1 on a's connection
            srv.die_on = {2}  # the next request (a's or b's) dies; the other is answered
            with pytest.raises(PartialBatch) as e:
                policy.act([_input("a"), _input("b")])
        finally:
            policy.close()
    errs = e.value.errors
    dead = [i for i, x in enumerate(errs) if x is not None]
    assert len(dead) == 1 and isinstance(errs[dead[0]], PolicyUnreachable)
    assert e.value.outputs[dead[0]] is None and e.value.outputs[1 - dead[0]] is not None


def test_a_wrong_api_key_is_refused_and_the_right_one_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenpiServer(api_key="s3cret") as srv:
        monkeypatch.setenv("PI_KEY", "wrong")
        with pytest.raises(OpenpiRefused, match=r"HTTP 401 \(wrong or missing Api-Key"):
            _policy(srv.url, api_key_env="PI_KEY")
        with pytest.raises(OpenpiRefused, match="HTTP 401"):
            _policy(srv.url)
        monkeypatch.delenv("PI_KEY")
        with pytest.raises(ValueError, match="env var PI_KEY .* is not set"):
            _policy(srv.url, api_key_env="PI_KEY")
        monkeypatch.setenv("PI_KEY", "s3cret")
        p = _policy(srv.url, api_key_env="PI_KEY")
        try:
            assert p.act([_input()]).outputs
            assert "s3cret" not in repr(p.metadata.config)
        finally:
            p.close()
        assert srv.observations  # only the accepted client got through


def test_a_server_that_is_down_backs_off_between_connects() -> None:
    with FakeOpenpiServer() as srv:
        url = srv.url
    with OpenpiClient(url, connect_timeout_s=2) as c:
        with pytest.raises(OpenpiUnavailable, match="cannot be reached"):
            c.connect()
        with pytest.raises(OpenpiUnavailable, match="next try in"):
            c.connect()  # within the backoff: not even tried
    assert not healthz(url, timeout_s=2)


def test_roboarena_metadata_adds_the_endpoint_and_sends_reset() -> None:
    meta = {"image_resolution": [32, 48], "needs_wrist_camera": False, "n_external_cameras": 1,
            "needs_stereo_camera": False, "needs_session_id": False, "action_space": "ee_delta"}
    with FakeOpenpiServer(metadata=meta) as srv, pytest.raises(
            ValueError, match="action_space is 'ee_delta'"):
        _policy(srv.url)
    meta["action_space"] = "cartesian_position"
    mapping = {**MAPPING, "actions": {"space": "ee_pose", "dim": 7}}
    with FakeOpenpiServer(metadata=meta) as srv:
        p = _policy(srv.url, mapping=mapping)
        try:
            p.reset("a", "pick")
            p.act([_input("a")])
        finally:
            p.close()
        reset, obs = srv.observations
    assert reset == {"endpoint": "reset"}
    assert obs["endpoint"] == "infer" and obs["observation/image"].shape == (32, 48, 3)


# --- campaigns on sim arms ----------------------------------------------------------------


def _campaign(store: Any, url: str, **options: Any) -> int:
    opts = {"url": url, "preset": "generic", "mapping": MAPPING, "control_hz": 10.0,
            "horizon": H, "execute_steps": 2, "call_timeout_s": 2.0, **options}
    with store.write() as s:
        register_policy(s, PolicySpec(name="remote", kind="openpi",
                                      config={"kind": "openpi", "options": opts}))
        return create_campaign(s, name="remote", loaded=load_protocol(FAST_PROTOCOL),
                               policy_names=["remote"], trials_per_task=1, seed=1).id


@contextmanager
def _fleet(store: Any, tmp_path: Path, arms: int) -> Iterator[FleetRunner]:
    from orchestrator.simfleet import SimFleet

    cfgs = tuple(ArmConfig(name=f"sim-{i}", endpoint="tcp://127.0.0.1:*", timeout_ms=1000,
                           sim=SimArm(cameras=[{"name": "main", "size": IMAGE}]))
                 for i in range(arms))
    with SimFleet(0, arms=cfgs) as fleet:
        cfg = fleet.config().model_copy(update={"lease_s": 30.0})
        runner = FleetRunner(store, cfg, media_dir=str(tmp_path / "media"))
        with started(runner):
            yield runner


def _steps(store: Any) -> list[tuple[int, list[float], int, float]]:
    with store.read() as s:
        return [(e, list(a), i, inf) for e, a, i, inf in s.execute(
            select(Step.episode_id, Step.action, Step.chunk_index, Step.inference_ms))]


def _episodes(store: Any) -> list[Episode]:
    with store.read() as s:
        return list(s.scalars(select(Episode).order_by(Episode.id)))


def _check_every_step_was_sent(srv: FakeOpenpiServer, store: Any) -> set[int]:
    """Every step's action is exactly row chunk_index of a reply the server sent; returns the
    request numbers executed."""
    used = set()
    for _, action, idx, inference_ms in _steps(store):
        n = round(action[0] / STEP)
        assert n in srv.sent, f"step executed an action of request {n}, never answered"
        assert action == srv.sent[n][idx, :7].tolist()
        assert inference_ms == pytest.approx(2.5)  # the server's own infer_ms
        used.add(n)
    return used


@pytest.mark.usefixtures("ray_local")
def test_a_campaign_with_a_remote_policy_executes_exactly_what_the_server_sent(
        sqlite_store: Any, tmp_path: Path) -> None:
    store = sqlite_store
    with FakeOpenpiServer() as srv:
        cid = _campaign(store, srv.url)
        with _fleet(store, tmp_path, arms=2) as runner:
            run_to_done(runner, deadline_s=180)
        probe = _policy(srv.url)
        probe.close()
    audit = check_invariants(store, tmp_path / "media", [cid])
    assert audit.counted == audit.trials == 4 and not audit.aborted
    used = _check_every_step_was_sent(srv, store)
    assert used and all(srv.bin_keys)
    eps = _episodes(store)
    # the policy's identity (server metadata + config checksum) and the worker on every episode
    assert {e.policy_checksum for e in eps} == {probe.metadata.checksum}
    assert len({e.worker_instance for e in eps}) == 1 and eps[0].worker_instance
    obs = srv.observations[0]
    assert obs["observation/image"].shape == (96, 96, 3) and len(obs["observation/state"]) == 8
    assert isinstance(obs["prompt"], str) and obs["prompt"]


@pytest.mark.usefixtures("ray_local")
def test_a_server_dying_mid_episode_aborts_and_requeues_that_episode(
        sqlite_store: Any, tmp_path: Path) -> None:
    store = sqlite_store
    with FakeOpenpiServer() as srv:
        srv.die_on = {3}  # mid first episode (about 5 requests per episode)
        cid = _campaign(store, srv.url)
        with _fleet(store, tmp_path, arms=1) as runner:
            run_to_done(runner, deadline_s=180)
    audit = check_invariants(store, tmp_path / "media", [cid])
    eps = _episodes(store)
    aborted = [e for e in eps if e.status == "aborted"]
    assert audit.counted == audit.trials == 4 and len(eps) == 5 and len(aborted) == 1
    assert aborted[0].abort_cause == "worker" and not aborted[0].counted
    # the worker and the policy's identity on every episode, the aborted one too
    assert all(e.worker_instance for e in eps) and len({e.policy_checksum for e in eps}) == 1
    assert eps[0].policy_checksum
    assert "closed the connection" in (aborted[0].abort_reason or "")
    used = _check_every_step_was_sent(srv, store)
    assert srv.unanswered == {3} and 3 not in used


@pytest.mark.usefixtures("ray_local")
def test_a_late_reply_is_never_executed(sqlite_store: Any, tmp_path: Path) -> None:
    store = sqlite_store
    with FakeOpenpiServer() as srv:
        srv.late_on = {3}
        cid = _campaign(store, srv.url, call_timeout_s=1.0)

        def release(_: Any) -> None:  # the client gave up: now send the late reply
            if not srv.release_late.is_set() and any(e.status == "aborted" for e in _episodes(store)):
                srv.release_late.set()

        with _fleet(store, tmp_path, arms=1) as runner:
            run_to_done(runner, deadline_s=180, on_tick=release)
        assert srv.release_late.is_set()
    audit = check_invariants(store, tmp_path / "media", [cid])
    eps = _episodes(store)
    aborted = [e for e in eps if e.status == "aborted"]
    assert audit.counted == 4 and len(eps) == 5 and len(aborted) == 1
    assert aborted[0].abort_cause == "worker"
    assert "did not answer within 1 s" in (aborted[0].abort_reason or "")
    used = _check_every_step_was_sent(srv, store)
    assert 3 not in used and srv.unanswered == {3}


# --- the policy worker's data plane: each arm gets its own outcome -------------------------


def test_the_worker_answers_each_arm_its_own_outcome_of_a_partial_batch() -> None:
    """A remote policy whose server answered arm a but not arm b (PartialBatch): a gets its
    chunk, b a failure marked unavailable (PolicyUnavailable: cause `worker`, re-queued), c's
    policy-side error stays a PolicyError (counted)."""
    import threading as _t
    from collections.abc import Sequence

    from orchestrator.actors.dataplane import (
        PolicyClient,
        PolicyError,
        PolicyServer,
        PolicyUnavailable,
    )
    from policies.base import ActionChunk, Policy, PolicyBatchResult, PolicyMetadata, PolicyOutput
    from robots.types import ActionSpace

    gate = _t.Barrier(3, timeout=10)

    class Split(Policy):
        metadata = PolicyMetadata("split", "1", "test", ActionSpace(), "0" * 64)

        def reset(self, arm: str, instruction: str) -> None:
            pass

        def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
            outs: list[PolicyOutput | None] = []
            errs: list[BaseException | None] = []
            for x in inputs:
                if x.arm == "a":
                    outs.append(PolicyOutput(chunk=ActionChunk(np.ones((2, 7)), 10.0)))
                    errs.append(None)
                else:
                    outs.append(None)
                    errs.append(PolicyUnreachable("server gone") if x.arm == "b"
                                else ValueError("bad reply"))
            raise PartialBatch(outs, errs, 0.001)

    server = PolicyServer(Split(), max_batch=8, batch_wait_s=0.5)
    server.start()
    results: dict[str, Any] = {}

    def ask(arm: str) -> None:
        c = PolicyClient(server.endpoint, server.instance, timeout_s=10)
        try:
            gate.wait()
            results[arm] = c.act(_input(arm))
        except Exception as e:  # noqa: BLE001 - recorded for the assertions
            results[arm] = e
        finally:
            c.close()

    threads = [_t.Thread(target=ask, args=(a,)) for a in "abc"]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        server.stop()
    assert np.array_equal(results["a"].output.the_chunk.values, np.ones((2, 7)))
    assert isinstance(results["b"], PolicyUnavailable) and "server gone" in str(results["b"])
    assert isinstance(results["c"], PolicyError) and "bad reply" in str(results["c"])
