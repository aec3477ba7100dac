"""Remote policy benchmark: evalfleet's openpi client and `evalfleet policy serve`, each side by
side with its baseline, in one run.

    .venv/bin/python benchmarks/remote_policy.py            # ~2 min; what results/ holds
    .venv/bin/python benchmarks/remote_policy.py --only client --round-trips 3000
    .venv/bin/python benchmarks/remote_policy.py --only serving --seconds 30 --clients 16

Writes benchmarks/results/remote_policy.json.

1. `client`: one round trip of a DROID-sized observation (two 224x224x3 uint8 images,
   joint_position[7] + gripper_position[1], a prompt; the reply {"actions": (10, 8) float64,
   "server_timing"}) against the same echo-ish openpi-protocol server (a subprocess: sends
   its metadata on connect, answers every message with one pre-packed reply), from
   - `bare`: a bare `websockets` sync client: msgpack with openpi's numpy encoding, send,
     recv, decode (what openpi-client does, minus everything else);
   - `client`: evalfleet's OpenpiClient.infer (the same dict; deadline, size limit, strict
     decoding);
   - `kind`: evalfleet's policy kind `openpi` (preset droid) `act([input])`: the preset
     mapping from the arm's frames and state, the per-arm connection, the reply read as a
     chunk: all a campaign step pays.
   Interleaved call by call (same machine load; the order rotated each time), p50 and p99 of
   each, ratios to `bare`.
   Target: client <= 1.3x bare at p50 and p99.
2. `serving`: the same tiny VLA (tests.policy_kit.build_tiny_vla: a random PaliGemma, built
   offline; kind `vla` on CPU) hosted by
   - `openpi`: PyPI openpi-server's WebsocketPolicyServer (in the benchmark's own venv,
     benchmarks/interop_venv.py `bench`: evalfleet's environment + openpi-server/-client),
     its BasePolicy mapping each observation with the same preset and calling the model
     once per observation, as openpi does;
   - `evalfleet`: `evalfleet policy serve` (batching concurrent connections, defaults);
   each driven by `--clients` concurrent closed-loop websocket clients (one connection each,
   one image + prompt per message) for `--seconds` after a warm-up: actions/s and latency
   p50/p99. Both servers run torch with `--torch-threads` threads; one comparison per value
   (default: 1, and the number of CPUs, torch's own default). Target: evalfleet >= 4x
   openpi's actions/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import msgpack
import numpy as np
from rich.console import Console
from rich.progress import Progress

console = Console()
RESULTS = REPO / "benchmarks" / "results" / "remote_policy.json"
START_S = 180.0  # upper bound for a server to come up (loading the model), polled
PROMPT = "pick coke can"
JOINTS = tuple(f"joint_{i}" for i in range(1, 8))
VLA_MAPPING = {"images": {"observation/image": {"camera": "main", "role": "external"}},
               "prompt": "prompt",
               "actions": {"space": "ee_delta", "dim": 7, "gripper": "open_is_1"}}


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def summary_ms(xs: list[float]) -> dict[str, float]:
    ms = [x * 1e3 for x in xs]
    return {"n": len(ms), "p50": round(pct(ms, 50), 3), "p99": round(pct(ms, 99), 3),
            "mean": round(statistics.fmean(ms), 3)}


# --- openpi's numpy encoding, as a bare client writes it (a few lines, like openpi-client) ---

def _pack_array(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str,
                b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _unpack_array(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def bare_packb(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_pack_array, use_bin_type=True)


def bare_unpackb(data: bytes | str) -> Any:
    return msgpack.unpackb(data, object_hook=_unpack_array)


# --- the echo-ish server (a subprocess: `remote_policy.py --echo-server`) ---------------------

def echo_server() -> None:
    """Metadata on connect, then one pre-packed DROID-style reply per message; prints PORT."""
    from websockets.asyncio.server import serve

    meta = bare_packb({"server": "echo", "policy": "none"})
    reply = bare_packb({"actions": np.zeros((10, 8)), "server_timing": {"infer_ms": 0.0}})

    async def handler(ws: Any) -> None:
        await ws.send(meta)
        async for _ in ws:
            await ws.send(reply)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"PORT {port}", flush=True)
            await server.serve_forever()

    asyncio.run(main())


@contextmanager
def process(cmd: list[str], *, ready: str, env: dict[str, str] | None = None,
            log: Path | None = None) -> Iterator[re.Match[str]]:
    """A server process whose stdout says `ready` (a regex) within START_S; stopped after."""
    out = open(log, "w") if log is not None else None  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=out or subprocess.DEVNULL, text=True)
    found: list[re.Match[str]] = []
    seen: list[str] = []
    got = threading.Event()

    def read() -> None:
        for line in proc.stdout or ():
            seen.append(line.rstrip())
            m = re.search(ready, line)
            if m and not found:
                found.append(m)
                got.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not got.wait(START_S):
            raise RuntimeError(f"{cmd[1:4]}: not ready within {START_S} s: {seen[-5:]}")
        yield found[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if out is not None:
            out.close()


# --- 1. client round trip --------------------------------------------------------------------

def droid_observation(rng: np.random.Generator) -> tuple[dict[str, Any], Any]:
    """The same DROID-sized observation as an openpi dict and as an evalfleet input."""
    from policies.base import PolicyInput

    ext = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    wrist = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    state = rng.uniform(-1, 1, 8)
    obs = {"observation/exterior_image_1_left": ext, "observation/wrist_image_left": wrist,
           "observation/joint_position": state[:7], "observation/gripper_position": state[7:],
           "prompt": PROMPT}
    inp = PolicyInput(frames={"main": ext, "wrist": wrist}, proprio=tuple(state),
                      instruction=PROMPT, arm="bench", state_names=(*JOINTS, "gripper"))
    return obs, inp


def client_section(round_trips: int) -> dict[str, Any]:
    from websockets.sync.client import connect

    from policies.registry import build_policy
    from policies.remote.openpi_client import OpenpiClient

    obs, inp = droid_observation(np.random.default_rng(0))
    times: dict[str, list[float]] = {"bare": [], "client": [], "kind": []}
    # no live progress display here: its refresh thread would compete for the GIL with the
    # timed calls
    console.print(f"client: {round_trips} round trips each of bare, client, kind ...")
    with process([sys.executable, __file__, "--echo-server"], ready=r"PORT (\d+)") as m:
        url = f"ws://127.0.0.1:{m.group(1)}"
        ws = connect(url, compression=None, max_size=None, proxy=None, ping_interval=None)
        bare_unpackb(ws.recv(timeout=10))
        client = OpenpiClient(url, call_timeout_s=10.0)
        kind = build_policy({"name": "bench", "kind": "openpi", "options": {
            "url": url, "preset": "droid", "call_timeout_s": 10.0}})

        def bare_once() -> None:
            ws.send(bare_packb(obs))
            reply = bare_unpackb(ws.recv(timeout=10))
            assert reply["actions"].shape == (10, 8)

        def client_once() -> None:
            assert client.infer(obs).data["actions"].shape == (10, 8)

        def kind_once() -> None:
            assert kind.act([inp]).outputs[0].the_chunk.values.shape == (10, 8)

        runs = {"bare": bare_once, "client": client_once, "kind": kind_once}
        try:
            for fn in runs.values():  # warm-up: connections, caches
                for _ in range(50):
                    fn()
            names = list(runs)
            for i in range(round_trips):  # interleaved call by call, the order rotated
                for name in names[i % 3:] + names[:i % 3]:
                    t0 = time.perf_counter()
                    runs[name]()
                    times[name].append(time.perf_counter() - t0)
        finally:
            ws.close()
            client.close()
            kind.close()
    out: dict[str, Any] = {name: summary_ms(ts) for name, ts in times.items()}
    bare = out["bare"]
    for name in ("client", "kind"):
        out[f"{name}_vs_bare"] = {q: round(out[name][q] / bare[q], 3) for q in ("p50", "p99")}
    out["target"] = "client_vs_bare <= 1.3 at p50 and p99"
    out["met"] = all(v <= 1.3 for v in out["client_vs_bare"].values())
    out["observation"] = {k: (list(v.shape) if isinstance(v, np.ndarray) else v)
                          for k, v in obs.items()}
    out["observation_bytes"] = len(bare_packb(obs))
    return out


# --- 2. serving: 16 clients, the same tiny VLA behind openpi's server and ours ----------------

OPENPI_VLA_SERVER = """
import json, sys
from openpi_client import base_policy
from openpi_server import WebsocketPolicyServer
from policies.registry import build_policy
from policies.remote.presets import preset

port, path, mapping = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
policy = build_policy({"name": "tiny-vla", "kind": "vla", "path": path})
mapper = preset("generic", mapping)

class TinyVLA(base_policy.BasePolicy):
    def infer(self, obs):
        out = policy.act([mapper.input(obs, "openpi")]).outputs[0]
        return mapper.reply(out.the_chunk)

print("READY", flush=True)
WebsocketPolicyServer(TinyVLA(), host="127.0.0.1", port=port,
                      metadata=policy.metadata.to_dict()).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def drive(url: str, clients: int, warmup_s: float, seconds: float,
                progress: Progress, label: str) -> dict[str, Any]:
    """`clients` closed-loop connections; replies and latencies inside the measured window."""
    from websockets.asyncio.client import connect

    rng = np.random.default_rng(1)
    messages = [bare_packb({"observation/image": rng.integers(0, 256, (224, 224, 3),
                                                              dtype=np.uint8),
                            "prompt": PROMPT}) for _ in range(clients)]
    lat: list[float] = []
    errors: list[str] = []
    counted = [0]
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup_s, t_start + warmup_s + seconds
    task = progress.add_task(f"serving: {label}", total=warmup_s + seconds)

    async def one(i: int) -> None:
        async with connect(url, compression=None, max_size=None, proxy=None,
                           ping_interval=None, open_timeout=60) as ws:
            await asyncio.wait_for(ws.recv(), 60)  # the server's metadata
            first = True
            while (now := time.perf_counter()) < t_end:
                await ws.send(messages[i])
                reply = await asyncio.wait_for(ws.recv(), 60)
                done = time.perf_counter()
                if isinstance(reply, str):
                    errors.append(reply.strip().splitlines()[-1][:200])
                    return
                if first:  # sanity: the reply is the tiny VLA's one ee_delta[7] row
                    shape = np.shape(bare_unpackb(reply)["actions"])
                    if shape != (1, 7):
                        errors.append(f"reply actions have shape {shape}, expected (1, 7)")
                        return
                    first = False
                if now >= t_measure and done <= t_end:
                    lat.append(done - now)
                    counted[0] += 1

    async def tick() -> None:
        while time.perf_counter() < t_end:
            progress.update(task, completed=time.perf_counter() - t_start)
            await asyncio.sleep(0.25)

    await asyncio.gather(*(one(i) for i in range(clients)), tick())
    progress.update(task, completed=warmup_s + seconds)
    return {"clients": clients, "seconds": seconds, "replies": counted[0],
            "actions_per_s": round(counted[0] / seconds, 1), "latency_ms": summary_ms(lat),
            "errors": errors[:5]}


def serving_section(clients: int, seconds: float, warmup_s: float, torch_threads: int,
                    progress: Progress, workdir: Path) -> dict[str, Any]:
    import yaml

    from benchmarks.interop_venv import InteropUnavailable, bench_venv
    from tests.policy_kit import build_tiny_vla

    workdir.mkdir(parents=True, exist_ok=True)
    vla = build_tiny_vla(workdir / "tiny-vla")
    (workdir / "vla.yaml").write_text(yaml.safe_dump({"name": "tiny-vla", "kind": "vla",
                                                      "path": str(vla)}))
    (workdir / "mapping.yaml").write_text(yaml.safe_dump(VLA_MAPPING))
    threads = str(torch_threads)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300", "OMP_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads}
    out: dict[str, Any] = {"policy": "tiny VLA (tests.policy_kit.build_tiny_vla, random "
                           "PaliGemma, kind vla, cpu)", "mapping": VLA_MAPPING,
                           "torch_threads": torch_threads}
    try:
        py = bench_venv()
    except InteropUnavailable as e:
        out["openpi"] = {"skipped": str(e), "pip_error": e.detail[-2000:]}
    else:
        port = free_port()
        with process([str(py), "-c", OPENPI_VLA_SERVER, str(port), str(vla),
                      json.dumps(VLA_MAPPING)], ready=r"READY", env=env,
                     log=workdir / "openpi-server.log"):
            from policies.remote.openpi_client import healthz

            url = f"ws://127.0.0.1:{port}"
            deadline = time.monotonic() + START_S
            while not healthz(url, timeout_s=1.0):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"openpi-server not answering /healthz within {START_S} s")
                time.sleep(0.1)  # polling interval of a deadline-bounded wait
            out["openpi"] = asyncio.run(drive(url, clients, warmup_s, seconds, progress,
                                              "openpi-server"))
        out["openpi"]["server"] = "openpi_server.WebsocketPolicyServer (PyPI openpi-server)"
    evalfleet = str(Path(sys.executable).parent / "evalfleet")
    with process([evalfleet, "policy", "serve", str(workdir / "vla.yaml"), "--preset", "generic",
                  "--mapping", str(workdir / "mapping.yaml"), "--port", "0",
                  "--log-file", str(workdir / "serve.log")],
                 ready=r"ready \(kind", env=env):
        log = (workdir / "serve.log").read_text()
        m = re.search(r"listening on [\d.]+:(\d+)", log)
        if m is None:
            raise RuntimeError(f"policy serve: no port in its log: {log[-500:]}")
        out["evalfleet"] = asyncio.run(drive(f"ws://127.0.0.1:{m.group(1)}", clients,
                                             warmup_s, seconds, progress, "evalfleet serve"))
        out["evalfleet"]["server"] = "evalfleet policy serve (defaults: max batch 32, batch wait 5 ms)"
    if "actions_per_s" in out.get("openpi", {}):
        theirs, ours = out["openpi"], out["evalfleet"]
        out["actions_per_s_ratio"] = round(
            ours["actions_per_s"] / max(theirs["actions_per_s"], 1e-9), 2)
        out["p99_ms"] = {"openpi": theirs["latency_ms"]["p99"],
                         "evalfleet": ours["latency_ms"]["p99"]}
        out["target"] = "actions_per_s_ratio >= 4"
        out["met"] = out["actions_per_s_ratio"] >= 4.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("client", "serving"), action="append")
    ap.add_argument("--round-trips", type=int, default=2000, help="client: per variant")
    ap.add_argument("--clients", type=int, default=16, help="serving: concurrent connections")
    ap.add_argument("--seconds", type=float, default=20.0, help="serving: measured window")
    ap.add_argument("--warmup", type=float, default=5.0, help="serving: seconds not measured")
    ap.add_argument("--torch-threads", type=int, nargs="+", default=None,
                    help="serving: OMP_NUM_THREADS of both servers (the same for both), one "
                    "serving comparison per value (default: 1 and torch's own default, the "
                    "number of CPUs). openpi's server runs the model on its event loop, so a "
                    "torch pool of several threads competes with its own socket work")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_server:
        echo_server()
        return
    sections = set(args.only or ("client", "serving"))
    result: dict[str, Any] = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
    }
    if "client" in sections:
        result["client"] = client_section(args.round_trips)
    with tempfile.TemporaryDirectory(prefix="evalfleet-remote-bench-") as tmp, \
            Progress(console=console, transient=True) as progress:
        if "serving" in sections:
            threads = args.torch_threads or sorted({1, os.cpu_count() or 1})
            result["serving"] = {
                f"torch_threads_{n}": serving_section(args.clients, args.seconds, args.warmup,
                                                      n, progress, Path(tmp) / f"t{n}")
                for n in threads}
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    console.print_json(data=result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
