"""Helpers for the fleet tests (tests/integration/test_fleet_*.py, tests/e2e/test_demo.py).

- a short protocol (tests/data/fleet_fast.yaml: 10 steps at 10 Hz) and campaigns on it;
- a local Ray started by the tests (never one found on the machine), reused across modules
  while each module leaves it clean;
- the invariants every fault test checks: each planned trial has exactly one counted episode,
  aborted attempts keep their reason, every media file has its row and checksum and no row
  points at a missing file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.fleet_config import FleetConfig
from orchestrator.recording import verify_media
from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
from orchestrator.store.db import Store
from orchestrator.store.models import Episode, Robot, Trial
from protocols.loader import load_protocol

REPO = Path(__file__).resolve().parents[2]
FAST_PROTOCOL = REPO / "tests" / "data" / "fleet_fast.yaml"
STATIONS = ("default", "a", "b")
IMAGE = "96x96"  # small frames: the tests are about faults and counts, not pixels


def new_campaign(
    store: Store,
    name: str,
    *,
    policies: Sequence[str] = ("rand-a", "rand-b"),
    trials: int = 1,
    priority: int = 0,
    seed: int = 1,
    protocol: Path = FAST_PROTOCOL,
) -> int:
    """A campaign of random policies on the fast protocol; returns its id."""
    loaded = load_protocol(protocol)
    with store.write() as s:
        for p in policies:
            register_policy(s, PolicySpec(name=p, kind="random",
                                          config={"kind": "random", "options": {}}))
        c = create_campaign(s, name=name, loaded=loaded, policy_names=list(policies),
                            trials_per_task=trials, seed=seed, priority=priority)
        return c.id


def fast_fleet(fleet: Any, *, timeout_ms: int = 500, lease_s: float = 30.0,
               **policy_workers: Any) -> FleetConfig:
    """SimFleet's config with a short bridge timeout, so a dead bridge is noticed quickly."""
    cfg = fleet.config(**policy_workers)
    arms = tuple(a.model_copy(update={"timeout_ms": timeout_ms}) for a in cfg.arms)
    return cfg.model_copy(update={"arms": arms, "lease_s": lease_s})


#: The local Ray that ray_local started (its GCS address), reused by the next test module.
_OURS: dict[str, str] = {}


def _ours_and_clean(ray: Any) -> bool:
    """Ray is up, it is the instance ray_local started, and nothing holds a CPU (no actor
    left behind by the previous module): safe to hand to the next module."""
    if not ray.is_initialized():
        return False
    try:
        if ray.get_runtime_context().gcs_address != _OURS.get("gcs"):
            return False
        total = ray.cluster_resources().get("CPU", 0.0)
        return total > 0 and ray.available_resources().get("CPU", 0.0) >= total
    except Exception:  # noqa: BLE001 - any doubt: start a fresh one
        return False


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray for the test module (address="local": never join a cluster that something
    else on this machine started), with the station resources the tests use. Started once
    and handed from module to module while each leaves it clean (every CPU free: no actor
    left behind); otherwise shut down and started fresh. tests/conftest.py shuts it down at
    the end of the session."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not _ours_and_clean(ray):
        if ray.is_initialized():
            ray.shutdown()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 resources={f"station:{s}": 100.0 for s in STATIONS})
        _OURS["gcs"] = ray.get_runtime_context().gcs_address
    try:
        yield
    finally:
        if not _ours_and_clean(ray):
            ray.shutdown()


@contextmanager
def started(runner: Any) -> Iterator[Any]:
    """runner.start() ... runner.shutdown(), even when the test fails."""
    try:
        runner.start()
        yield runner
    finally:
        runner.shutdown()


def run_to_done(runner: Any, *, deadline_s: float,
                on_tick: Callable[[Any], None] | None = None) -> float:
    """runner.run(until_done=True) with a hard deadline; returns the seconds it took."""
    t0 = time.monotonic()
    timed_out = []

    def stop() -> bool:
        if time.monotonic() - t0 > deadline_s:
            timed_out.append(True)
            return True
        return False

    runner.run(until_done=True, should_stop=stop, on_tick=on_tick)
    if timed_out:
        arms = {a.cfg.name: (a.online, a.job and a.job.phase, a.error)
                for a in runner.arms.values()}
        raise AssertionError(f"campaign not done within {deadline_s} s: {runner.stats} {arms}")
    return time.monotonic() - t0


def wait_for(pred: Callable[[], Any], *, timeout_s: float, what: str,
             interval_s: float = 0.05) -> Any:
    """Poll pred() until truthy (a deadline, never a fixed sleep as synchronization)."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def running_episode_on(store: Store, robot_id: int) -> int | None:
    with store.read() as s:
        return s.scalar(select(Episode.id).where(Episode.robot_id == robot_id,
                                                 Episode.status == "running").limit(1))


def robot_id(store: Store, name: str) -> int:
    with store.read() as s:
        return s.scalar(select(Robot.id).where(Robot.name == name))


@dataclass
class Audit:
    trials: int
    counted: int
    recorded: int
    aborted: list[tuple[int, int, str]]  # (episode id, trial id, reason)
    media_files: int


def check_invariants(store: Store, media_dir: Path, campaign_ids: Sequence[int]) -> Audit:
    """The fault tests' invariants; returns what was found for exact-count assertions."""
    with store.read() as s:
        trials = list(s.scalars(select(Trial).where(Trial.campaign_id.in_(campaign_ids))))
        tids = [t.id for t in trials]
        eps = list(s.scalars(select(Episode).where(Episode.trial_id.in_(tids))))
        all_eps = list(s.scalars(select(Episode)))
    by_trial: dict[int, list[Episode]] = {t: [] for t in tids}
    for e in eps:
        by_trial[e.trial_id].append(e)
    problems = []
    for t in trials:
        counted = [e for e in by_trial[t.id] if e.counted]
        if t.status == "not_needed":  # a decided question left it out: never counted
            if counted:
                problems.append(f"trial {t.id}: not needed but {len(counted)} counted episodes")
        elif t.status != "done" or len(counted) != 1:
            problems.append(f"trial {t.id}: status {t.status}, {len(counted)} counted episodes "
                            f"of {len(by_trial[t.id])}")
        for e in counted:
            if e.status != "recorded" or not e.media:
                problems.append(f"counted episode {e.id} is {e.status} with media {e.media}")
        if t.attempts != len(by_trial[t.id]):
            problems.append(f"trial {t.id}: attempts {t.attempts} != {len(by_trial[t.id])} rows")
    aborted = []
    for e in eps:
        if e.status == "running":
            problems.append(f"episode {e.id} still running")
        if e.status == "aborted":
            if not (e.abort_reason or "").strip():
                problems.append(f"aborted episode {e.id} has no reason")
            if e.counted:  # an aborted episode keeps its steps and media up to the abort
                problems.append(f"aborted episode {e.id} is counted")
            aborted.append((e.id, e.trial_id, e.abort_reason or ""))
    # media: every file on disk has its row (and checksum); every row's file exists and matches
    referenced: dict[str, dict] = {}
    for e in all_eps:
        for m in e.media or []:
            if m["uri"] in referenced:
                problems.append(f"media {m['uri']} referenced twice")
            referenced[m["uri"]] = m
    on_disk = {p.relative_to(media_dir).as_posix() for p in media_dir.rglob("*") if p.is_file()}
    for f in sorted(on_disk - set(referenced)):
        problems.append(f"media file {f} has no episode row")
    for uri, m in referenced.items():
        if not m.get("sha256") or not verify_media(media_dir, m):
            problems.append(f"media {uri}: missing file or checksum mismatch")
    assert not problems, "\n".join(problems)
    return Audit(
        trials=len(trials),
        counted=sum(1 for e in eps if e.counted),
        recorded=sum(1 for e in eps if e.status == "recorded"),
        aborted=sorted(aborted),
        media_files=len(on_disk),
    )
