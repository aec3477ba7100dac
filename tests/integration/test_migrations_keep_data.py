"""Upgrading a store that already holds data (0002 -> head) and downgrading it back never loses
a row, on SQLite and PostgreSQL.

The store is filled at revision 0002 through plain inserts into the tables as they were then
(reflected from the database, so nothing here depends on today's models): robots, policies, a
protocol, tasks, three campaigns whose policies share the seed-derived blind codes (P-58G5 ...),
trials in every 0002 status, recorded/aborted/running episodes, steps, human and sim labels,
events. Every row of every 0002 table is compared column by column after the upgrade and after
the downgrade; only the conversions the migrations document may differ (0004 re-codes repeated
blind codes and audits each change as an event; 0007 turns give-ups into `given_up` and such
campaigns into `incomplete`, and back). On SQLite a table rebuild (batch mode's copy + DROP)
with foreign keys on cascades into steps/labels/episodes: exactly what this test catches.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, Table, func, inspect, select, text

from orchestrator.store import migrate
from orchestrator.store.db import make_engine

BASE = "0002"
TABLES = (
    "robots", "policies", "protocols", "tasks", "campaigns", "campaign_policies", "trials",
    "episodes", "steps", "labels", "events",
)
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
# the old seed-derived codes: every campaign with the default seed got the same ones
OLD_CODES = ("P-58G5", "P-KX3M")

Snapshot = dict[str, dict[tuple[Any, ...], dict[str, Any]]]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _attempts(campaign: int, status: str, idx: int) -> int:
    if status == "cancelled":  # a give-up: 5 aborts; a person's cancel: 0 or 1 abort
        return 5 if campaign == 0 else idx
    return 0 if status == "pending" else 1


def _reflect(engine: Engine) -> dict[str, Table]:
    md = MetaData()
    md.reflect(engine, only=list(TABLES))
    return {name: md.tables[name] for name in TABLES}


def _fill(engine: Engine, t: dict[str, Table]) -> dict[str, Any]:
    """Realistic 0002 data; returns the ids the assertions need."""
    with engine.begin() as c:
        def ins(table: str, **values: Any) -> int:
            return int(c.execute(t[table].insert().values(**values)).inserted_primary_key[0])

        robots = [ins("robots", name=f"sim-{i}", endpoint=f"tcp://127.0.0.1:{5550 + i}",
                      station="bench-1", capabilities={"arm": "widowx", "camera": True},
                      status=st, last_heartbeat=_at(i), created_at=T0)
                  for i, st in ((1, "online"), (2, "estopped"))]
        policies = [ins("policies", name=n, version="1", kind=k, checkpoint_uri=uri,
                        config={"seed": i}, weights_checksum=ck, created_at=T0)
                    for i, (n, k, uri, ck) in enumerate((
                        ("alpha", "random", None, None),
                        ("beta", "scripted", None, None),
                        ("octo-small", "vla", "file:///w/octo.safetensors", "sha256:ab12")))]
        proto = ins("protocols", name="smoke", version="1", source_text="name: smoke\n",
                    checksum="sha256:feed", created_at=T0)
        tasks = [ins("tasks", protocol_id=proto, key=k, instruction=f"{k} the block",
                     skill=k, split="test", category=cat, difficulty=d,
                     scene={"objects": ["block"], "k": k}, station_needs=["widowx"],
                     max_steps=40, control_hz=5.0, success_criterion="lifted")
                 for k, cat, d in (("pick", "grasp", "easy"), ("push", "move", None))]
        # campaigns: finished with a give-up (cancelled trial), running, cancelled by a person
        campaigns: list[int] = []
        cps: list[list[int]] = []
        for ci, (name, status, pols) in enumerate((
                ("demo-x", "done", (policies[0], policies[1])),
                ("other-y", "running", (policies[0], policies[2])),
                ("stopped-z", "cancelled", (policies[1], policies[0])))):
            cid = ins("campaigns", name=name, protocol_id=proto, status=status, priority=ci,
                      seed=0, trials_per_task=2, created_by="ops", created_at=_at(ci),
                      updated_at=_at(ci + 30))
            campaigns.append(cid)
            cps.append([ins("campaign_policies", campaign_id=cid, policy_id=p,
                            blind_code=OLD_CODES[pos], position=pos)
                        for pos, p in enumerate(pols)])
        trials: dict[tuple[int, int, int, int], int] = {}
        order = 0
        for ci, cid in enumerate(campaigns):
            for task in tasks:
                for cp in cps[ci]:
                    for idx in range(2):
                        status = {0: "done", 1: "pending", 2: "cancelled"}[ci]
                        if ci == 0 and task == tasks[1] and cp == cps[0][1] and idx == 1:
                            status = "cancelled"  # gave up after 5 aborts (0002 had no given_up)
                        if ci == 1 and idx == 0:
                            status = "done" if task == tasks[0] else "leased"
                        lease = status == "leased"
                        trials[(ci, task, cp, idx)] = ins(
                            "trials", campaign_id=cid, task_id=task, campaign_policy_id=cp,
                            trial_index=idx, scene_seed=1000 * ci + order, plan_order=order,
                            status=status, lease_holder="orch-A" if lease else None,
                            lease_expires_at=_at(90) if lease else None,
                            attempts=_attempts(ci, status, idx))
                        order += 1
        episodes: list[int] = []
        labelled: list[int] = []
        minute = 100.0
        with_steps: list[int] = []
        for (ci, _task, _cp, _idx), trial in trials.items():
            status = c.execute(select(t["trials"].c.status, t["trials"].c.attempts)
                               .where(t["trials"].c.id == trial)).one()
            plan: list[tuple[str, bool]] = []
            if status.status == "done":
                plan = [("aborted", False)] * (1 if trial % 3 == 0 else 0) + [("recorded", True)]
            elif status.status == "cancelled":
                plan = [("aborted", False)] * status.attempts
            elif status.status == "leased":
                plan = [("running", False)]
            for attempt, (est, counted) in enumerate(plan, start=1):
                minute += 1
                eid = ins("episodes", trial_id=trial,
                          robot_id=robots[(trial + attempt) % 2], attempt=attempt, status=est,
                          abort_reason="arm sim-2: NON_FINITE: NaN action"
                          if est == "aborted" else None,
                          counted=counted, started_at=_at(minute),
                          ended_at=None if est == "running" else _at(minute + 0.5),
                          step_count=3 if est != "running" else 1, late_steps=0,
                          terminated_by={"recorded": "policy", "aborted": "error"}.get(est),
                          policy_checksum="sha256:ab12", media={"video": f"ep{trial}.mp4"})
                episodes.append(eid)
                if counted:
                    labelled.append(eid)
                if est != "aborted" or attempt == 1:
                    with_steps.append(eid)
                    for i in range(3 if est != "running" else 1):
                        ins("steps", episode_id=eid, idx=i, terminate=i == 2, dx=0.01 * i,
                            dy=-0.02, dz=0.0, droll=0.0, dpitch=0.0, dyaw=0.1, gripper=1.0,
                            tokens="12 40 7" if i else None, proprio=[0.1, 0.2, i],
                            obs_seq=10 + i, obs_monotonic_ns=10**12 + i, obs_wall_ns=10**18 + i,
                            command_wall_ns=10**18 + i + 5, obs_age_ms=12.5, inference_ms=30.0,
                            orchestration_ms=1.5, command_ms=2.0, late=False, clipped=i == 1,
                            plan="reach" if i == 0 else None)
        for n, eid in enumerate(labelled):
            ins("labels", episode_id=eid, source="sim", evaluator="sim", success=n % 2 == 0,
                progress=None, failure_mode=None, notes=None, created_at=_at(200 + n),
                updated_at=_at(200 + n), version=1)
            ins("labels", episode_id=eid, source="human", evaluator="ana", success=n % 3 != 0,
                progress=0.5 if n % 2 else 1.0, failure_mode="missed grasp" if n % 3 == 0
                else None, notes="slow" if n == 1 else None, created_at=_at(210 + n),
                updated_at=_at(215 + n), version=2 if n % 4 == 0 else 1)
            if n % 2 == 0:  # a second evaluator: a dispute on some
                ins("labels", episode_id=eid, source="human", evaluator="ben", success=n % 4 != 0,
                    progress=None, failure_mode=None, notes=None, created_at=_at(220 + n),
                    updated_at=_at(220 + n), version=1)
        for n, (kind, cid, rid, eid) in enumerate((
                ("campaign_created", campaigns[0], None, None),
                ("campaign_created", campaigns[1], None, None),
                ("episode_aborted", campaigns[0], robots[1], episodes[0]),
                ("estop", None, robots[1], None),
                ("label_saved", campaigns[0], None, labelled[0]),
                ("campaign_cancelled", campaigns[2], None, None))):
            ins("events", at=_at(300 + n), kind=kind, actor="ops", campaign_id=cid,
                robot_id=rid, episode_id=eid, payload={"n": n, "why": kind})
    return {"campaigns": campaigns, "cps": cps, "labelled": labelled, "with_steps": with_steps,
            "human_labels": len(labelled) + (len(labelled) + 1) // 2}


def _snapshot(engine: Engine, t: dict[str, Table]) -> Snapshot:
    """Every row of every 0002 table, 0002 columns only, keyed by primary key."""
    snap: Snapshot = {}
    with engine.connect() as c:
        for name, table in t.items():
            pk = [col.name for col in table.primary_key.columns]
            rows = c.execute(select(table)).mappings().all()
            snap[name] = {tuple(r[k] for k in pk): dict(r) for r in rows}
    return snap


def _schema(engine: Engine) -> dict[str, tuple[Any, ...]]:
    """What a downgrade must restore: each 0002 table's columns, indexes, constraints."""
    insp = inspect(engine)
    out: dict[str, tuple[Any, ...]] = {}
    for name in TABLES:
        out[name] = (
            [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(name)],
            sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                   for i in insp.get_indexes(name)),
            sorted((u["name"], tuple(u["column_names"]))
                   for u in insp.get_unique_constraints(name)),
            sorted((f["name"], tuple(f["constrained_columns"]), f["referred_table"],
                    (f.get("options") or {}).get("ondelete"))
                   for f in insp.get_foreign_keys(name)),
            sorted(" ".join(str(k["sqltext"]).split()) for k in insp.get_check_constraints(name)),
        )
    return out


def _counts(snap: Snapshot) -> dict[str, int]:
    return {name: len(rows) for name, rows in snap.items()}


def _scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as c:
        return c.execute(text(sql)).scalar()


def _check_sqlite_consistent(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA integrity_check").scalars().all() == ["ok"]
        assert c.exec_driver_sql("PRAGMA foreign_key_check").all() == []


def _without(rows: dict[tuple[Any, ...], dict[str, Any]], col: str) -> dict[Any, dict[str, Any]]:
    return {k: {c: v for c, v in r.items() if c != col} for k, r in rows.items()}


def test_upgrade_and_downgrade_keep_every_row(engine: Engine) -> None:
    migrate.upgrade(engine, BASE)
    t = _reflect(engine)
    ids = _fill(engine, t)
    before = _snapshot(engine, t)
    schema = _schema(engine)
    counts = _counts(before)
    assert counts["steps"] > 20 and counts["labels"] > 10 and counts["episodes"] > 15
    assert _scalar(engine, "SELECT count(*) FROM v_episode_outcomes") == len(ids["labelled"])

    # --- up to head -------------------------------------------------------------------------
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    _check_sqlite_consistent(engine)
    up = _snapshot(engine, t)
    recoded = len(ids["cps"]) * len(OLD_CODES) - len(OLD_CODES)  # all but the oldest campaign's
    assert _counts(up) == {**counts, "events": counts["events"] + recoded}, (
        "rows lost or added by the upgrade")
    for name in ("robots", "policies", "protocols", "tasks", "episodes", "steps", "labels"):
        assert up[name] == before[name], f"{name}: rows changed by the upgrade"
    assert {k: r for k, r in up["events"].items() if k in before["events"]} == before["events"]
    # 0004: codes unique store-wide; the oldest campaign keeps the old ones; each change audited
    assert _without(up["campaign_policies"], "blind_code") == _without(
        before["campaign_policies"], "blind_code")
    codes = [r["blind_code"] for _, r in sorted(up["campaign_policies"].items())]
    assert len(set(codes)) == len(codes)
    assert codes[:2] == list(OLD_CODES)
    assert _scalar(engine, "SELECT count(*) FROM events WHERE kind = 'blind_code_changed'") \
        == recoded
    # 0007: the cancelled trial of a campaign that was not cancelled was a give-up
    for key, row in up["trials"].items():
        old = before["trials"][key]
        cid = old["campaign_id"]
        expected = old["status"]
        if old["status"] == "cancelled" and cid != ids["campaigns"][2]:
            expected = "given_up"
        assert {**old, "status": expected} == row
    assert {r["status"] for r in up["campaigns"].values()} == {
        "incomplete", "running", "cancelled"}
    assert _without(up["campaigns"], "status") == _without(before["campaigns"], "status")
    # 0003: every human label has its first history entry
    assert _scalar(engine, "SELECT count(*) FROM label_versions") == ids["human_labels"]
    # the analyst views still see every counted episode, with its labels
    assert _scalar(engine, "SELECT count(*) FROM v_episode_outcomes") == len(ids["labelled"])
    assert _scalar(engine, "SELECT count(*) FROM v_episode_outcomes WHERE human_votes > 0") \
        == len(ids["labelled"])
    with engine.connect() as c:
        stepped = c.execute(select(func.count(func.distinct(t["steps"].c.episode_id)))).scalar()
    assert stepped == len(ids["with_steps"])

    # --- and back down to 0002 --------------------------------------------------------------
    migrate.downgrade(engine, BASE)
    assert migrate.current_revision(engine) == BASE
    _check_sqlite_consistent(engine)
    assert _schema(engine) == schema, "the downgrade did not restore the 0002 tables"
    down = _snapshot(engine, t)
    assert _counts(down) == _counts(up), "rows lost or added by the downgrade"
    for name in TABLES:
        if name in ("campaign_policies", "events"):
            continue  # the new codes and their audit events stay (0004's downgrade says so)
        assert down[name] == before[name], f"{name}: rows differ after up + down"
    assert down["campaign_policies"] == up["campaign_policies"]
    assert down["events"] == up["events"]
    assert _scalar(engine, "SELECT count(*) FROM v_episode_outcomes") == len(ids["labelled"])

    # --- and up again: still nothing lost ---------------------------------------------------
    migrate.upgrade(engine)
    _check_sqlite_consistent(engine)
    assert _snapshot(engine, t) == up
