"""The store side of issue 9's "no trial lost": arms leased by one orchestrator at a time, the
give-up counter counting only the trial's own aborts, the database retry window (both stores
where the `store` fixture runs on both)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from orchestrator.faults import AbortCause
from orchestrator.store import queue
from orchestrator.store.arm_leases import lease_arms, release_arms, renew_arm_leases
from orchestrator.store.db import DatabaseUnavailableError, Store
from orchestrator.store.models import Episode, Event, Robot, Trial, utcnow
from tests.support import make_campaign


def _robots(store: Store, *names: str) -> list[int]:
    with store.write() as s:
        rows = [Robot(name=n, endpoint=f"tcp://127.0.0.1:{i}") for i, n in enumerate(names)]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def test_an_arm_is_leased_by_one_orchestrator_at_a_time(store: Store) -> None:
    a1, a2 = _robots(store, "arm-1", "arm-2")
    now = utcnow()
    with store.write() as s:
        first = lease_arms(s, [a1], holder="A", lease_s=30, now=now)
    assert first.taken == (a1,) and first.held == ()
    with store.write() as s:
        second = lease_arms(s, [a1, a2], holder="B", lease_s=30, now=now + timedelta(seconds=1))
    assert second.taken == (a2,)
    (held,) = second.held
    assert (held.robot_id, held.name, held.holder) == (a1, "arm-1", "A")
    assert held.waiting_line().startswith("arm-1 is held by A until ")
    assert held.waiting_line().endswith(" UTC; waiting")
    # renewing keeps it; the other still waits
    with store.write() as s:
        assert renew_arm_leases(s, [a1], holder="A", lease_s=30,
                                now=now + timedelta(seconds=20)) == []
    with store.write() as s:
        assert lease_arms(s, [a1], holder="B", lease_s=30,
                          now=now + timedelta(seconds=40)).taken == ()
    # released on a clean exit: the waiting orchestrator takes it
    with store.write() as s:
        assert release_arms(s, [a1], holder="B") == 0  # not B's to release
        assert release_arms(s, [a1], holder="A") == 1
    with store.write() as s:
        assert lease_arms(s, [a1], holder="B", lease_s=30,
                          now=now + timedelta(seconds=41)).taken == (a1,)


def test_an_expired_arm_lease_is_taken_over_and_the_old_holder_learns_it(store: Store) -> None:
    (a1,) = _robots(store, "arm-1")
    now = utcnow()
    with store.write() as s:
        assert lease_arms(s, [a1], holder="A", lease_s=10, now=now).taken == (a1,)
    with store.write() as s:  # A died: 11 s later its lease has run out
        assert lease_arms(s, [a1], holder="B", lease_s=10,
                          now=now + timedelta(seconds=11)).taken == (a1,)
    with store.write() as s:
        assert renew_arm_leases(s, [a1], holder="A", lease_s=10,
                                now=now + timedelta(seconds=12)) == [a1]
    with store.read() as s:
        assert s.get(Robot, a1).lease_holder == "B"
        assert s.scalar(select(Event.kind).where(Event.kind == "arm_lease_lost")) is not None


def _abort_once(store: Store, cause: AbortCause) -> str:
    with store.write() as s:
        (cand,) = queue.pending_candidates(s, limit=1)
        (t,) = queue.lease_trials(s, [cand.trial_id], holder="x", lease_s=60)
        ep = queue.start_episode(s, t.trial_id, holder="x", robot_id=None)
        queue.abort_episode(s, ep, holder="x", reason=f"{cause} fault", cause=cause)
        return s.get(Trial, t.trial_id).status


def test_only_the_trials_own_aborts_count_towards_giving_it_up(store: Store) -> None:
    _single_trial(store)
    infra = [AbortCause.BRIDGE, AbortCause.MEDIA, AbortCause.OTHER_CLIENT, AbortCause.WORKER,
             AbortCause.SHUTDOWN, AbortCause.ESTOP, AbortCause.ROBOT_ACTOR]
    # seven infrastructure aborts: never given up
    assert [_abort_once(store, c) for c in infra] == ["pending"] * 7
    # four of its own: still pending; the fifth gives it up
    own = [AbortCause.POLICY, AbortCause.SCENE, AbortCause.POLICY, AbortCause.UNKNOWN]
    assert [_abort_once(store, c) for c in own] == ["pending"] * 4
    assert _abort_once(store, AbortCause.SCENE) == "given_up"
    with store.read() as s:
        causes = list(s.scalars(select(Episode.abort_cause).order_by(Episode.id)))
        (trial,) = s.scalars(select(Trial).where(Trial.status == "given_up"))
        gave_up = s.scalar(select(Event).where(Event.kind == "trial_gave_up"))
    assert causes == [c.value for c in infra + own + [AbortCause.SCENE]]
    assert trial.attempts == 12
    assert gave_up.payload["own_aborts"] == 5 and gave_up.payload["cause"] == "scene"


def _single_trial(store: Store) -> None:
    """Leave exactly one pending trial: make a campaign and cancel all trials but one."""
    make_campaign(store)
    with store.write() as s:
        ids = list(s.scalars(select(Trial.id).order_by(Trial.id)))
        for tid in ids[1:]:
            s.get(Trial, tid).status = "done"


def test_retry_window_rides_out_a_shorter_outage_and_ends_a_longer_one(store: Store) -> None:
    clock = {"t": 0.0}
    fails = {"until": 20.0}
    calls = {"n": 0}
    store = Store(store.engine, check_schema=False, retry_window_s=25.0,
                  clock=lambda: clock["t"], sleep=lambda d: clock.__setitem__("t", clock["t"] + d))

    def op(s):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if clock["t"] < fails["until"]:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return s.scalar(select(Robot.id).limit(1)) or "ok"

    assert store.retrying(op) == "ok"  # a 20 s outage: retried, not fatal
    assert 20.0 <= clock["t"] < 25.0 and calls["n"] > 5
    clock["t"], fails["until"] = 0.0, 30.0
    with pytest.raises(DatabaseUnavailableError) as err:
        store.retrying(op)  # 30 s: longer than the window
    assert clock["t"] == pytest.approx(25.0)
    assert "unreachable for 25 s" in str(err.value)
    assert "server closed the connection" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_retry_window_is_a_setting(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from orchestrator.config import Settings
    from orchestrator.store import migrate
    from orchestrator.store.db import make_engine

    monkeypatch.setenv("EVALFLEET_DB_RETRY_WINDOW_S", "7.5")
    settings = Settings()
    assert settings.db_retry_window_s == 7.5
    url = f"sqlite:///{tmp_path / 'w.db'}"
    migrate.upgrade(make_engine(url))
    with Store.open(url, settings=settings) as st:
        assert st.retry_window_s == 7.5
    assert Settings(_env_file=None).db_retry_window_s == 7.5  # from the environment
    monkeypatch.delenv("EVALFLEET_DB_RETRY_WINDOW_S")
    assert Settings().db_retry_window_s == 25.0  # docs/architecture.md says ~25 s
