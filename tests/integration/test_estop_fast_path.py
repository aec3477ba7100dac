"""`evalfleet fleet stop` from a shell latches the bridge's e-stop before the command returns,
by the bridge's own monotonic clock (CLOCK_MONOTONIC is system-wide). How fast is a benchmark
figure, not a test assertion: benchmarks/safety_timing.py, BENCHMARKS.md."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from orchestrator.simfleet import SimFleet
from robots import estop
from robots.client import BridgeClient
from robots.protocol import MIN_VERSION, SUPPORTED_VERSIONS


def test_fast_path_speaks_a_version_every_bridge_understands() -> None:
    # estop is the same message in every version; v1 also reaches v1-only bridges
    assert estop.PROTOCOL_VERSION in SUPPORTED_VERSIONS and estop.PROTOCOL_VERSION == MIN_VERSION


def test_fleet_stop_from_a_shell_latches_before_the_command_returns(tmp_path: Path) -> None:
    exe = shutil.which("evalfleet", path=str(Path(sys.executable).parent))
    assert exe, "the evalfleet console script is not installed in this venv"
    with SimFleet(2, image_size="64x64") as fleet:
        cfg = fleet.config()
        fleet_yaml = tmp_path / "fleet.yaml"
        fleet_yaml.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        for _ in range(2):
            for arm in cfg.arms:
                with BridgeClient(arm.endpoint, timeout_ms=2000) as c:
                    c.rearm()
                    assert not c.status()["estopped"]
            t0 = time.monotonic_ns()
            res = subprocess.run([exe, "fleet", "stop", "--fleet", str(fleet_yaml)], check=False,
                                 capture_output=True, text=True, timeout=60)
            t_exit = time.monotonic_ns()
            assert res.returncode == 0, res.stdout + res.stderr
            assert "sim-1: e-stopped" in res.stdout and "sim-2: e-stopped" in res.stdout
            for arm in cfg.arms:
                with BridgeClient(arm.endpoint, timeout_ms=2000) as c:
                    st = c.status()
                assert st["estopped"]
                # latched by this command: after it started, before it exited
                assert t0 <= st["estop_since_mono_ns"] <= t_exit, (t0, st, t_exit)


def test_fleet_stop_reports_an_unreachable_arm(tmp_path: Path) -> None:
    fleet_yaml = tmp_path / "fleet.yaml"
    fleet_yaml.write_text(yaml.safe_dump(
        {"arms": [{"name": "ghost", "endpoint": "tcp://127.0.0.1:9"}]}))
    results = estop.estop_all(estop.targets_from_fleet_yaml(fleet_yaml, None), "test", 200)
    assert results["ghost"].startswith("FAILED")


def test_estop_counts_only_when_the_reply_shows_the_latch() -> None:
    """An `ok` reply whose safety summary does not show the latch is not an e-stop (the old
    check read a `status` field the estop reply never has, so it was always true)."""
    import threading

    import msgpack
    import zmq

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    answers = [False, True]

    def serve() -> None:
        for latched in answers:
            if not router.poll(5000):
                return
            ident, body = router.recv_multipart()
            h = msgpack.unpackb(body)
            router.send_multipart([ident, msgpack.packb({
                "v": 1, "type": "estop", "id": h["id"], "ok": True, "sid": "s" * 32, "t": [0, 0, 0],
                "st": {"estopped": latched, "holding": True, "in_episode": False, "counters": {}}})])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        target = estop.StopTarget("arm", endpoint)
        first = estop.estop_one(target, "test", 5000, ctx)
        second = estop.estop_one(target, "test", 5000, ctx)
        assert first.startswith("FAILED") and "latch" in first, first
        assert second == "e-stopped"
    finally:
        t.join(5)
        router.close(0)
        ctx.term()


def test_estop_retries_once_in_the_version_a_v2_only_bridge_offers() -> None:
    """docs/protocol.md §3: a bridge may speak only v2. The v1 `estop` gets UNSUPPORTED_VERSION
    with `versions: [2]`; the tool sends it once more in v2, within the same deadline. A
    bridge offering nothing the tool speaks gets no further retry."""
    import threading

    import msgpack
    import zmq

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    seen: list[int] = []
    offers = [[2], [2], [7]]  # per estop_one call below: what the bridge speaks

    def serve() -> None:
        for speaks in offers:
            while True:
                if not router.poll(5000):
                    return
                ident, body = router.recv_multipart()
                h = msgpack.unpackb(body)
                seen.append(h["v"])
                base = {"id": h["id"], "sid": "s" * 32, "t": [0, 0, 0],
                        "st": {"estopped": h["v"] in speaks, "holding": True, "in_episode": False}}
                if h["v"] in speaks:
                    router.send_multipart([ident, msgpack.packb(
                        {**base, "v": h["v"], "type": "estop", "ok": True})])
                    break
                router.send_multipart([ident, msgpack.packb(
                    {**base, "v": min(speaks), "type": "error", "ok": False,
                     "code": "UNSUPPORTED_VERSION", "message": f"v{h['v']}: not served",
                     "request_type": "estop", "versions": speaks})])
                if speaks == [7] and len(seen) >= 1:
                    break

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        target = estop.StopTarget("arm", endpoint)
        assert estop.estop_one(target, "test", 5000, ctx) == "e-stopped"
        assert seen == [1, 2]
        assert estop.estop_all([target], "test", 5000) == {"arm": "e-stopped"}
        assert seen == [1, 2, 1, 2]
        failed = estop.estop_one(target, "test", 5000, ctx)
        assert failed.startswith("FAILED: bridge answered UNSUPPORTED_VERSION"), failed
        assert "[7]" in failed
        assert seen == [1, 2, 1, 2, 1]  # nothing in common: no second request
    finally:
        t.join(5)
        router.close(0)
        ctx.term()


def test_retry_version_takes_the_highest_offered_version_it_speaks() -> None:
    def err(versions: object) -> dict:
        return {"ok": False, "code": "UNSUPPORTED_VERSION", "versions": versions}

    assert estop.retry_version(err([2]), 1) == 2
    assert estop.retry_version(err([1, 2]), 1) == 2
    assert estop.retry_version(err([2, 3]), 1) == 2  # 3: not spoken by this tool
    assert estop.retry_version(err([1]), 1) is None  # the version just refused
    assert estop.retry_version(err("2"), 1) is None
    assert estop.retry_version({"ok": False, "code": "ESTOPPED"}, 1) is None
    assert estop.retry_version({"ok": True, "versions": [2]}, 1) is None
