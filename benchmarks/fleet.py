"""Fleet benchmark: N simulated arms sharing one policy worker, at a fixed control rate.

    .venv/bin/python benchmarks/fleet.py --repeat 2 --seconds 20 --phases spread,aligned \
        --serve-extra /tmp/serve_extra      # what benchmarks/results/fleet.json holds (~25 min)
    .venv/bin/python benchmarks/fleet.py --quick           # 5 s runs, no campaign
    .venv/bin/python benchmarks/fleet.py --only fleet --arms 16 --seconds 30
    .venv/bin/python benchmarks/fleet.py --only chunked --arms 16 --seconds 20 --repeat 2
        # issue 10's chunked case, before/after in one run -> results/fleet_chunked.json

Ray Serve is not a project dependency; for the `serving` section put its extras in a side
dir: `pip install --target /tmp/serve_extra "grpcio>=1.42" "fastapi>=0.133" uvicorn starlette
aiohttp aiohttp_cors prometheus_client opencensus smart_open colorful watchfiles
opentelemetry-sdk opentelemetry-proto opentelemetry-exporter-prometheus grpcio-reflection
mmh3 googleapis-common-protos google-api-core`, then delete from it what the venv already has
(it is appended to Ray workers' PYTHONPATH); without it the Serve row says "skipped".

Sections (each in the same run, so they see the same machine load):

1. `micro`: the costs a step is built from: the bare bridge round trip (observe + act against
   one sim bridge, from this process), a sync Ray actor call with and without a 256x256
   frame as argument, and video encoding per frame (PyAV libx264 ultrafast).
2. `fleet`: 1, 4, 8, 16 sim arms (each its own bridge process; 16 always run) driven by
   RobotActors against ONE PolicyWorker running the trivial `random` policy. Per arm: control
   rate held vs the target, deadline misses (the command was acknowledged by the arm after
   the step's slot ended), and the per-step orchestration overhead = (slot start -> command
   acknowledged) minus the model's own inference time: wake-up delay, observe, the policy
   call's transport and batching wait, and the act round trip. CPU per step by role (bridges,
   Ray, actors, worker) from /proc, a figure that other load on the machine barely moves.
   Modes:
   - `naive`: the design brief's naive prototype: a minimal loop per arm in its own actor,
     frames passed as the per-step argument of a sync, unbatched Ray actor call; no recording.
   - `record` / `norecord`: the real code path (RobotActor.run_episode -> orchestrator.episode
     -> ZeroMQ data plane -> PolicyWorker), with and without MP4 recording.
   Phases (`--phases`): `spread` (the runner's default: arm i of N steps at i/N of the
   period), `aligned` (every arm on the same slot: a CPU stress test), `none` (arms start when
   launched, as before phases existed).
2c. `chunked`: N arms (the largest of `--arms`) at 15 Hz, recording on, arms spread, running
   the `chunked` test policy (H=16 x 7 ee_delta rows, execute 8, the next chunk queried in
   the background while the current one executes; `--chunk-*` options) and, in the same run
   on the same arms, a single-step policy (`random`: one policy query per step, the path
   every step took before action chunks). Per case: missed steps, step overhead p50/p99, and
   the orchestrator's CPU per arm-step (RobotActors + policy worker + Ray: raylet, GCS, other
   Ray workers; bridges and this driver excluded), before vs after. Targets at 16 arms: < 1 %
   missed, overhead p99 <= 20 ms, orchestrator CPU <= 2 ms per arm-step.
2b. `serving`: the policy call alone, 16 callers at 5 Hz with a 256x256 frame: the previous
   design (Ray actor call, async batching), the ZeroMQ data plane, and Ray Serve
   (`@serve.batch`), aligned and spread.
3. `campaign`: `evalfleet campaign run` in a subprocess against 4 already-running sim bridges
   (as in a lab, the bridges run next to the arms): time from process start to the first
   step's `command_wall_ns` in the store, and episodes per hour for the demo campaign
   (rt2_generalization; oracle, vision heuristic, random; 1 trial per task); then
   `--first-action-repeats` 1-task campaigns for more first-action samples.

Targets (2-core machine): 16 arms hold 5 Hz and 8 arms hold 10 Hz with < 1 % missed
deadlines and overhead p99 <= 20 ms; first action <= 15 s after `campaign run` starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

import ray

from orchestrator.actors.hosts import HostPool
from orchestrator.actors.policy import PolicyWorker
from orchestrator.actors.robot import station_resource
from orchestrator.cli_fleet import init_ray
from orchestrator.simfleet import SimFleet

SCENE = {
    "skill": "pick", "target": "coke_can", "objects": ["coke_can"],
    "distractors": ["apple", "sponge"], "background": "wood", "environment": "kitchen_a",
    "instruction": "pick coke can", "seed": 1,
}
RANDOM = {"name": "random", "kind": "random", "options": {}}
TARGETS = {16: 5.0, 8: 10.0}  # arms -> control rate that must hold
DEFAULT_RATES = {1: 10.0, 4: 10.0, 8: 10.0, 16: 5.0}


def pct(a: Any, q: float) -> float:
    a = np.asarray(a, dtype=np.float64)
    return round(float(np.percentile(a, q)), 3) if a.size else float("nan")


class CpuMeter:
    """System-wide CPU busy fraction between start() and stop() (from /proc/stat)."""

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + vals[4]
        return sum(vals), idle

    def __enter__(self) -> Self:
        self.t0, self.i0 = self._read()
        self.load0 = os.getloadavg()
        return self

    def __exit__(self, *exc: object) -> None:
        t1, i1 = self._read()
        self.busy = round(1 - (i1 - self.i0) / max(1, t1 - self.t0), 3)
        self.load1 = os.getloadavg()

    def to_dict(self) -> dict[str, Any]:
        return {"cpu_busy": self.busy, "loadavg_before": [round(x, 2) for x in self.load0],
                "loadavg_after": [round(x, 2) for x in self.load1]}


class ProcCpu:
    """CPU seconds used by this process and all its descendants (the sim bridges, Ray's
    raylet/GCS and workers), by role: a load-independent cost per step, unlike wall time."""

    TICK = os.sysconf("SC_CLK_TCK")

    @classmethod
    def snapshot(cls) -> dict[int, tuple[str, float]]:
        me = os.getpid()
        parent: dict[int, int] = {}
        info: dict[int, tuple[str, float]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            rest = st[st.rfind(")") + 2:].split()
            parent[int(d)] = int(rest[1])
            info[int(d)] = (cmd, (int(rest[11]) + int(rest[12])) / cls.TICK)
        out = {}
        for pid, (cmd, cpu) in info.items():
            p, hops = pid, 0
            while p not in (0, 1, me) and hops < 20:
                p, hops = parent.get(p, 0), hops + 1
            if p == me:
                out[pid] = (cls.role(pid, cmd), cpu)
        return out

    @staticmethod
    def role(pid: int, cmd: str) -> str:
        if pid == os.getpid():
            return "driver"
        for key, role in (("robots.cli", "bridges"), ("raylet", "raylet"), ("gcs_server", "gcs"),
                          ("RobotHost", "robot_actors"), ("NaiveArm", "robot_actors"),
                          ("PolicyWorker", "policy_worker"), ("NaiveWorker", "policy_worker")):
            if key in cmd:
                return role
        return "other_ray"

    def __enter__(self) -> Self:
        self.a = self.snapshot()
        return self

    def stop(self) -> dict[str, float]:
        b = self.snapshot()
        out: dict[str, float] = {}
        for pid, (role, cpu) in b.items():
            role = role if role != "other_ray" else self.a.get(pid, (role, 0))[0]
            out[role] = out.get(role, 0.0) + cpu - self.a.get(pid, (role, 0.0))[1]
        return out

    def __exit__(self, *exc: object) -> None:
        pass


# --- 1. micro ---------------------------------------------------------------------------------

@ray.remote(num_cpus=0)
class Echo:
    def call(self, x: Any) -> int:
        return 1


def micro(fleet: SimFleet, n: int) -> dict[str, Any]:
    from robots.client import BridgeClient
    from robots.types import Action

    out: dict[str, Any] = {}
    ep = fleet.endpoints[fleet.arm_names()[0]]["endpoint"]
    with BridgeClient(ep, timeout_ms=2000) as c:
        c.hello()
        c.reset(SCENE, "micro")
        obs_ms, act_ms = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            c.observe()
            t1 = time.perf_counter()
            c.act(Action.from_continuous((0.0,) * 6 + (1.0,)))
            t2 = time.perf_counter()
            obs_ms.append((t1 - t0) * 1e3)
            act_ms.append((t2 - t1) * 1e3)
        c.end_episode()
    out["bridge_observe_ms"] = {"p50": pct(obs_ms, 50), "p99": pct(obs_ms, 99)}
    out["bridge_act_ms"] = {"p50": pct(act_ms, 50), "p99": pct(act_ms, 99)}
    both = np.add(obs_ms, act_ms)
    out["bridge_observe_plus_act_ms"] = {"p50": pct(both, 50), "p99": pct(both, 99)}

    e = Echo.remote()
    ray.get(e.call.remote(0))
    frame = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for label, arg in (("ray_call_noarg_ms", 0), ("ray_call_frame256_ms", frame)):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            ray.get(e.call.remote(arg))
            ts.append((time.perf_counter() - t0) * 1e3)
        out[label] = {"p50": pct(ts, 50), "p99": pct(ts, 99)}
    ray.kill(e)

    from orchestrator.recording import VideoWriter

    with tempfile.TemporaryDirectory() as d:
        w = VideoWriter(Path(d), "x.mp4", "main", 5.0)
        from robots.drivers.sim import SimDriver
        from robots.types import SceneSpec

        sim = SimDriver()
        sim.reset(SceneSpec.from_dict(SCENE))
        frames = []
        for i in range(60):
            sim.apply(Action.from_continuous((0.01 * (i % 5 - 2), 0.01, 0.0, 0, 0, 0, 1.0)))
            frames.append(sim.observe().frames["main"])
        ts = []
        for f in frames:
            t0 = time.perf_counter()
            w.add(f)
            ts.append((time.perf_counter() - t0) * 1e3)
        w.finish()
    out["encode_frame256_ms"] = {"p50": pct(ts[5:], 50), "p99": pct(ts[5:], 99)}
    return out


# --- 2. fleet ---------------------------------------------------------------------------------

@ray.remote(num_cpus=0)
class NaiveWorker:
    """The naive prototype's policy actor: sync, one call = one arm = one model call."""

    def __init__(self) -> None:
        from policies.registry import build_policy

        self.policy = build_policy(RANDOM)

    def act(self, frame: np.ndarray, proprio: tuple, instruction: str, arm: str) -> tuple:
        from policies.base import PolicyInput

        t0 = time.perf_counter()
        res = self.policy.act([PolicyInput({"main": frame}, proprio, instruction, None, arm)])
        return res.outputs[0].action, time.perf_counter() - t0


@ray.remote(num_cpus=0)
class NaiveArm:
    """The naive prototype's robot loop: observe -> ray.get(policy(frame)) -> act."""

    def __init__(self, endpoint: str, name: str) -> None:
        from robots.client import BridgeClient

        self.name = name
        self.c = BridgeClient(endpoint, timeout_ms=2000)
        self.c.hello()

    def run(self, worker: Any, hz: float, steps: int) -> dict[str, Any]:
        self.c.reset(SCENE, f"naive-{time.time_ns()}")
        period = 1.0 / hz
        timing: dict[str, list[float]] = {k: [] for k in ("wake", "inference", "step")}
        late = 0
        walls = []
        nxt = time.perf_counter()
        for _ in range(steps):
            while (dt := nxt - time.perf_counter()) > 0:
                time.sleep(dt)
            t0 = time.perf_counter()
            obs = self.c.observe()
            action, inf_s = ray.get(worker.act.remote(obs.frames["main"], tuple(obs.proprio),
                                                      SCENE["instruction"], self.name))
            t_pol = time.perf_counter()
            walls.append(time.time_ns())
            self.c.act(action)
            t1 = time.perf_counter()
            late += t_pol > nxt + period
            timing["wake"].append((t0 - nxt) * 1e3)
            timing["inference"].append(inf_s * 1e3)
            timing["step"].append((t1 - nxt) * 1e3)
            nxt += period
            if nxt < time.perf_counter() - period:
                nxt = time.perf_counter()
        self.c.end_episode()
        return {"timing": timing, "late_steps": late, "walls": walls}


def arm_config(fleet: SimFleet, name: str) -> dict[str, Any]:
    return {"name": name, "endpoint": fleet.endpoints[name]["endpoint"], "station": "default",
            "capabilities": ["drawer"], "curve": None, "timeout_ms": 2000}


def summarize_arm(timing: dict[str, list[float]], walls: list[int], hz: float) -> dict[str, Any]:
    period_ms = 1e3 / hz
    step = np.asarray(timing["step"])
    inf = np.asarray(timing["inference"])
    overhead = step - inf
    n = len(step)
    achieved = (n - 1) / ((walls[-1] - walls[0]) / 1e9) if n > 1 else 0.0
    missed = int((step > period_ms).sum())
    return {
        "steps": n,
        "achieved_hz": round(achieved, 3),
        "missed": missed,
        "overhead": overhead,
        "inference": inf,
        "wake": np.asarray(timing["wake"]),
        "observe": np.asarray(timing.get("observe", [])),
        "policy": np.asarray(timing.get("policy", [])),
        "act": np.asarray(timing.get("act", [])),
    }


def fleet_scenario(fleet: SimFleet, n_arms: int, hz: float, seconds: float, mode: str,
                   media_dir: str, phases: str = "spread",
                   batch_wait_ms: float = 2.0, policy: dict[str, Any] | None = None,
                   idle_s: float = 0.0, arms_per_process: int = 1) -> dict[str, Any]:
    """One scenario; `policy`: the PolicyWorker's config (evalfleet modes; default `random`,
    a single-step policy: one query per step). `idle_s` > 0: also measure, after the warm-up,
    the CPU the same processes use while no episode runs (Ray's own per-process baseline)."""
    from orchestrator.episode import EpisodeSpec
    from policies.base import Chunking

    policy = policy or RANDOM
    names = fleet.arm_names()[:n_arms]
    steps = max(5, round(seconds * hz))
    warm_steps = max(3, int(hz))
    results: list[dict[str, Any]] = []
    if mode == "naive":
        worker = NaiveWorker.remote()
        arms = [NaiveArm.options(resources={station_resource("default"): 0.001}).remote(
            fleet.endpoints[nm]["endpoint"], nm) for nm in names]
        ray.get([a.run.remote(worker, hz, warm_steps) for a in arms])  # warm-up
        with CpuMeter() as cpu, ProcCpu() as pc:
            outs = ray.get([a.run.remote(worker, hz, steps) for a in arms], timeout=seconds * 5 + 60)
            cpu_s = pc.stop()
        for o in outs:
            results.append(summarize_arm(o["timing"], o["walls"], hz))
    else:
        record = mode == "record"
        worker = PolicyWorker.options(num_cpus=0.5, max_concurrency=1000).remote(
            policy, 32, batch_wait_ms)
        # as the runner does: the policy's chunking from its metadata (None: one query per step)
        chunking = Chunking.from_dict(ray.get(worker.metadata.remote()).get("chunking"))
        # as the runner places them: `arms_per_process` arms of the station per RobotHost
        hosts = HostPool(media_dir, arms_per_process)
        arms = [hosts.handle(arm_config(fleet, nm), "default") for nm in names]
        ray.get([a.hello.remote() for a in arms])

        def episode(eid0: int, k: int) -> list[Any]:
            ray.get([a.prepare.remote(SCENE, f"ep-{eid0 + i}") for i, a in enumerate(arms)])
            specs = [EpisodeSpec(
                episode_id=eid0 + i, campaign="bench", instruction=SCENE["instruction"],
                max_steps=k, control_hz=hz, needs_privileged=False, timeout_s=k / hz * 3 + 30,
                record=record, chunking=chunking,
                # none: arms start when launched, as the code before phases existed
                phase=None if phases == "none" else 0.0 if phases == "aligned" else i / len(arms))
                for i in range(len(arms))]
            outs = ray.get([a.run_episode.remote(s, worker) for a, s in zip(arms, specs)],
                           timeout=k / hz * 5 + 60)
            for o in outs:
                if o.status != "recorded":
                    raise RuntimeError(f"episode aborted: {o.reason}")
                # a random policy now and then succeeds by chance (the sim ends the episode):
                # its steps still count (figures are per step); anything else is an error
                if len(o.steps) != k and (o.terminated_by != "success" or len(o.steps) < k // 2):
                    raise RuntimeError(f"episode ended after {len(o.steps)} of {k} steps "
                                       f"({o.terminated_by}): the figures would be short")
            return outs

        episode(1000, warm_steps)
        idle: dict[str, float] | None = None
        if idle_s > 0:
            time.sleep(0.5)
            with ProcCpu() as pc:
                time.sleep(idle_s)
                idle = {k: round(v * 1e3 / idle_s, 2) for k, v in sorted(pc.stop().items())}
        with CpuMeter() as cpu, ProcCpu() as pc:
            outs = episode(2000, steps)
            cpu_s = pc.stop()
        chunks_per_arm = []
        for o in outs:
            walls = [s.command_wall_ns for s in o.steps]
            results.append(summarize_arm({k: list(v) for k, v in o.timing.items()}, walls, hz))
            chunks_per_arm.append(len({s.chunk_id for s in o.steps}))
    if mode == "naive":
        for a in arms:
            ray.kill(a)
    else:
        hosts.kill_all()
    ray.kill(worker)
    overhead = np.concatenate([r["overhead"] for r in results])
    total_steps = sum(r["steps"] for r in results)
    missed = sum(r["missed"] for r in results)
    per_arm = [{"steps": r["steps"], "achieved_hz": r["achieved_hz"], "missed": r["missed"],
                "overhead_p50_ms": pct(r["overhead"], 50), "overhead_p99_ms": pct(r["overhead"], 99)}
               for r in results]
    out = {
        "batch_wait_ms": batch_wait_ms if mode != "naive" else None,
        "mode": mode, "phases": phases if mode != "naive" else "aligned", "arms": n_arms, "target_hz": hz, "seconds": seconds,
        "arms_per_process": arms_per_process if mode != "naive" else 1,
        "steps": total_steps,
        "achieved_hz_min": min(r["achieved_hz"] for r in results),
        "achieved_hz_mean": round(statistics.mean(r["achieved_hz"] for r in results), 3),
        "missed": missed,
        "miss_pct": round(100.0 * missed / max(1, total_steps), 3),
        "overhead_p50_ms": pct(overhead, 50),
        "overhead_p99_ms": pct(overhead, 99),
        "overhead_p99_worst_arm_ms": max(a["overhead_p99_ms"] for a in per_arm),
        "overhead_max_ms": pct(overhead, 100),
        "inference_p50_ms": pct(np.concatenate([r["inference"] for r in results]), 50),
        "wake_p50_ms": pct(np.concatenate([r["wake"] for r in results]), 50),
        "wake_p99_ms": pct(np.concatenate([r["wake"] for r in results]), 99),
        "machine": cpu.to_dict(),
        "cpu_ms_per_step": {k: round(v * 1e3 / max(1, total_steps), 3)
                            for k, v in sorted(cpu_s.items())},
        "per_arm": per_arm,
    }
    # the orchestrator's side of a step: RobotActors + policy worker + Ray (raylet, GCS, other
    # Ray workers); the bridges (the arm's side) and this driver process, which only waits,
    # are left out
    out["cpu_orchestrator_ms_per_step"] = round(sum(
        v for k, v in out["cpu_ms_per_step"].items() if k not in ("bridges", "driver")), 3)
    if mode != "naive":
        out["policy"] = policy
        out["chunking"] = {"horizon": chunking.horizon, "execute_steps": chunking.execute_steps,
                           "temporal_ensemble": chunking.temporal_ensemble}
        out["policy_queries"] = sum(chunks_per_arm)  # chunks executed (one query each)
        if idle is not None:  # CPU ms per second with no episode running, by role
            out["idle_cpu_ms_per_s"] = idle
            out["idle_cpu_orchestrator_ms_per_arm_step"] = round(sum(
                v for k, v in idle.items() if k not in ("bridges", "driver")) / (n_arms * hz), 3)
    for part in ("observe", "policy", "act"):
        vals = np.concatenate([r[part] for r in results])
        if vals.size:
            out[f"{part}_p50_ms"], out[f"{part}_p99_ms"] = pct(vals, 50), pct(vals, 99)
    if n_arms in TARGETS and TARGETS[n_arms] == hz:
        out["target"] = {
            "rate_held": out["achieved_hz_min"] >= 0.99 * hz,
            "miss_lt_1pct": out["miss_pct"] < 1.0,
            "overhead_p99_le_20ms": out["overhead_p99_ms"] <= 20.0,
        }
    return out


def print_row(r: dict[str, Any]) -> None:
    print(f"{r['mode']:>9} {r['phases']:>7} {r['arms']:>3} arms @ {r['target_hz']:>4.1f} Hz: held "
          f"{r['achieved_hz_min']:.2f} (mean {r['achieved_hz_mean']:.2f}) Hz, missed "
          f"{r['miss_pct']:.2f}%, overhead p50 {r['overhead_p50_ms']:.2f} p99 "
          f"{r['overhead_p99_ms']:.2f} (worst arm {r['overhead_p99_worst_arm_ms']:.2f}, max "
          f"{r['overhead_max_ms']:.1f}) ms, inference p50 {r['inference_p50_ms']:.3f} ms, "
          f"wake p99 {r['wake_p99_ms']:.2f} ms | cpu {r['machine']['cpu_busy']:.0%} load "
          f"{r['machine']['loadavg_before'][0]}\n      cpu ms/step: "
          + " ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_step"].items())
          + f" = {sum(r['cpu_ms_per_step'].values()):.2f}", flush=True)


# --- 2c. chunked: an H=16 / execute 8 policy vs one query per step, same arms, same run -------

CHUNKED_HZ = 15.0
CHUNKED_TARGETS = {"miss_pct_lt": 1.0, "overhead_p99_ms_le": 20.0, "cpu_orchestrator_ms_le": 2.0}


def chunked_policy(horizon: int, execute: int, inference_ms: float, hz: float) -> dict[str, Any]:
    return {"name": "chunked", "kind": "tests.policy_kit:ChunkedPolicy",
            "options": {"horizon": horizon, "execute_steps": execute,
                        "inference_ms": inference_ms, "control_hz": hz}}


def chunked_comparison(fleet: SimFleet, n_arms: int, hz: float, seconds: float, media_dir: str,
                       repeat: int, horizon: int, execute: int, inference_ms: float,
                       batch_wait_ms: float, phases: str = "spread",
                       arms_per_process: int = 4) -> dict[str, Any]:
    """Issue 10's case: N arms at `hz` running the `chunked` test policy (H x 7 ee_delta
    chunks, `execute` rows open-loop, the next chunk queried in the background), recording on,
    arms spread, `arms_per_process` arms per RobotHost process (the fleet's default); and, in
    the same run and on the same arms, the path every step took before this issue: a
    single-step policy (`random`: one policy query per step), one process per arm; and the
    chunked policy with one process per arm (what the hosts alone save). Repeats cycle through
    the cases, so all see the same machine."""
    chunked = chunked_policy(horizon, execute, inference_ms, hz)
    cases = {"single_step": (RANDOM, 1), "chunked_process_per_arm": (chunked, 1),
             "chunked": (chunked, arms_per_process)}
    rows: list[dict[str, Any]] = []
    for rep in range(repeat):
        for case, (pol, per_process) in cases.items():
            r = fleet_scenario(fleet, n_arms, hz, seconds, "record", media_dir, phases,
                               batch_wait_ms, policy=pol, idle_s=3.0,
                               arms_per_process=per_process)
            r["case"], r["repeat"] = case, rep
            print(f"[{case}] ", end="")
            print_row(r)
            print(f"      orchestrator cpu {r['cpu_orchestrator_ms_per_step']:.3f} ms per arm-step "
                  f"(of which {r['idle_cpu_orchestrator_ms_per_arm_step']:.3f} ms is what the same "
                  f"processes use idle), {r['policy_queries']} policy queries for {r['steps']} "
                  "steps", flush=True)
            rows.append(r)

    def worst(case: str) -> dict[str, Any]:
        rs = [r for r in rows if r["case"] == case]
        return {
            "runs": len(rs),
            "miss_pct_max": max(r["miss_pct"] for r in rs),
            "late_steps": sum(r["missed"] for r in rs),
            "achieved_hz_min": min(r["achieved_hz_min"] for r in rs),
            "overhead_p50_ms": [min(r["overhead_p50_ms"] for r in rs),
                                max(r["overhead_p50_ms"] for r in rs)],
            "overhead_p99_ms": [min(r["overhead_p99_ms"] for r in rs),
                                max(r["overhead_p99_ms"] for r in rs)],
            "cpu_orchestrator_ms_per_arm_step": [
                min(r["cpu_orchestrator_ms_per_step"] for r in rs),
                max(r["cpu_orchestrator_ms_per_step"] for r in rs)],
            "cpu_bridges_ms_per_arm_step": [
                min(r["cpu_ms_per_step"].get("bridges", 0.0) for r in rs),
                max(r["cpu_ms_per_step"].get("bridges", 0.0) for r in rs)],
            # mean over the runs, per role: where the orchestrator's CPU goes
            "cpu_ms_per_arm_step_by_role": {
                k: round(statistics.mean(r["cpu_ms_per_step"].get(k, 0.0) for r in rs), 3)
                for k in sorted({k for r in rs for k in r["cpu_ms_per_step"]})},
            # the part of it the same processes burn with no episode running (Ray's baseline)
            "idle_cpu_orchestrator_ms_per_arm_step": round(statistics.mean(
                r["idle_cpu_orchestrator_ms_per_arm_step"] for r in rs), 3),
            "queries_per_step": round(sum(r["policy_queries"] for r in rs)
                                      / max(1, sum(r["steps"] for r in rs)), 4),
            "machine_cpu_busy": [min(r["machine"]["cpu_busy"] for r in rs),
                                 max(r["machine"]["cpu_busy"] for r in rs)],
        }

    before, after = worst("single_step"), worst("chunked")
    per_arm_process = worst("chunked_process_per_arm")
    cpu_b = statistics.mean(r["cpu_orchestrator_ms_per_step"] for r in rows
                            if r["case"] == "single_step")
    cpu_a = statistics.mean(r["cpu_orchestrator_ms_per_step"] for r in rows
                            if r["case"] == "chunked")
    summary = {
        "arms": n_arms, "target_hz": hz, "seconds": seconds, "phases": phases,
        "horizon": horizon, "execute_steps": execute, "inference_ms": inference_ms,
        "recording": True,
        "arms_per_process": arms_per_process,
        "before_single_step": before, "after_chunked": after,
        "chunked_one_process_per_arm": per_arm_process,
        "cpu_orchestrator_ms_per_arm_step_mean": {"before": round(cpu_b, 3),
                                                  "after": round(cpu_a, 3),
                                                  "ratio": round(cpu_a / cpu_b, 3) if cpu_b else None},
        "targets": CHUNKED_TARGETS,
        "meets_target": {
            "miss_lt_1pct": after["miss_pct_max"] < CHUNKED_TARGETS["miss_pct_lt"],
            "overhead_p99_le_20ms": after["overhead_p99_ms"][1] <= CHUNKED_TARGETS["overhead_p99_ms_le"],
            "cpu_orchestrator_le_2ms": after["cpu_orchestrator_ms_per_arm_step"][1]
            <= CHUNKED_TARGETS["cpu_orchestrator_ms_le"],
        },
    }
    print("chunked summary", json.dumps(summary), flush=True)
    return {"rows": rows, "summary": summary}


# --- 2b. policy serving: Ray actor call vs Ray Serve vs the ZeroMQ data plane --------------

@ray.remote(num_cpus=0, max_concurrency=1000)
class RayBatchingWorker:
    """The previous design, kept here as the baseline: an async actor batching `act(input)`
    calls that carry the frames as Ray arguments (object store above 100 KB)."""

    def __init__(self, batch_wait_s: float = 0.002) -> None:
        import asyncio

        from policies.registry import build_policy

        self.policy = build_policy(RANDOM)
        self.wait = batch_wait_s
        self.pending: list = []
        self.timer = None
        self.asyncio = asyncio

    async def act(self, inp: Any) -> tuple:
        loop = self.asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append((inp, fut))
        if self.timer is None:
            self.timer = loop.call_later(self.wait, self._flush)
        return await fut

    def _flush(self) -> None:
        self.timer = None
        batch, self.pending = self.pending, []
        res = self.policy.act([b[0] for b in batch])
        for (_, fut), out in zip(batch, res.outputs, strict=True):
            fut.set_result((out.action, res.inference_s, len(batch)))


@ray.remote(num_cpus=0)
class ServingCaller:
    def run(self, kind: str, target: Any, plane: dict | None, hz: float, steps: int,
            start_wall: float, phase: float, arm: str) -> list[float]:
        from orchestrator.actors.dataplane import PolicyClient
        from policies.base import PolicyInput

        frame = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        inp = PolicyInput({"main": frame}, (0.0,) * 7, SCENE["instruction"], None, arm)
        client = (PolicyClient(plane["endpoint"], plane["instance"], timeout_s=10)
                  if kind == "dataplane" else None)
        period = 1.0 / hz
        nxt = time.perf_counter() + (start_wall + phase * period - time.time())
        out = []
        for _ in range(steps):
            while (d := nxt - time.perf_counter()) > 0:
                time.sleep(d)
            t0 = time.perf_counter()
            if kind == "dataplane":
                client.act(inp)
            elif kind == "serve":
                target.remote(inp).result(timeout_s=10)
            else:
                ray.get(target.act.remote(inp), timeout=10)
            out.append((time.perf_counter() - t0) * 1e3)
            nxt += period
        if client is not None:
            client.close()
        return out


def serving(n: int, hz: float, seconds: float, kinds: list[str]) -> list[dict[str, Any]]:
    rows = []
    callers = [ServingCaller.remote() for _ in range(n)]
    steps = int(seconds * hz)
    for kind in kinds:
        plane, handle = None, None
        if kind == "serve":
            try:
                from ray import serve
            except ImportError as e:
                rows.append({"kind": kind, "skipped": f"ray[serve] not installed: {e}"})
                continue
            from policies.registry import build_policy

            @serve.deployment(max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
            class ServePolicy:
                def __init__(self) -> None:
                    self.policy = build_policy(RANDOM)

                @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
                async def __call__(self, inputs: list) -> list:
                    res = self.policy.act(inputs)
                    return [(o.action, res.inference_s, len(inputs)) for o in res.outputs]

            t0 = time.perf_counter()
            handle = serve.run(ServePolicy.bind(), name="bench-policy", route_prefix=None)
            start_s = time.perf_counter() - t0
            target = handle
        elif kind == "ray_actor":
            target = RayBatchingWorker.remote()
        else:
            target = PolicyWorker.options(num_cpus=0, max_concurrency=1000).remote(RANDOM, 32, 2.0)
            plane = ray.get(target.reset.remote("warm", "x"))
        for phases in ("aligned", "spread"):
            # warm-up, then measure
            ray.get([c.run.remote(kind, target, plane, hz, 3, time.time() + 0.5, 0.0, f"a{i}")
                     for i, c in enumerate(callers)])
            with ProcCpu() as pc:
                start = time.time() + 0.5
                lat = ray.get([c.run.remote(kind, target, plane, hz, steps, start,
                                            i / n if phases == "spread" else 0.0, f"a{i}")
                               for i, c in enumerate(callers)], timeout=seconds * 5 + 60)
                cpu = pc.stop()
            allv = np.concatenate(lat)
            row = {"kind": kind, "callers": n, "hz": hz, "phases": phases,
                   "call_p50_ms": pct(allv, 50), "call_p99_ms": pct(allv, 99),
                   "call_max_ms": pct(allv, 100),
                   "cpu_ms_per_call": round(sum(cpu.values()) * 1e3 / allv.size, 3),
                   "loadavg": round(os.getloadavg()[0], 2)}
            if kind == "serve":
                row["serve_start_s"] = round(start_s, 2)
            print(f"serving {kind:>10} {phases:>7} {n} callers @ {hz} Hz: call p50 "
                  f"{row['call_p50_ms']} p99 {row['call_p99_ms']} ms, cpu/call "
                  f"{row['cpu_ms_per_call']} ms", flush=True)
            rows.append(row)
        if kind == "serve":
            from ray import serve

            serve.shutdown()
        else:
            ray.kill(target)
    for c in callers:
        ray.kill(c)
    return rows


# --- 3. campaign ------------------------------------------------------------------------------

DEMO_POLICIES = (("oracle", "oracle"), ("vision-heuristic", "vision_heuristic"), ("random", "random"))


def campaign(arms: int, trials: int, protocol: str, task_limit: int | None) -> dict[str, Any]:
    """`evalfleet campaign run` as a user runs it, in a subprocess, against running bridges."""
    import yaml
    from sqlalchemy import Integer, cast, func, select

    from orchestrator.store import migrate
    from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
    from orchestrator.store.db import Store, make_engine
    from orchestrator.store.models import Campaign, Episode, Step, Trial
    from protocols.loader import load_protocol, resolve_protocol_path

    home = tempfile.mkdtemp(prefix="evalfleet-bench-campaign-")
    url = f"sqlite:///{home}/evalfleet.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    loaded = load_protocol(resolve_protocol_path(protocol))
    if task_limit:  # a shorter campaign (an estimate): the protocol's first N tasks
        from dataclasses import replace as dc_replace

        tasks = loaded.protocol.tasks[:task_limit]
        loaded = dc_replace(loaded, protocol=loaded.protocol.model_copy(update={"tasks": tasks}))
    with store.write() as ses:
        for name, kind in DEMO_POLICIES:
            register_policy(ses, PolicySpec(name=name, kind=kind, config={"kind": kind, "options": {}}))
        c = create_campaign(ses, name="bench-demo", loaded=loaded,
                            policy_names=[p for p, _ in DEMO_POLICIES], trials_per_task=trials, seed=0)
        cid = c.id
    n_trials = len(loaded.protocol.tasks) * trials * len(DEMO_POLICIES)
    env = {**os.environ, "EVALFLEET_HOME": home, "EVALFLEET_DATABASE_URL": url, "COLUMNS": "120"}
    exe = str(Path(sys.executable).with_name("evalfleet"))
    with SimFleet(arms) as fleet:
        cfg = fleet.config()
        fleet_yaml = Path(home) / "fleet.yaml"
        fleet_yaml.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        with CpuMeter() as cpu:
            t0_ns = time.time_ns()
            proc = subprocess.run([exe, "campaign", "run", "bench-demo", "--fleet", str(fleet_yaml)],
                                  env=env, capture_output=True, text=True, timeout=3600,
                                  check=False)
            t1_ns = time.time_ns()
    if proc.returncode != 0:
        raise RuntimeError(f"campaign run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    with store.read() as ses:
        eps = select(Episode.id).join(Trial, Trial.id == Episode.trial_id).where(
            Trial.campaign_id == cid)
        first_cmd, last_cmd, n_steps, n_late = ses.execute(
            select(func.min(Step.command_wall_ns), func.max(Step.command_wall_ns),
                   func.count(), func.sum(cast(Step.late, Integer)))
            .where(Step.episode_id.in_(eps))).one()
        recorded = ses.scalar(select(func.count()).select_from(Episode).join(Trial).where(
            Trial.campaign_id == cid, Episode.status == "recorded"))
        aborted = ses.scalar(select(func.count()).select_from(Episode).join(Trial).where(
            Trial.campaign_id == cid, Episode.status == "aborted"))
        status = ses.scalar(select(Campaign.status).where(Campaign.id == cid))
    engine.dispose()
    wall_s = (t1_ns - t0_ns) / 1e9
    steady_s = (last_cmd - first_cmd) / 1e9
    return {
        "protocol": protocol, "tasks": len(loaded.protocol.tasks),
        "estimate_from_first_tasks": task_limit, "policies": [p for p, _ in DEMO_POLICIES],
        "arms": arms, "trials_per_task": trials, "trials": n_trials, "status": status,
        "recorded": recorded, "aborted": aborted, "steps": n_steps, "late_steps": int(n_late or 0),
        "first_action_s": round((first_cmd - t0_ns) / 1e9, 2),
        "wall_s": round(wall_s, 1),
        "episodes_per_hour": round(3600 * recorded / wall_s, 1),
        "episodes_per_hour_steady": round(3600 * recorded / steady_s, 1) if steady_s > 0 else None,
        "machine": cpu.to_dict(),
        "cli_tail": proc.stdout.strip().splitlines()[-3:],
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (arms, mode, phases) over the repeats: the worst value and the spread."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arms"], r["target_hz"], r["mode"], r["phases"]), []).append(r)
    out = []
    for (arms, hz, mode, phases), rs in sorted(groups.items()):
        def vals(k: str, rs: list[dict[str, Any]] = rs) -> list[float]:
            return [r[k] for r in rs]

        line = {"arms": arms, "target_hz": hz, "mode": mode, "phases": phases, "runs": len(rs),
                "achieved_hz_min": min(vals("achieved_hz_min")),
                "miss_pct_max": max(vals("miss_pct")),
                "overhead_p50_ms": [min(vals("overhead_p50_ms")), max(vals("overhead_p50_ms"))],
                "overhead_p99_ms": [min(vals("overhead_p99_ms")), max(vals("overhead_p99_ms"))],
                "overhead_p99_worst_arm_ms": max(vals("overhead_p99_worst_arm_ms")),
                "inference_p50_ms": max(vals("inference_p50_ms")),
                "cpu_ms_per_step": [round(min(sum(r["cpu_ms_per_step"].values()) for r in rs), 2),
                                    round(max(sum(r["cpu_ms_per_step"].values()) for r in rs), 2)],
                "machine_cpu_busy": [min(r["machine"]["cpu_busy"] for r in rs),
                                     max(r["machine"]["cpu_busy"] for r in rs)],
                "loadavg_1m": [min(r["machine"]["loadavg_before"][0] for r in rs),
                               max(r["machine"]["loadavg_before"][0] for r in rs)]}
        if TARGETS.get(arms) == hz:
            line["meets_target"] = (line["achieved_hz_min"] >= 0.99 * hz
                                    and line["miss_pct_max"] < 1.0
                                    and line["overhead_p99_ms"][1] <= 20.0)
        out.append(line)
    return out


# --- main -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 s runs, no campaign")
    ap.add_argument("--only", choices=("micro", "fleet", "chunked", "serving", "campaign"),
                    action="append")
    ap.add_argument("--serve-extra", default=None,
                    help="a pip --target dir holding ray[serve]'s extra dependencies (not in the "
                    "project's venv); put on the PYTHONPATH of Ray's workers")
    ap.add_argument("--arms", default="1,4,8,16")
    ap.add_argument("--hz", type=float, default=None, help="one rate for every arm count")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--modes", default="naive,record,norecord")
    ap.add_argument("--phases", default="spread",
                    help="evalfleet modes: aligned (every arm on the same slot: worst case for "
                    "the CPU, best for batching), spread (the runner's default), or both")
    ap.add_argument("--campaign-arms", type=int, default=4)
    ap.add_argument("--campaign-tasks", type=int, default=None,
                    help="only the first N tasks of rt2_generalization (an estimate, said so in the JSON)")
    ap.add_argument("--first-action-repeats", type=int, default=2,
                    help="extra 1-task campaigns run only to measure the time to the first action")
    ap.add_argument("--batch-wait-ms", type=float, default=2.0,
                    help="the policy worker's batch window (fleet.yaml policy_workers.batch_wait_ms)")
    ap.add_argument("--chunk-horizon", type=int, default=16, help="chunked: rows per chunk (H)")
    ap.add_argument("--chunk-execute", type=int, default=8,
                    help="chunked: rows executed before the next chunk takes over")
    ap.add_argument("--chunk-inference-ms", type=float, default=0.0,
                    help="chunked: the test policy's simulated model time per batch")
    ap.add_argument("--arms-per-process", type=int, default=4,
                    help="chunked: arms per RobotHost process (fleet.yaml arms_per_process)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default=None,
                    help="default benchmarks/results/fleet.json; fleet_chunked.json with "
                    "`--only chunked` alone (a partial run never overwrites fleet.json)")
    args = ap.parse_args()
    sections = set(args.only or ("micro", "fleet", "chunked", "serving", "campaign"))
    if args.out is None:
        name = "fleet_chunked.json" if sections == {"chunked"} else "fleet.json"
        args.out = str(REPO / "benchmarks" / "results" / name)
    if args.serve_extra:
        sys.path.append(args.serve_extra)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (os.environ.get("PYTHONPATH"), str(REPO), args.serve_extra) if p)
    if args.quick:
        args.seconds = min(args.seconds, 5.0)
        sections.discard("campaign") if not args.only else None
    arm_counts = [int(x) for x in args.arms.split(",")]
    modes = args.modes.split(",")
    result: dict[str, Any] = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "ray": ray.__version__, "platform": platform.platform(),
                    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
    }
    media = tempfile.TemporaryDirectory(prefix="evalfleet-bench-media-")
    if sections & {"micro", "fleet", "chunked", "serving"}:
        with SimFleet(max(arm_counts)) as fleet:
            # the same Ray as `evalfleet campaign run` starts (orchestrator/cli_fleet.py)
            init_ray(None, fleet.config())
            try:
                if "micro" in sections:
                    result["micro"] = micro(fleet, 300 if args.quick else 1000)
                    print(json.dumps(result["micro"]), flush=True)
                if "fleet" in sections:
                    rows = []
                    for rep in range(args.repeat):
                        for n in arm_counts:
                            hz = args.hz or DEFAULT_RATES.get(n, 5.0)
                            for mode in modes:
                                for ph in (args.phases.split(",") if mode != "naive" else ["aligned"]):
                                    r = fleet_scenario(fleet, n, hz, args.seconds, mode, media.name,
                                                       ph, args.batch_wait_ms)
                                    r["repeat"] = rep
                                    print_row(r)
                                    rows.append(r)
                    result["fleet"] = rows
                    result["fleet_summary"] = summarize(rows)
                    for line in result["fleet_summary"]:
                        print("summary", json.dumps(line), flush=True)
                if "chunked" in sections:  # the largest arm count only, arms spread
                    result["chunked"] = chunked_comparison(
                        fleet, max(arm_counts), args.hz or CHUNKED_HZ, args.seconds, media.name,
                        args.repeat, args.chunk_horizon, args.chunk_execute,
                        args.chunk_inference_ms, args.batch_wait_ms,
                        arms_per_process=args.arms_per_process)
                if "serving" in sections:
                    result["serving"] = serving(16, 5.0, min(args.seconds, 10.0),
                                                ["ray_actor", "dataplane", "serve"])
            finally:
                ray.shutdown()
    if "campaign" in sections:
        c = campaign(args.campaign_arms, 1, "rt2_generalization", args.campaign_tasks)
        print(f"campaign: {c['recorded']} episodes ({c['aborted']} aborted) of {c['trials']} trials on "
              f"{c['arms']} arms in {c['wall_s']} s = {c['episodes_per_hour']} episodes/h "
              f"(steady {c['episodes_per_hour_steady']}); first action {c['first_action_s']} s "
              f"after `campaign run` started | cpu {c['machine']['cpu_busy']:.0%}", flush=True)
        result["campaign"] = c
        firsts = [c["first_action_s"]]
        for _ in range(args.first_action_repeats):
            c1 = campaign(args.campaign_arms, 1, "rt2_generalization", 1)
            firsts.append(c1["first_action_s"])
            print(f"first action (1-task campaign): {c1['first_action_s']} s", flush=True)
        result["first_action_s"] = {"runs": firsts, "max": max(firsts), "target_s": 15.0,
                                    "meets_target": max(firsts) <= 15.0}
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
