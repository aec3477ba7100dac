"""A remote policy's server process killed mid-episode, and a server swapped for another
policy under a running campaign (issue 11; integrity first).

The policy runs in a real `evalfleet policy serve` process (a subprocess, killed with
SIGKILL), evaluated as kind `openpi` from the Ray policy worker on one sim arm:

- killed mid-episode and restarted on the same port: exactly that episode is aborted (cause
  `worker`, not counted), its trial is re-queued and run again, every trial ends with one
  counted episode, and no step of the aborted episode was commanded after the kill; every
  applied action is a row a server logged as sent (nothing stale, nothing made up);
- restarted with ANOTHER policy on the same port: nothing it answers is executed under the
  registered policy; the episodes fail as policy errors naming the change, and the trials
  give up instead of counting the other policy's episodes.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from orchestrator.runner import FleetRunner
from orchestrator.simfleet import SimFleet
from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
from orchestrator.store.models import Episode, Step, Trial
from policies.base import PolicyBatchResult, PolicyInput
from policies.baselines import RandomPolicy
from policies.oracle import space_io
from protocols.loader import load_protocol
from robots.spaces import PolicyIO
from tests.integration.fleet_support import (
    FAST_PROTOCOL,
    IMAGE,
    check_invariants,
    fast_fleet,
    ray_local,  # noqa: F401 - pytest fixture (module-scoped local Ray)
    run_to_done,
    started,
)
from tests.integration.test_policy_serve import SIM_MAPPING

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[2]
KIND = "tests.integration.test_policy_serve_kill:LoggedRandom"


class LoggedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = 0
    log: str  # a JSON line per action row sent, flushed before the reply leaves


class LoggedRandom(RandomPolicy):
    """The random policy (a class kind), logging every row it answers to a file, so a test
    in another process knows exactly what the server sent."""

    Options = LoggedOptions
    requires_path = False

    @classmethod
    def declared_io(cls, options: LoggedOptions) -> PolicyIO:
        return space_io("ee_delta")

    def __init__(self, options: LoggedOptions, name: str = "logged") -> None:
        super().__init__({"seed": options.seed, "scale": 0.5}, name=name)
        self._log = open(options.log, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        result = super().act(inputs)
        for out in result.outputs:
            c = out.the_chunk
            for i in range(c.horizon):
                self._log.write(json.dumps([float(v) for v in c.row(i)]) + "\n")
        self._log.flush()
        return result

    def close(self) -> None:
        self._log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(tmp: Path, port: int, *, seed: int, log: Path) -> Iterator[subprocess.Popen[str]]:
    """`evalfleet policy serve` of a LoggedRandom on `port`, ready when yielded."""
    cfg = tmp / f"policy-{seed}.yaml"
    cfg.write_text(yaml.safe_dump({"name": "logged", "kind": KIND,
                                   "options": {"seed": seed, "log": str(log)}}))
    mapping = tmp / "sim.yaml"
    mapping.write_text(yaml.safe_dump(SIM_MAPPING))
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "evalfleet"), "policy", "serve", str(cfg),
         "--host", "127.0.0.1", "--port", str(port), "--preset", "generic", "--mapping",
         str(mapping), "--batch-wait-ms", "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout or ()],
                     daemon=True).start()
    try:
        seen: list[str] = []
        while not any("ready" in ln for ln in seen):
            try:
                seen.append(lines.get(timeout=60))
            except queue.Empty:
                raise AssertionError(f"serve printed no 'ready' line: {seen}") from None
            if proc.poll() is not None and lines.empty():
                raise AssertionError(f"serve exited {proc.returncode}: {seen}")
        assert re.search(rf"127\.0\.0\.1:{port}", "".join(seen)), seen
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _campaign(store: Any, port: int) -> int:
    spec = PolicySpec(name="remote", kind="openpi", config={
        "kind": "openpi",
        "options": {"url": f"ws://127.0.0.1:{port}", "preset": "generic",
                    "mapping": SIM_MAPPING, "control_hz": 10.0, "horizon": 1,
                    "execute_steps": 1, "call_timeout_s": 5.0, "connect_timeout_s": 5.0,
                    "backoff_max_s": 0.5}})
    with store.write() as s:
        register_policy(s, spec)
        return create_campaign(s, name="served", loaded=load_protocol(FAST_PROTOCOL),
                               policy_names=["remote"], trials_per_task=1, seed=1).id


def _rows(*logs: Path) -> set[tuple[float, ...]]:
    out: set[tuple[float, ...]] = set()
    for log in logs:
        if log.exists():
            out |= {tuple(json.loads(ln)) for ln in log.read_text().splitlines() if ln}
    return out


def _steps(store: Any, cid: int) -> dict[int, list[tuple[tuple[float, ...], int]]]:
    """episode id -> its steps' (action, command wall ns), in order."""
    with store.read() as s:
        rows = s.execute(
            select(Step.episode_id, Step.action, Step.command_wall_ns)
            .join(Episode, Episode.id == Step.episode_id)
            .join(Trial, Trial.id == Episode.trial_id).where(Trial.campaign_id == cid)
            .order_by(Step.episode_id, Step.idx)).all()
    out: dict[int, list[tuple[tuple[float, ...], int]]] = {}
    for eid, action, wall in rows:
        out.setdefault(eid, []).append((tuple(action), wall))
    return out


@pytest.mark.usefixtures("ray_local")
def test_a_server_killed_mid_episode_aborts_and_requeues_exactly_that_episode(
        sqlite_store: Any, tmp_path: Path) -> None:
    store, media, port = sqlite_store, tmp_path / "media", _free_port()
    first, second = tmp_path / "sent-1.jsonl", tmp_path / "sent-2.jsonl"
    state: dict[str, Any] = {}
    with serve(tmp_path, port, seed=3, log=first) as proc:
        cid = _campaign(store, port)
        with SimFleet(1, image_size=IMAGE) as fleet:
            runner = FleetRunner(store, fast_fleet(fleet, timeout_ms=3000), media_dir=str(media))

            def tick(r: FleetRunner) -> None:
                if "killed" in state:
                    return
                job = r.arms["sim-1"].job
                # mid-episode: this episode has been answered a few rows already
                if job is None or job.phase != "run" or len(_rows(first)) < 14:
                    return
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                state["killed"] = time.time_ns()
                state["episode"] = job.episode_id
                # back on the same port before the next episode is given out (the runner
                # waits for this tick): the re-queued trial runs against it
                state["restart"] = serve(tmp_path, port, seed=3, log=second)
                state["restart"].__enter__()

            try:
                with started(runner):
                    run_to_done(runner, deadline_s=200, on_tick=tick)
            finally:
                if "restart" in state:
                    state["restart"].__exit__(None, None, None)
    assert "killed" in state, "the server was never killed mid-episode"
    audit = check_invariants(store, media, [cid])
    assert audit.trials == 4 and audit.counted == 4 and audit.recorded == 4
    assert [eid for eid, _, _ in audit.aborted] == [state["episode"]], audit.aborted
    with store.read() as s:
        ep = s.get(Episode, state["episode"])
        assert ep is not None and ep.abort_cause == "worker" and not ep.counted
        assert "policy 'remote'" in (ep.abort_reason or ""), ep.abort_reason
    steps = _steps(store, cid)
    killed_steps = steps.get(state["episode"], [])
    assert 0 < len(killed_steps) < 10  # stopped mid-episode, its steps kept
    assert all(wall <= state["killed"] for _, wall in killed_steps)  # nothing after the kill
    sent = _rows(first, second)
    applied = [a for per in steps.values() for a, _ in per]
    assert applied and set(applied) <= sent  # every action is a row a server sent


@pytest.mark.usefixtures("ray_local")
def test_a_server_swapped_for_another_policy_never_counts_under_the_registered_one(
        sqlite_store: Any, tmp_path: Path) -> None:
    store, media, port = sqlite_store, tmp_path / "media", _free_port()
    first, other = tmp_path / "sent-1.jsonl", tmp_path / "sent-other.jsonl"
    state: dict[str, Any] = {}
    with serve(tmp_path, port, seed=3, log=first) as proc:
        cid = _campaign(store, port)
        with SimFleet(1, image_size=IMAGE) as fleet:
            runner = FleetRunner(store, fast_fleet(fleet, timeout_ms=3000), media_dir=str(media))

            def tick(r: FleetRunner) -> None:
                if "swapped" in state:
                    return
                with store.read() as s:
                    done = s.scalar(select(Episode.id).where(Episode.status == "recorded"))
                if done is None:
                    return
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                # another policy (seed 4: another checksum) on the same URL
                state["swapped"] = serve(tmp_path, port, seed=4, log=other)
                state["swapped"].__enter__()

            try:
                with started(runner):
                    run_to_done(runner, deadline_s=200, on_tick=tick)
            finally:
                if "swapped" in state:
                    state["swapped"].__exit__(None, None, None)
    assert "swapped" in state
    with store.read() as s:
        eps = list(s.scalars(select(Episode).join(Trial, Trial.id == Episode.trial_id)
                             .where(Trial.campaign_id == cid)))
    counted = [e for e in eps if e.counted]
    changed = [e for e in eps if "now serves another policy" in (e.abort_reason or "")]
    assert changed and all(not e.counted and e.abort_cause == "policy" for e in changed)
    # no counted episode ran on the other policy: every counted action came from the first
    steps = _steps(store, cid)
    counted_actions = {a for e in counted for a, _ in steps.get(e.id, [])}
    assert counted and counted_actions <= _rows(first)
    assert not _rows(other) & {a for per in steps.values() for a, _ in per}
