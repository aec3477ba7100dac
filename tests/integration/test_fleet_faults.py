"""Faults with exact counts (issue 5): a bridge killed mid-episode, a policy worker killed, the
orchestrator SIGKILLed and resumed, the database gone for a few seconds. In each: every planned
trial ends with exactly one counted episode, aborted attempts keep their reason, every media
file has its row and checksum, nothing hangs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select, text

from orchestrator.runner import FleetRunner
from orchestrator.simfleet import SimFleet
from orchestrator.store import migrate
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import Episode, Event, Robot
from robots.client import BridgeClient
from tests.integration.fleet_support import (
    IMAGE,
    REPO,
    check_invariants,
    fast_fleet,
    new_campaign,
    ray_local,  # noqa: F401 - pytest fixture (module-scoped local Ray)
    robot_id,
    run_to_done,
    running_episode_on,
    started,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)
EVALFLEET = Path(sys.executable).parent / "evalfleet"  # the installed console script


def _in_episode(endpoint: str, episode_id: int) -> bool:
    """Ask the bridge itself (a second client) whether it is in this episode right now."""
    try:
        with BridgeClient(endpoint, timeout_ms=300, name="test-probe") as c:
            return c.status().get("episode_id") == f"ep-{episode_id}"
    except Exception:  # noqa: BLE001 - not answering: not (observably) in the episode
        return False


@pytest.mark.usefixtures("ray_local")
def test_bridge_killed_mid_episode_aborts_requeues_and_arm_comes_back(sqlite_store,
                                                                     tmp_path: Path) -> None:
    store = sqlite_store
    media = tmp_path / "media"
    cid = new_campaign(store, "bridge-kill")  # 2 policies x 4 tasks = 8 trials
    victim = "sim-1"
    with SimFleet(3, image_size=IMAGE) as fleet:
        runner = FleetRunner(store, fast_fleet(fleet), media_dir=str(media))
        state: dict = {}
        restarter: list[threading.Thread] = []

        def tick(r: FleetRunner) -> None:
            arm = r.arms[victim]
            if "killed" not in state:
                eid = running_episode_on(store, arm.robot_id)
                job = arm.job
                # mid-episode: the store has it running on this robot, the runner has launched
                # its control loop less than 0.4 s ago (episodes last 1 s), the bridge is in it
                if (eid and job and job.episode_id == eid and job.phase == "run"
                        and time.monotonic() - job.started < 0.4
                        and _in_episode(fleet.endpoints[victim]["endpoint"], eid)):
                    fleet.kill_arm(victim)
                    state["killed"] = eid
            elif "restarting" not in state:
                with store.read() as s:
                    ep = s.get(Episode, state["killed"])
                    if ep.status == "aborted":
                        state["restarting"] = True
                        t = threading.Thread(target=fleet.restart_arm, args=(victim,))
                        t.start()
                        restarter.append(t)

        try:
            with started(runner):
                run_to_done(runner, deadline_s=60, on_tick=tick)
                assert "killed" in state, "never caught an episode in flight on the victim arm"
                for t in restarter:
                    t.join(timeout=30)
                # the arm is probed with backoff until its restarted bridge answers
                deadline = time.monotonic() + 30
                while not runner.arms[victim].online:
                    assert time.monotonic() < deadline, "restarted arm never came back online"
                    runner.step()
                    time.sleep(0.05)
        finally:  # never leave a bridge starting behind SimFleet's back
            for t in restarter:
                t.join(timeout=30)

    audit = check_invariants(store, media, [cid])
    assert audit.trials == 8 and audit.counted == 8 and audit.recorded == 8
    # exactly one attempt aborted: the one on the killed bridge, with the reason
    assert len(audit.aborted) == 1
    eid, tid, reason = audit.aborted[0]
    assert eid == state["killed"]
    assert victim in reason and "bridge" in reason
    vid = robot_id(store, victim)
    with store.read() as s:
        kinds = [k for (k,) in s.execute(
            select(Event.kind).where(Event.robot_id == vid,
                                     Event.kind.in_(("robot_online", "robot_offline")))
            .order_by(Event.id))]
        assert s.get(Robot, vid).status == "online"
        # an infrastructure fault: it took the arm out, not an attempt of the trial's budget
        assert s.get(Episode, eid).abort_cause == "bridge"
        # the re-queued trial ran again (to completion) as a second attempt
        (n,) = s.execute(select(func.count()).select_from(Episode)
                         .where(Episode.trial_id == tid)).one()
    assert kinds[-2:] == ["robot_offline", "robot_online"]
    assert n == 2


@pytest.mark.usefixtures("ray_local")
def test_policy_worker_killed_mid_campaign_is_restarted_and_episodes_requeued(
        sqlite_store, tmp_path: Path) -> None:
    import ray

    store = sqlite_store
    media = tmp_path / "media"
    cid = new_campaign(store, "worker-kill", policies=("rand-a",), trials=2)  # 8 trials
    with SimFleet(2, image_size=IMAGE) as fleet:
        runner = FleetRunner(store, fast_fleet(fleet), media_dir=str(media))
        state: dict = {}

        def tick(r: FleetRunner) -> None:
            if "killed" in state:
                return
            running = [a.job for a in r.arms.values()
                       if a.job and a.job.phase == "run" and time.monotonic() - a.job.started < 0.5]
            done = r.stats.recorded
            if done >= 1 and len(running) == len(r.arms):
                # both arms are mid-episode against the one shared worker: kill its process
                (pool,) = r.workers.values()
                state["in_flight"] = sorted(j.episode_id for j in running)
                state["instance"] = ray.get(pool[0].ping.remote(), timeout=10)
                ray.kill(pool[0], no_restart=False)
                state["killed"] = True
                state["handle"] = pool[0]

        with started(runner):
            run_to_done(runner, deadline_s=90, on_tick=tick)
            assert "killed" in state, "never caught both arms mid-episode"
            # the same handle answers again, from a new instance: Ray restarted the worker
            instance = ray.get(state["handle"].ping.remote(), timeout=30)
            assert instance and instance != state["instance"]

    audit = check_invariants(store, media, [cid])
    assert audit.trials == 8 and audit.counted == 8 and audit.recorded == 8
    aborted_ids = [e for e, _, _ in audit.aborted]
    # every episode in flight on the killed worker aborted (and nothing else did)
    assert aborted_ids == state["in_flight"], audit.aborted
    for _, _, reason in audit.aborted:
        assert "Actor" in reason or "actor" in reason or "policy" in reason, reason
    with store.read() as s:  # a worker restart is never the trial's fault
        assert {s.get(Episode, e).abort_cause for e in aborted_ids} == {"worker"}


def _evalfleet(*args: str, env: dict, log: Path) -> subprocess.Popen:
    """The real CLI in its own session (so cleanup can reach Ray's processes it started)."""
    with open(log, "ab") as fh:  # the child has its own copy of the descriptor
        return subprocess.Popen([str(EVALFLEET), *args], cwd=REPO, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_session(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@pytest.mark.slow
def test_orchestrator_sigkilled_then_resumed_counts_every_trial_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    procs: list[subprocess.Popen] = []
    try:
        cid = new_campaign(store, "sigkill", trials=2)  # 2 policies x 4 tasks x 2 = 16 trials
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS",))}
        env.update(EVALFLEET_HOME=str(home), EVALFLEET_DATABASE_URL=url, PYTHONUNBUFFERED="1")
        with SimFleet(2, image_size=IMAGE) as fleet:
            fleet_yaml = tmp_path / "fleet.yaml"
            fleet_yaml.write_text(yaml.safe_dump(fleet.config().model_dump(mode="json")))
            cmd = ("campaign", "run", "sigkill", "--fleet", str(fleet_yaml), "--lease-s", "3")
            log = tmp_path / "orchestrator.log"
            first = _evalfleet(*cmd, env=env, log=log)
            procs.append(first)

            def progress() -> tuple[int, int] | None:
                assert first.poll() is None, log.read_text()[-3000:]
                with store.read() as s:
                    rec = s.scalar(select(func.count()).select_from(Episode)
                                   .where(Episode.status == "recorded"))
                    run = s.scalar(select(func.count()).select_from(Episode)
                                   .where(Episode.status == "running"))
                return (rec, run) if rec >= 2 and run >= 1 else None

            wait_for(progress, timeout_s=60, what="episodes recorded and running")
            os.kill(first.pid, signal.SIGKILL)  # the orchestrator only: Ray is left to itself
            first.wait(timeout=10)
            with store.read() as s:
                killed_running = sorted(s.scalars(select(Episode.id)
                                                  .where(Episode.status == "running")))
            assert killed_running
            second = _evalfleet(*cmd, env=env, log=log)
            procs.append(second)
            rc = second.wait(timeout=120)
            assert rc == 0, log.read_text()[-3000:]
        audit = check_invariants(store, home / "media", [cid])
        assert audit.trials == 16 and audit.counted == 16 and audit.recorded == 16
        aborted = {e: r for e, _, r in audit.aborted}
        # the episodes the killed orchestrator had in flight: aborted by lease expiry, kept
        assert sorted(aborted) == killed_running, audit.aborted
        assert all("lease expired" in r for r in aborted.values())
        with store.read() as s:
            assert {s.get(Episode, e).abort_cause for e in aborted} == {"lease_expired"}
    finally:
        for p in procs:
            _kill_session(p)
        store.close()


class _Outage:
    """Takes the database away for `seconds`, from a background thread.

    SQLite: another connection holds the write lock (BEGIN EXCLUSIVE); the runner's engine has
    a 250 ms busy timeout, so its writes fail with "database is locked" until it is released.
    PostgreSQL: the database refuses new connections (ALLOW_CONNECTIONS false) and every
    backend connected to it is terminated; then connections are allowed again."""

    def __init__(self, db_url: str, seconds: float) -> None:
        self.url, self.seconds = db_url, seconds
        self.started = threading.Event()
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            if self.url.startswith("sqlite"):
                self._sqlite()
            else:
                self._postgres()
        except BaseException as e:  # noqa: BLE001 - re-raised by the test
            self.error = e
        finally:
            self.ended.set()

    def _sqlite(self) -> None:
        con = sqlite3.connect(self.url.split("///", 1)[1], timeout=10, isolation_level=None)
        try:
            con.execute("BEGIN EXCLUSIVE")
            self.started.set()
            time.sleep(self.seconds)  # the length of the outage (not a synchronization)
            con.execute("ROLLBACK")
        finally:
            con.close()

    def _postgres(self) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        from orchestrator.config import normalize_url
        from tests.conftest import PG_ENV

        name = make_url(normalize_url(self.url)).database
        admin = create_engine(normalize_url(os.environ[PG_ENV]), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as c:
                c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                try:
                    c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
                    self.started.set()
                    time.sleep(self.seconds)  # the length of the outage
                finally:
                    c.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        finally:
            admin.dispose()


@pytest.mark.usefixtures("ray_local")
def test_database_outage_of_a_few_seconds_is_retried_not_fatal(db_url: str,
                                                                tmp_path: Path) -> None:
    from sqlalchemy import event

    engine = make_engine(db_url, busy_timeout_ms=250)
    migrate.upgrade(engine)
    store = Store(engine)
    errors: list[str] = []
    event.listen(engine, "handle_error", lambda ctx: errors.append(str(ctx.original_exception)))
    media = tmp_path / "media"
    outage = _Outage(db_url, seconds=3.0)
    try:
        cid = new_campaign(store, "db-outage", trials=2)  # 16 trials
        with SimFleet(3, image_size=IMAGE) as fleet:
            runner = FleetRunner(store, fast_fleet(fleet, timeout_ms=3000), media_dir=str(media))
            seen: dict = {}

            def tick(r: FleetRunner) -> None:
                # start the outage once episodes are recorded and others are in flight, so that
                # results arrive (and leases are taken) while the database is away
                if not outage.thread.is_alive() and not outage.ended.is_set() \
                        and r.stats.recorded >= 2 and r.busy_arms() >= 2:
                    seen["recorded_before"] = r.stats.recorded
                    outage.start()
                    assert outage.started.wait(10), "could not take the database away"

            with started(runner):
                run_to_done(runner, deadline_s=90, on_tick=tick)
        assert outage.ended.is_set(), "the outage never started"
        if outage.error:
            raise outage.error
        assert errors, "the runner never saw the outage"
        audit = check_invariants(store, media, [cid])
        assert audit.trials == 16 and audit.counted == 16 and audit.recorded == 16
        # the episodes in flight during the outage finished and were written afterwards:
        # nothing was lost and nothing aborted
        assert audit.aborted == []
    finally:
        outage.thread.join(timeout=15) if outage.thread.is_alive() else None
        store.close()


def test_sweep_removes_only_the_media_of_aborted_episodes(sqlite_store, tmp_path: Path) -> None:
    """What an actor finished after its episode was closed as aborted (a killed orchestrator,
    a timeout) goes; files of running and recorded episodes, and strangers, stay."""
    from orchestrator.fleet_config import ArmConfig, FleetConfig
    from orchestrator.store import queue as q

    store = sqlite_store
    new_campaign(store, "sweep", policies=("rand-a",))  # 4 trials
    with store.write() as s:
        cands = q.pending_candidates(s)
        leased = q.lease_trials(s, [c.trial_id for c in cands[:3]], holder="h", lease_s=60)
        aborted, recorded, running = (q.start_episode(s, t.trial_id, holder="h", robot_id=None)
                                      for t in leased)
        q.abort_episode(s, aborted, holder="h", reason="test")
    media = tmp_path / "media"
    folder = media / "sweep"
    folder.mkdir(parents=True)
    names = {eid: f"episode-{eid:08d}-main.mp4" for eid in (aborted, recorded, running)}
    for n in names.values():
        (folder / n).write_bytes(b"x")
    (folder / (names[aborted].replace("main", "wrist") + ".partial")).write_bytes(b"x")
    (media / "other-store-campaign").mkdir()
    (media / "other-store-campaign" / names[aborted]).write_bytes(b"x")
    with store.write() as s:
        q.complete_episode(s, recorded, holder="h", step_count=0, late_steps=0,
                           terminated_by="max_steps", sim_success=None,
                           media=[{"camera": "main", "uri": f"sweep/{names[recorded]}",
                                   "sha256": "0"}])
    fleet = FleetConfig(arms=(ArmConfig(name="a", endpoint="tcp://127.0.0.1:1"),))
    runner = FleetRunner(store, fleet, media_dir=str(media))
    assert runner.sweep_media() == 2
    left = sorted(p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file())
    assert left == sorted([f"other-store-campaign/{names[aborted]}",
                           f"sweep/{names[recorded]}", f"sweep/{names[running]}"])
