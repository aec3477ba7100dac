"""No trial lost (issue 9, Build 5), with exact counts on simulated arms:

- two orchestrators on one campaign (SQLite and PostgreSQL): arms leased in the store, one
  holder at a time; the second waits for held arms and takes them when the first dies; every
  trial counts exactly once and none is given up;
- the campaign's media folder unwritable for a while: one abort per arm (cause media, the
  path named), the arms held out until it is writable, no trial lost, every pair complete;
- a database outage shorter than the retry window (20 s of a 25 s window, on a fake clock):
  nothing aborted, nothing lost; longer than it: the run ends with one paragraph, and a rerun
  completes the campaign with every trial counted once.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from orchestrator.faults import AbortCause, counts_against_trial
from orchestrator.runner import FleetRunner
from orchestrator.runner_faults import RunStopped
from orchestrator.simfleet import SimFleet
from orchestrator.store import migrate
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import CampaignPolicy, Episode, Robot, Trial
from tests.integration.fleet_support import (
    IMAGE,
    check_invariants,
    fast_fleet,
    new_campaign,
    ray_local,  # noqa: F401 - pytest fixture (module-scoped local Ray)
    run_to_done,
    started,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("ray_local")]


def _episodes(store: Store, campaign_id: int) -> list[Episode]:
    with store.read() as s:
        return list(s.scalars(select(Episode).join(Trial, Trial.id == Episode.trial_id)
                              .where(Trial.campaign_id == campaign_id).order_by(Episode.id)))


def assert_every_pair_complete(store: Store, campaign_id: int) -> int:
    """Every block (task, trial index) has one counted episode per policy; returns the
    number of blocks."""
    with store.read() as s:
        policies = s.scalar(select(func.count()).select_from(CampaignPolicy)
                            .where(CampaignPolicy.campaign_id == campaign_id))
        rows = s.execute(
            select(Trial.task_id, Trial.trial_index, func.count(Episode.id))
            .join(Episode, (Episode.trial_id == Trial.id) & Episode.counted, isouter=True)
            .where(Trial.campaign_id == campaign_id)
            .group_by(Trial.task_id, Trial.trial_index)
        ).all()
        given_up = s.scalar(select(func.count()).select_from(Trial).where(
            Trial.campaign_id == campaign_id, Trial.status.in_(("given_up", "cancelled"))))
    broken = [(t, i, n) for t, i, n in rows if n != policies]
    assert not broken, f"blocks with a policy missing: {broken}"
    assert given_up == 0
    return len(rows)


def _no_arm_driven_twice_at_once(store: Store) -> None:
    """Per robot, episodes never overlap in time (nobody reset somebody else's episode)."""
    with store.read() as s:
        rows = s.execute(select(Episode.robot_id, Episode.started_at, Episode.ended_at)
                         .order_by(Episode.robot_id, Episode.started_at)).all()
    last: dict[int, object] = {}
    for rid, started_at, ended_at in rows:
        prev_end = last.get(rid)
        assert prev_end is None or prev_end <= started_at, f"robot {rid} driven twice at once"
        last[rid] = ended_at


def _step_all(runners: Sequence[FleetRunner], *, until: Callable[[], bool], deadline_s: float,
              on_tick: Callable[[], None] = lambda: None) -> None:
    """Interleave several runners' loops in this thread until `until()` (a deadline, never a
    fixed sleep as synchronisation)."""
    import ray

    t0 = time.monotonic()
    while not until():
        assert time.monotonic() - t0 < deadline_s, "runners did not get there in time"
        for r in runners:
            r.step()
        on_tick()
        refs = [a.job.ref for r in runners for a in r.arms.values()
                if a.job and a.job.ref is not None]
        if refs:
            ray.wait(refs, num_returns=1, timeout=0.1)
        else:
            time.sleep(0.05)


def test_two_orchestrators_on_one_campaign_count_every_trial_once(db_url: str,
                                                                  tmp_path: Path) -> None:
    """A holds sim-1 and sim-2, B wants all three: B drives sim-3 and waits for the others;
    A dies mid-episode (no clean exit); its trial and arm leases expire; B takes both arms
    and finishes. Two stores (two engines), as two processes would have."""
    import ray

    media = tmp_path / "media"
    engines = [make_engine(db_url), make_engine(db_url)]
    migrate.upgrade(engines[0])
    store_a, store_b = Store(engines[0]), Store(engines[1])
    try:
        cid = new_campaign(store_a, "two-orchestrators", trials=2)  # 2 x 4 x 2 = 16 trials
        with SimFleet(3, image_size=IMAGE) as fleet:
            # A's leases expire 8 s after it dies; B's (30 s) never run out under a loaded
            # machine's stalls (a worker starting blocks the loop), so B never loses a trial
            cfg = fast_fleet(fleet, lease_s=30.0, timeout_ms=2000)
            cfg_a = cfg.model_copy(update={"arms": cfg.arms[:2], "lease_s": 8.0})
            a = FleetRunner(store_a, cfg_a, media_dir=str(media), campaign_ids=[cid],
                            holder="orchestrator-A")
            b = FleetRunner(store_b, cfg, media_dir=str(media), campaign_ids=[cid],
                            holder="orchestrator-B")
            a.start()
            with started(b):
                held_by_b = {n for n, arm in b.arms.items() if arm.held}
                assert held_by_b == {"sim-3"}, "B may only take the arm A does not hold"
                assert sorted(b.waiting) == ["sim-1", "sim-2"]
                assert all(re.fullmatch(rf"{n} is held by orchestrator-A until "
                                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; waiting", line)
                           for n, line in b.waiting.items())

                def one_holder() -> None:
                    for name in a.arms:  # while A lives, never both on one arm
                        assert not (a.arms[name].held and b.arms[name].held), name

                def a_busy() -> bool:
                    return (a.stats.recorded >= 2 and b.stats.recorded >= 1
                            and sum(1 for x in a.arms.values()
                                    if x.job and x.job.phase == "run") == 2)

                _step_all([a, b], until=a_busy, deadline_s=60, on_tick=one_holder)
                # A dies: its actors go, nothing is written, its leases stay until they expire
                a_in_flight = sorted(x.job.episode_id for x in a.arms.values() if x.job)
                for x in a.arms.values():
                    ray.kill(x.actor.host)  # its RobotHost (shared by its arms)
                for pool in a.workers.values():
                    for w in pool:
                        ray.kill(w)
                run_to_done(b, deadline_s=90)
                assert {n for n, arm in b.arms.items() if arm.held} == {"sim-1", "sim-2",
                                                                        "sim-3"}
                assert b.waiting == {}
            with store_b.read() as s:  # B's clean exit released every arm
                assert s.scalars(select(Robot.lease_holder)).all() == [None, None, None]

        audit = check_invariants(store_b, media, [cid])
        assert audit.trials == 16 and audit.counted == 16 and audit.recorded == 16
        assert assert_every_pair_complete(store_b, cid) == 8
        # the two episodes A had in flight when it died: aborted by lease expiry, nothing else
        # of A's; nobody reset anybody's episode (no other_client abort). On a loaded machine
        # an arm may still time out (cause bridge/worker): never counted, re-queued.
        eps = _episodes(store_b, cid)
        aborted = [e for e in eps if e.status == "aborted"]
        why = [(e.id, e.robot_id, e.abort_cause, e.abort_reason) for e in aborted]
        expired = [e.id for e in aborted if e.abort_cause == "lease_expired"]
        assert expired == a_in_flight and len(a_in_flight) == 2, why
        others = [e for e in aborted if e.abort_cause != "lease_expired"]
        assert all(not counts_against_trial(AbortCause(e.abort_cause)) for e in others), why
        assert all(e.abort_cause != "other_client" for e in others), why
        assert len(eps) == 16 + len(aborted)
        _no_arm_driven_twice_at_once(store_b)
    finally:
        store_a.close()
        store_b.close()


@contextmanager
def _folder_replaced_by_a_file(folder: Path) -> Iterator[None]:
    """The campaign's media folder made unwritable for root too: moved away, and a plain file
    put at its name (mkdir and every write under it fail); restored on exit."""
    saved = folder.with_name(folder.name + ".saved")
    folder.rename(saved)
    folder.write_bytes(b"not a folder")
    try:
        yield
    finally:
        folder.unlink()
        saved.rename(folder)


def test_unwritable_media_folder_loses_no_trial_and_keeps_every_pair(sqlite_store: Store,
                                                                     tmp_path: Path) -> None:
    store = sqlite_store
    media = tmp_path / "media"
    cid = new_campaign(store, "media-outage")  # 2 policies x 4 tasks = 8 trials
    folder = media / "media-outage"
    with SimFleet(2, image_size=IMAGE) as fleet:
        runner = FleetRunner(store, fast_fleet(fleet, timeout_ms=2000), media_dir=str(media))
        state: dict = {}
        outage: list = []

        def tick(r: FleetRunner) -> None:
            if "broken" not in state and r.stats.recorded >= 2:
                outage.append(_folder_replaced_by_a_file(folder))
                outage[0].__enter__()
                state["broken"] = r.stats.recorded
            elif "broken" in state and "fixed" not in state and all(
                    a.media_folder == "media-outage" and a.job is None and not a.online
                    for a in r.arms.values()):
                # restore only once every arm aborted its episode and is held out: nothing
                # runs while the folder is unwritable
                with store.read() as s:
                    state["held_out"] = {
                        rb.name: (rb.status, (rb.capabilities or {}).get("error"))
                        for rb in s.scalars(select(Robot))}
                outage[0].__exit__(None, None, None)
                state["fixed"] = True

        try:
            with started(runner):
                run_to_done(runner, deadline_s=120, on_tick=tick)
        finally:
            if outage and "fixed" not in state:
                outage[0].__exit__(None, None, None)
    assert state.get("fixed"), "the arms were never held out for the media folder"
    audit = check_invariants(store, media, [cid])
    assert audit.trials == 8 and audit.counted == 8 and audit.recorded == 8
    assert assert_every_pair_complete(store, cid) == 4
    # exactly one abort per arm for media, naming the path; none counted against a trial
    eps = _episodes(store, cid)
    aborted = [e for e in eps if e.status == "aborted"]
    media_aborts = [e for e in aborted if e.abort_cause == "media"]
    why = [(e.id, e.abort_cause, e.abort_reason) for e in aborted]
    assert len(media_aborts) == 2, why
    assert {e.robot_id for e in media_aborts} == {a.robot_id for a in runner.arms.values()}
    for e in media_aborts:
        assert f"cannot write media file {folder}/episode-{e.id:08d}" in e.abort_reason
    # anything else (an arm timing out on a loaded machine) is infrastructure: not counted
    assert all(not counts_against_trial(AbortCause(e.abort_cause)) for e in aborted), why
    assert Counter(e.abort_cause for e in aborted)["media"] == 2
    assert len(eps) == 8 + len(aborted)
    for status, error in state["held_out"].values():  # the arm's status says why it is out
        assert status == "offline" and error and str(folder) in error


class _FakeClock:
    """The store's clock and sleep in a test: a retry "sleeps" by moving this clock on, so a
    20 s outage takes no wall-clock time (a short real pause lets the arms run meanwhile)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        self.offset += seconds
        time.sleep(min(seconds, 0.02))


class _InjectedOutage:
    """Every statement on the engine fails with OperationalError (as a dropped connection
    does) from begin() until `seconds` later on the fake clock."""

    def __init__(self, engine, clock: _FakeClock) -> None:  # type: ignore[no-untyped-def]
        self.clock, self.until, self.failures = clock, None, 0
        event.listen(engine, "before_cursor_execute", self._check)

    def begin(self, seconds: float) -> None:
        self.until = self.clock.now() + seconds

    def end(self) -> None:
        self.until = None

    def _check(self, *args: object) -> None:
        if self.until is not None and self.clock.now() < self.until:
            self.failures += 1
            raise OperationalError("injected", {}, Exception("server closed the connection"))


def _store_with_fake_clock(db_url: str) -> tuple[Store, _FakeClock, _InjectedOutage]:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    clock = _FakeClock()
    store = Store(engine, retry_window_s=25.0, clock=clock.now, sleep=clock.sleep)
    return store, clock, _InjectedOutage(engine, clock)


def test_database_outage_within_the_retry_window_loses_nothing(db_url: str,
                                                               tmp_path: Path) -> None:
    store, clock, outage = _store_with_fake_clock(db_url)
    media = tmp_path / "media"
    try:
        cid = new_campaign(store, "db-outage-20s")  # 2 policies x 4 tasks = 8 trials
        with SimFleet(2, image_size=IMAGE) as fleet:
            runner = FleetRunner(store, fast_fleet(fleet, timeout_ms=2000), media_dir=str(media))
            state: dict = {}

            def tick(r: FleetRunner) -> None:
                if "begun" not in state and r.stats.recorded >= 2 and r.busy_arms() == 2:
                    state["begun"] = clock.now()
                    outage.begin(20.0)

            with started(runner):
                run_to_done(runner, deadline_s=120, on_tick=tick)
        assert "begun" in state and outage.failures > 5
        # the run waited out the outage on the store's clock (fake sleeps plus the real time
        # that passed: on a loaded machine the offset alone can stay just under 20 s)
        assert clock.now() - state["begun"] >= 20.0
        outage.end()
        audit = check_invariants(store, media, [cid])
        assert audit.trials == 8 and audit.counted == 8 and audit.recorded == 8
        assert audit.aborted == []
        assert assert_every_pair_complete(store, cid) == 4
    finally:
        store.close()


def test_database_outage_longer_than_the_window_stops_the_run_and_a_rerun_completes(
        db_url: str, tmp_path: Path) -> None:
    store, _, outage = _store_with_fake_clock(db_url)
    media = tmp_path / "media"
    try:
        cid = new_campaign(store, "db-outage-30s")  # 2 policies x 4 tasks = 8 trials
        with SimFleet(2, image_size=IMAGE) as fleet:
            cfg = fast_fleet(fleet, lease_s=2.0, timeout_ms=2000)
            first = FleetRunner(store, cfg, media_dir=str(media), holder="first-run")

            def tick(r: FleetRunner) -> None:
                if outage.until is None and r.stats.recorded >= 2 and r.busy_arms() == 2:
                    outage.begin(30.0)

            with pytest.raises(RunStopped) as stopped, started(first):
                run_to_done(first, deadline_s=120, on_tick=tick)
            outage.end()
            paragraph = str(stopped.value)
            assert "\n" not in paragraph
            assert paragraph.startswith("Stopped: the database at ")
            assert "unreachable for 25 s" in paragraph
            assert "server closed the connection" in paragraph
            assert "A rerun is safe" in paragraph
            m = re.search(r"The (\d) trial\(s\) that were running return to the queue when "
                          r"their leases expire, by \d\d:\d\d:\d\d UTC", paragraph)
            assert m, paragraph
            in_flight = int(m.group(1))
            assert in_flight >= 1
            with store.read() as s:
                running = sorted(s.scalars(select(Episode.id).where(Episode.status == "running")))
            assert len(running) == in_flight  # left as they were: their leases bring them back

            rerun = FleetRunner(store, cfg, media_dir=str(media), holder="second-run")
            with started(rerun):
                run_to_done(rerun, deadline_s=120)
        audit = check_invariants(store, media, [cid])
        assert audit.trials == 8 and audit.counted == 8 and audit.recorded == 8
        assert assert_every_pair_complete(store, cid) == 4
        aborted = [e for e in _episodes(store, cid) if e.status == "aborted"]
        assert [e.id for e in aborted] == running
        assert {e.abort_cause for e in aborted} == {"lease_expired"}
    finally:
        store.close()


@pytest.mark.slow
def test_campaign_run_ends_with_one_paragraph_when_the_database_stays_away(
        tmp_path: Path) -> None:
    """The real CLI: SQLite locked by another process for longer than the retry window
    (EVALFLEET_DB_RETRY_WINDOW_S=3): `campaign run` exits 4 with one paragraph and no
    traceback; once the lock is gone, the same command completes every trial once."""
    import sqlite3

    import yaml

    from tests.integration.test_fleet_faults import _evalfleet, _kill_session

    db = tmp_path / "store.db"
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    home = tmp_path / "home"
    procs = []
    try:
        cid = new_campaign(store, "cli-db-gone")  # 8 trials
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(EVALFLEET_HOME=str(home), EVALFLEET_DATABASE_URL=url, PYTHONUNBUFFERED="1",
                   EVALFLEET_DB_RETRY_WINDOW_S="3", EVALFLEET_SQLITE_BUSY_TIMEOUT_MS="200",
                   COLUMNS="200")
        with SimFleet(2, image_size=IMAGE) as fleet:
            fleet_yaml = tmp_path / "fleet.yaml"
            fleet_yaml.write_text(yaml.safe_dump(fleet.config().model_dump(mode="json")))
            cmd = ("campaign", "run", "cli-db-gone", "--fleet", str(fleet_yaml), "--lease-s", "3")
            log = tmp_path / "first.log"
            first = _evalfleet(*cmd, env=env, log=log)
            procs.append(first)

            def recorded() -> bool:
                assert first.poll() is None, log.read_text()[-3000:]
                with store.read() as s:
                    return (s.scalar(select(func.count()).select_from(Episode)
                                     .where(Episode.status == "recorded")) or 0) >= 1

            from tests.integration.fleet_support import wait_for

            wait_for(recorded, timeout_s=90, what="a recorded episode")
            lock = sqlite3.connect(db, timeout=10, isolation_level=None)
            try:
                lock.execute("BEGIN EXCLUSIVE")  # every write of the run now fails
                rc = first.wait(timeout=90)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            out = log.read_text()
            assert rc == 4, out[-3000:]
            assert "Traceback" not in out
            (line,) = [ln for ln in out.splitlines() if "Stopped: the database at" in ln]
            assert "unreachable for 3 s" in line and "A rerun is safe" in line
            assert "database is locked" in line

            log2 = tmp_path / "second.log"
            second = _evalfleet(*cmd, env=env, log=log2)
            procs.append(second)
            assert second.wait(timeout=120) == 0, log2.read_text()[-3000:]
        audit = check_invariants(store, home / "media", [cid])
        assert audit.trials == 8 and audit.counted == 8 and audit.recorded == 8
        assert assert_every_pair_complete(store, cid) == 4
        assert {r.split(":")[0] for _, _, r in audit.aborted} <= {"lease expired"}
    finally:
        for p in procs:
            _kill_session(p)
        store.close()
