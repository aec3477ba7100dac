"""Bridge benchmark: per-step round trip vs bare pyzmq, live stream frame age, sim step+render.

    .venv/bin/python benchmarks/bridge.py            # full run, writes benchmarks/results/bridge.json
    .venv/bin/python benchmarks/bridge.py --quick    # fewer steps / shorter stream

1. Round trip: `act` + the next observation (one RGB frame, 256x256 and 640x480) through a
   BridgeServer process hosting a fixed-frame driver (the bridge alone is measured), against a
   bare pyzmq DEALER/ROUTER server process replying with the same bytes (a header of the same
   length + the frame). Measured in alternating blocks so both see the same machine load.
   Targets: bridge <= 1.5x bare at p50 and p99; >= 2000 steps/s for one arm at 256x256.
2. Live stream: 8 bridge processes publishing 640x480 at 30 fps; one subscriber (conflating SUB
   per camera) measures frame age = receive wall time - observation wall time. Target p99 < 50 ms.
3. Sim: SimDriver apply() + observe() (step + render) per frame at both sizes, if it exists.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robots import protocol as P
from robots.client import BridgeClient, FrameSubscriber
from robots.types import Action, SceneSpec
from tests.integration.fakes import BridgeProcess

SIZES = {"256x256": (256, 256), "640x480": (480, 640)}


def stats_ms(samples_ns: list[int]) -> dict:
    a = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 4),
            "p99_ms": round(float(np.percentile(a, 99)), 4), "mean_ms": round(float(a.mean()), 4),
            "max_ms": round(float(a.max()), 3)}


# --- bare pyzmq server ------------------------------------------------------------------------

def bare_server(size: str, header_bytes: int, ready_file: str, copy: bool) -> None:
    h, w = SIZES[size]
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    header = b"\x00" * header_bytes
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.linger = 0
    s.bind("tcp://127.0.0.1:*")
    Path(ready_file).write_text(s.getsockopt_string(zmq.LAST_ENDPOINT))
    while True:
        if not s.poll(60_000):
            return  # parent gone
        ident, req = s.recv_multipart(copy=False)
        if req.bytes == b"quit":
            return
        s.send_multipart([ident, header, frame], copy=copy)


class BareProcess:
    def __init__(self, size: str, header_bytes: int, copy: bool):
        self.dir = tempfile.mkdtemp(prefix="bare-")
        ready = Path(self.dir) / "ep"
        self.proc = subprocess.Popen([sys.executable, __file__, "--bare-server", size, str(header_bytes), str(ready),
                                      str(int(copy))], cwd=REPO)
        deadline = time.monotonic() + 30
        while not ready.exists() or not ready.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("bare server did not start")
            time.sleep(0.02)
        self.endpoint = ready.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def bare_block(sock: zmq.Socket, request: bytes, shape: tuple[int, ...], n: int) -> list[int]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        sock.send(request)
        hdr, frame = sock.recv_multipart(copy=False)  # RCVTIMEO set: raises zmq.Again on timeout
        img = np.frombuffer(frame.buffer, dtype=np.uint8).reshape(shape)
        assert img.shape == shape and len(hdr) > 0
        out.append(time.perf_counter_ns() - t0)
    return out


def bridge_block(c: BridgeClient, n: int) -> list[int]:
    out = []
    act = Action(dx=0.0, gripper=1.0)
    for _ in range(n):
        t0 = time.perf_counter_ns()
        r = c.act(act)
        assert r.observation.frames
        out.append(time.perf_counter_ns() - t0)
    return out


def round_trip(size: str, steps: int, blocks: int, workdir: Path) -> dict:
    h, w = SIZES[size]
    with BridgeProcess(workdir, image_size=f"{w}x{h}", watchdog_ms=5000, max_command_age_ms=0) as b, \
            BridgeClient(b.endpoint, timeout_ms=5000) as c:
        c.hello()
        c.reset(SceneSpec("pick", "can", ("can",)), "bench")
        for _ in range(200):
            c.act(Action())
        # the bare server replies with a header as long as the bridge's act reply header
        zero = (0.0,) * 6 + (1.0,)  # in the negotiated protocol version (v2 with this bridge)
        probe = c.request("act", P.act_request_fields(c.version, zero, False, 10**9, 0, "bench"))
        reply_header = len(P.encode_reply(probe)[0])
        act_req = P.encode_request(P.Request("act", 1, P.act_request_fields(
            c.version, zero, False, 1, time.time_ns(), "bench"), c.version))[0]
        c._seq = iter(range(10**9 + 1, 10**12))
        # two bare servers: zero-copy send and copying send; the faster one is the baseline
        bares = {mode: BareProcess(size, reply_header, copy=mode == "copy") for mode in ("zero_copy", "copy")}
        ctx = zmq.Context()
        socks = {}
        for mode, bp in bares.items():
            socks[mode] = ctx.socket(zmq.DEALER)
            socks[mode].linger, socks[mode].rcvtimeo = 0, 5000
            socks[mode].connect(bp.endpoint)
        try:
            bare_ns: dict[str, list[int]] = {m: [] for m in bares}
            for m in bares:
                bare_block(socks[m], act_req, (h, w, 3), 200)
            bridge_ns: list[int] = []
            t_bridge = 0.0
            per = steps // blocks
            for _ in range(blocks):  # alternate, so all see the same machine load
                for m in bares:
                    bare_ns[m] += bare_block(socks[m], act_req, (h, w, 3), per)
                t0 = time.perf_counter()
                bridge_ns += bridge_block(c, per)
                t_bridge += time.perf_counter() - t0
        finally:
            for sock in socks.values():
                sock.close(0)
            ctx.term()
            for bp in bares.values():
                bp.close()
    bare_stats = {m: stats_ms(v) for m, v in bare_ns.items()}
    best = min(bare_stats, key=lambda m: bare_stats[m]["p50_ms"])
    bs, rs = bare_stats[best], stats_ms(bridge_ns)
    return {"frame": size, "request_bytes": len(act_req), "reply_header_bytes": reply_header,
            "frame_bytes": h * w * 3, "bare_modes": bare_stats, "bare_baseline": best, "bare": bs, "bridge": rs,
            "ratio_p50": round(rs["p50_ms"] / bs["p50_ms"], 3), "ratio_p99": round(rs["p99_ms"] / bs["p99_ms"], 3),
            "bridge_steps_per_s": round(len(bridge_ns) / t_bridge, 1),
            "bare_steps_per_s": round(1e3 / bs["mean_ms"], 1)}


# --- live stream ------------------------------------------------------------------------------

def stream(arms: int, fps: float, seconds: float, workdir: Path) -> dict:
    procs: list[BridgeProcess] = []
    try:
        for i in range(arms):
            procs.append(BridgeProcess(workdir, image_size="640x480", pub=True, stream_fps=fps,
                                       watchdog_ms=5000).start())
        ctx = zmq.Context()
        subs = [FrameSubscriber(p.pub_endpoint, ["front"], context=ctx) for p in procs]
        for s in subs:  # connected and flowing
            s.latest("front", 10_000)
        poller = zmq.Poller()
        socks = {}
        for i, s in enumerate(subs):
            for sock in s._subs.values():
                poller.register(sock, zmq.POLLIN)
                socks[sock] = i
        ages: list[int] = []
        per_arm = [0] * arms
        seqs: list[set[int]] = [set() for _ in range(arms)]
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            for sock, _ in poller.poll(100):
                msg = sock.recv(zmq.NOBLOCK, copy=False)
                now = time.time_ns()
                _, h, img = P.unpack_stream(msg.buffer)
                assert img.shape == (480, 640, 3)
                i = socks[sock]
                ages.append(now - h["wall_ns"])
                per_arm[i] += 1
                seqs[i].add(h["seq"])
        for s in subs:
            s.close()
        ctx.term()
    finally:
        for p in procs:
            p.stop()
    st = stats_ms(ages)
    return {"arms": arms, "target_fps": fps, "frame": "640x480", "seconds": seconds, "age": st,
            "delivered_fps_per_arm": [round(n / seconds, 1) for n in per_arm],
            "delivered_fps_min": round(min(per_arm) / seconds, 1)}


# --- sim --------------------------------------------------------------------------------------

def sim_step_render(steps: int) -> dict:
    try:
        from dataclasses import replace

        from robots.drivers.sim import SimDriver, SimOptions
    except ImportError as e:
        return {"skipped": f"robots.drivers.sim not available: {e}"}
    out = {}
    for size, (h, w) in SIZES.items():
        opts = SimOptions()
        opts = replace(opts, cameras=tuple(replace(c, height=h, width=w) for c in opts.cameras))
        with SimDriver(opts) as d:
            d.reset(SceneSpec("pick", "coke_can", ("coke_can", "apple"), distractors=("sponge",), seed=1))
            d.observe()
            step_ns, render_ns = [], []
            rng = np.random.default_rng(0)
            for _ in range(steps):
                a = Action.from_continuous([*rng.uniform(-0.02, 0.02, 3), 0, 0, 0, 1.0])
                t0 = time.perf_counter_ns()
                d.apply(a)
                t1 = time.perf_counter_ns()
                d.observe()
                t2 = time.perf_counter_ns()
                step_ns.append(t1 - t0)
                render_ns.append(t2 - t1)
        out[size] = {"cameras": [c.name for c in opts.cameras], "step": stats_ms(step_ns),
                     "observe_render": stats_ms(render_ns),
                     "total_p50_ms": round(stats_ms(step_ns)["p50_ms"] + stats_ms(render_ns)["p50_ms"], 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bridge.json")
    args = ap.parse_args()
    steps, blocks, secs = (2000, 4, 4.0) if args.quick else (10_000, 10, 10.0)
    work = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    result: dict = {"command": "python benchmarks/bridge.py" + (" --quick" if args.quick else ""),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
                                "platform": platform.platform()},
                    "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    result["round_trip"] = [round_trip(s, steps, blocks, work) for s in SIZES]
    for r in result["round_trip"]:
        print(f"round trip {r['frame']}: bare p50 {r['bare']['p50_ms']} p99 {r['bare']['p99_ms']} ms | bridge p50 "
              f"{r['bridge']['p50_ms']} p99 {r['bridge']['p99_ms']} ms | x{r['ratio_p50']} / x{r['ratio_p99']} | "
              f"{r['bridge_steps_per_s']} steps/s", flush=True)
    result["stream"] = stream(8, 30.0, secs, work)
    s = result["stream"]
    print(f"stream 8x30fps 640x480: age p50 {s['age']['p50_ms']} p99 {s['age']['p99_ms']} ms, "
          f"min delivered {s['delivered_fps_min']} fps", flush=True)
    result["sim"] = sim_step_render(100 if args.quick else 300)
    print("sim:", json.dumps(result["sim"]), flush=True)
    rt256 = result["round_trip"][0]
    result["targets"] = {
        "ratio_p50_le_1.5": all(r["ratio_p50"] <= 1.5 for r in result["round_trip"]),
        "ratio_p99_le_1.5": all(r["ratio_p99"] <= 1.5 for r in result["round_trip"]),
        "steps_per_s_256_ge_2000": rt256["bridge_steps_per_s"] >= 2000,
        "stream_age_p99_lt_50ms": s["age"]["p99_ms"] < 50,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("targets:", result["targets"], "->", args.out)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--bare-server":
        bare_server(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1")
    else:
        main()
