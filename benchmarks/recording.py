"""Recording benchmark: what a recorded sim frame costs to encode, one at a time at 15 Hz vs in
bursts, and what recording adds to an episode's CPU per step.

    .venv/bin/python benchmarks/recording.py            # ~2 minutes

(a) Encoding. 240 frames are recorded from a real sim bridge (256x256, the sim's own sensor
    noise), then encoded with the recorder's own VideoWriter (libx264 ultrafast, one thread)
    four ways: back to back; one frame per 66 ms (15 Hz, as a recorder that encodes each step
    as it arrives); and in bursts of 8 and 16 frames every 8 or 16 x 66 ms (what the recorder
    does now, orchestrator/recording.py BATCH_STEPS). CPU time of the encoding thread only.
(b) The episode loop in-process (no Ray): N arms (own bridge processes) at 15 Hz for 20 s
    with the chunked test policy (H=16, execute 8, computed in-process), recording off, on
    with the encoder batches the recorder uses (BATCH_STEPS), and on with batches of 1 (the
    recorder before). CPU of this process per arm-step (getrusage: every thread).

Writes benchmarks/results/recording.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator import recording
from orchestrator.episode import EpisodeSpec, PolicyReply, run_episode
from orchestrator.recording import VideoWriter
from orchestrator.simfleet import SimFleet
from robots.client import BridgeClient
from tests.policy_kit import ChunkedPolicy

RESULTS = ROOT / "benchmarks" / "results" / "recording.json"
HZ = 15.0
SCENE = {"skill": "pick", "target": "coke_can", "objects": ["coke_can"],
         "distractors": ["apple", "sponge"], "background": "wood", "environment": "kitchen_a",
         "instruction": "pick coke can", "seed": 1}


def sim_frames(n: int) -> list[np.ndarray]:
    with SimFleet(1) as fleet, BridgeClient(fleet.endpoints[fleet.arm_names()[0]]["endpoint"],
                                            timeout_ms=3000) as c:
        c.hello()
        c.reset(SCENE, "ep-frames")
        rng = np.random.default_rng(0)
        out = []
        for _ in range(n):
            r = c.act([*rng.normal(0, 0.01, 6), 0.5])
            out.append(np.array(next(iter(r.observation.frames.values()))))
        return out


def encode_ms(frames: list[np.ndarray], burst: int | None, tmp: Path) -> float:
    """CPU ms per frame; burst None: back to back; else `burst` frames per burst x 66 ms."""
    w = VideoWriter(tmp, f"b{burst}.mp4", "main", HZ)
    cpu = 0.0
    step = burst or len(frames)
    for i in range(0, len(frames), step):
        if burst is not None:
            time.sleep(burst / HZ)
        t = time.thread_time()
        for f in frames[i:i + step]:
            w.add(f)
        cpu += time.thread_time() - t
    w.finish()
    return cpu / len(frames) * 1e3


def loop_ms(n_arms: int, seconds: float, record: bool, media: Path) -> float:
    policy = ChunkedPolicy({"horizon": 16, "execute_steps": 8, "inference_ms": 0,
                            "control_hz": HZ})
    lock = threading.Lock()

    def call(inp: Any) -> PolicyReply:
        with lock:
            out = policy.act([inp]).outputs[0]
        return PolicyReply(out.action, None, out.plan, 0.0, 0.0, out.hold_reason, out.chunk)

    steps = round(seconds * HZ)
    with SimFleet(n_arms) as fleet:
        clients = [BridgeClient(fleet.endpoints[nm]["endpoint"], timeout_ms=3000)
                   for nm in fleet.arm_names()]
        try:
            for i, c in enumerate(clients):
                c.hello()
                c.reset(SCENE, f"ep-{i}")
            outs: list[Any] = [None] * n_arms

            def go(i: int) -> None:
                spec = EpisodeSpec(episode_id=i + 1, campaign="bench", instruction="pick coke can",
                                   max_steps=steps, control_hz=HZ, needs_privileged=False,
                                   timeout_s=seconds * 4 + 30, record=record,
                                   chunking=policy.metadata.chunking, phase=i / n_arms)
                outs[i] = run_episode(clients[i], call, spec, arm=f"arm-{i}", media_dir=media)

            r0 = resource.getrusage(resource.RUSAGE_SELF)
            threads = [threading.Thread(target=go, args=(i,)) for i in range(n_arms)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            for c in clients:
                c.close()
    n = sum(len(o.steps) for o in outs)
    return ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) * 1e3 / max(1, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    t0 = time.monotonic()
    frames = sim_frames(args.frames)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        enc = {"back_to_back": encode_ms(frames, None, tmp),
               "one_per_step_15hz": encode_ms(frames, 1, tmp),
               "bursts_of_8": encode_ms(frames, 8, tmp),
               "bursts_of_16": encode_ms(frames, 16, tmp)}
        print("(a) encode CPU ms per frame:", {k: round(v, 3) for k, v in enc.items()},
              flush=True)
        loop: dict[str, dict[str, float]] = {}
        batch = recording.BATCH_STEPS
        for arms in (1, 4):
            row = {"record_off": loop_ms(arms, args.seconds, False, tmp),
                   f"record_batches_of_{batch}": loop_ms(arms, args.seconds, True, tmp)}
            recording.BATCH_STEPS = 1  # the recorder before: each step handed over alone
            try:
                row["record_batches_of_1"] = loop_ms(arms, args.seconds, True, tmp)
            finally:
                recording.BATCH_STEPS = batch
            loop[f"{arms}_arms"] = {k: round(v, 3) for k, v in row.items()}
            print(f"(b) {arms} arm(s), CPU ms per arm-step:", loop[f"{arms}_arms"], flush=True)
    out = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "loadavg_before": os.getloadavg(),
        "frames": args.frames, "frame_shape": list(frames[0].shape), "hz": HZ,
        "encode_cpu_ms_per_frame": {k: round(v, 3) for k, v in enc.items()},
        "episode_cpu_ms_per_arm_step": loop,
        "batch_steps": batch,
        "seconds": round(time.monotonic() - t0, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
