"""FleetRunner: the orchestrator's loop (imperative shell around orchestrator.scheduler).

Leases trials from the store, places them on idle arms (RobotActors), waits for operators
where a reset needs one, collects results and writes them, and handles faults:
- an arm whose bridge fails mid-episode: the episode is aborted with the reason, the trial
  re-queued (any capable arm may take it), the arm marked offline and probed with backoff;
- a policy worker that dies: Ray restarts it; its in-flight episodes abort and re-queue;
- the orchestrator itself killed: its leases expire and `campaign run` picks them up again;
- a short database outage: store calls are retried with backoff (the store's retry window,
  EVALFLEET_DB_RETRY_WINDOW_S); a longer one ends the run with one paragraph (RunStopped).
Arms are leased in the store (orchestrator.store.arm_leases): this runner drives only the
arms it holds, waits for the others and takes them when they are freed or their lease expires.
Why an episode aborted is an AbortCause (orchestrator.faults): only the trial's own causes
count towards giving it up; infrastructure faults take the arm out instead.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import ray
from sqlalchemy import func, select, update

from orchestrator.actors.policy import PolicyWorker, worker_start_error
from orchestrator.actors.robot import RobotActor, station_resource
from orchestrator.faults import AbortCause, ArmFate, disposition
from orchestrator.fleet_config import ArmConfig, FleetConfig
from orchestrator.liveness import HEARTBEAT_S
from orchestrator.recording import campaign_dir
from orchestrator.runner_faults import (
    RunStopped,
    cause_of_actor_error,
    cause_of_fault,
    outage_paragraph,
)
from orchestrator.scheduler import ArmState, assign, backoff_s
from orchestrator.store import queue as q
from orchestrator.store.arm_leases import lease_arms, release_arms, renew_arm_leases
from orchestrator.store.campaigns import log_event
from orchestrator.store.db import DatabaseUnavailableError, Store
from orchestrator.store.models import Campaign, Episode, Event, Policy, Robot, Trial, utcnow

log = logging.getLogger("evalfleet.runner")

ESTOP_PROBE_S = 1.0  # how often an e-stopped arm is asked whether it was re-armed
MEDIA_PROBE_MAX_S = 5.0  # the longest wait between checks of an unwritable media folder


@dataclass
class Job:
    trial: q.LeasedTrial
    episode_id: int
    phase: str  # prepare | operator | run
    ref: Any = None
    started: float = field(default_factory=time.monotonic)
    prompt_event_id: int | None = None
    scene: dict[str, Any] = field(default_factory=dict)


@dataclass
class Arm:
    cfg: ArmConfig
    robot_id: int
    actor: Any = None
    online: bool = False
    failures: int = 0
    next_probe: float = 0.0
    probe_ref: Any = None
    scene_key: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    job: Job | None = None
    held: bool = False  # leased to this runner in the store (only then probed and scheduled)
    media_folder: str | None = None  # set while its media folder is unwritable: held out


@dataclass
class RunStats:
    recorded: int = 0
    aborted: int = 0
    steps: int = 0
    late_steps: int = 0
    resets_saved: int = 0
    done_by_category: dict[str, int] = field(default_factory=dict)
    first_action_s: float | None = None


class FleetRunner:
    def __init__(
        self,
        store: Store,
        fleet: FleetConfig,
        *,
        media_dir: str,
        campaign_ids: Sequence[int] | None = None,
        holder: str | None = None,
        episode_timeout_margin_s: float = 30.0,
        record: bool = True,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.media_dir = media_dir
        self.campaign_ids = list(campaign_ids) if campaign_ids is not None else None
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_s = fleet.lease_s
        self.margin_s = episode_timeout_margin_s
        self.record = record
        self.arms: dict[str, Arm] = {}
        self.workers: dict[int, list[Any]] = {}
        self.worker_meta: dict[int, dict[str, Any]] = {}
        self.stats = RunStats()
        self._last_renew = 0.0
        self._t0 = time.monotonic()
        self._sweep_due = False
        self._last_estop_event = 0
        self._last_estop_check = 0.0
        self._next_arm_try = 0.0
        self._leases_until: datetime | None = None  # the latest lease expiry we wrote
        self._stopped: RunStopped | None = None  # the database went away: the run is over
        self.waiting: dict[str, str] = {}  # arm -> "arm-1 is held by ... until ...; waiting"

    # -- store access with retry ---------------------------------------------------------------
    def _db(self, fn: Callable[[Any], Any]) -> Any:
        """A store call, retried over the store's retry window; past it the run is over:
        RunStopped with the paragraph for the user (and no further store call is tried)."""
        if self._stopped is not None:
            raise self._stopped
        try:
            return self.store.retrying(fn)
        except DatabaseUnavailableError as e:
            self._stopped = RunStopped(outage_paragraph(
                url=e.url, window_s=e.window_s, last_error=e.last_error,
                in_flight=self.busy_arms(), leases_until=self._leases_until, campaigns=None))
            raise self._stopped from e

    def _leased_until_now(self) -> None:
        self._leases_until = utcnow() + timedelta(seconds=self.lease_s)

    # -- setup -------------------------------------------------------------------------------
    def start(self) -> None:
        def upsert(s):  # type: ignore[no-untyped-def]
            ids = {}
            for a in self.fleet.arms:
                row = s.scalar(select(Robot).where(Robot.name == a.name))
                if row is None:
                    row = Robot(name=a.name, endpoint=a.endpoint)
                    s.add(row)
                row.endpoint, row.station = a.endpoint, a.station
                s.flush()
                ids[a.name] = row.id
            q.reclaim_expired_leases(s)
            return ids

        ids = self._db(upsert)
        self._last_estop_event = self._db(
            lambda s: s.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0
        )
        self.sweep_media()
        for a in self.fleet.arms:
            self.arms[a.name] = Arm(cfg=a, robot_id=ids[a.name])
        self._acquire_arms()

    def _acquire_arms(self) -> None:
        """Lease the arms this runner does not hold yet (free, released or expired ones);
        say once per holder which arms another orchestrator holds and that we wait."""
        free = [a for a in self.arms.values() if not a.held]
        if not free or time.monotonic() < self._next_arm_try:
            return
        self._next_arm_try = time.monotonic() + min(1.0, self.lease_s / 4)

        def take(s):  # type: ignore[no-untyped-def]
            res = lease_arms(s, [a.robot_id for a in free], holder=self.holder,
                             lease_s=self.lease_s)
            for rid in res.taken:
                s.get(Robot, rid).status = "unknown"
                log_event(s, "arm_leased", robot_id=rid, holder=self.holder)
            return res

        res = self._db(take)
        self._leased_until_now()
        by_id = {a.robot_id: a for a in free}
        for rid in res.taken:
            arm = by_id[rid]
            if arm.cfg.name in self.waiting:
                log.warning("%s is free now; taking it", arm.cfg.name)
                self.waiting.pop(arm.cfg.name)
            arm.held, arm.failures, arm.online = True, 0, False
            self._probe(arm)
        for h in res.held:
            line = h.waiting_line()
            before = self.waiting.get(h.name)
            if before is None or not before.startswith(f"{h.name} is held by {h.holder} "):
                log.warning("%s", line)
            self.waiting[h.name] = line

    def _lose_arm(self, arm: Arm) -> None:
        """Our lease on the arm ran out and another orchestrator took it: stop driving it."""
        log.warning("%s: another orchestrator took this arm (our lease ran out); leaving it",
                    arm.cfg.name)
        if arm.job is not None:
            if arm.actor is not None:
                arm.actor.stop_episode.remote()
            self._abort(arm, f"arm {arm.cfg.name} was taken over by another orchestrator",
                        AbortCause.ARM_LEASE_LOST)
        if arm.actor is not None:
            ray.kill(arm.actor)
        arm.actor, arm.probe_ref = None, None
        arm.held, arm.online = False, False

    def _new_actor(self, arm: Arm) -> Any:
        return RobotActor.options(
            name=f"evalfleet-robot-{arm.cfg.name}-{uuid.uuid4().hex[:4]}",
            resources={station_resource(arm.cfg.station): 0.001},
        ).remote(arm.cfg.model_dump(mode="json"), self.media_dir)

    def _probe(self, arm: Arm) -> None:
        if arm.actor is None:
            arm.actor = self._new_actor(arm)
        if arm.media_folder is not None:  # first: can its node write media again?
            arm.probe_ref = arm.actor.media_problem.remote(arm.media_folder)
            arm.next_probe = time.monotonic() + min(MEDIA_PROBE_MAX_S,
                                                    backoff_s(arm.failures + 1))
            return
        arm.probe_ref = arm.actor.hello.remote()
        arm.next_probe = time.monotonic() + backoff_s(arm.failures + 1)

    def _check_probes(self) -> None:
        for arm in self.arms.values():
            if not arm.held:
                continue
            if arm.probe_ref is None:
                if time.monotonic() >= arm.next_probe:
                    if not arm.online:
                        self._probe(arm)
                    else:
                        self._heartbeat(arm)
                continue
            ready, _ = ray.wait([arm.probe_ref], timeout=0)
            if not ready:
                if time.monotonic() > arm.next_probe + 10:
                    arm.probe_ref = None  # a hung probe: try again later
                continue
            if arm.media_folder is not None:
                self._media_checked(arm)
                continue
            try:
                arm.info = ray.get(arm.probe_ref, timeout=1)
                if arm.info.get("estopped"):
                    # Reachable but latched: every reset would be refused and burn a trial's
                    # attempt. Keep it out of scheduling; look again soon for the re-arm.
                    arm.online = False
                    arm.failures += 1
                    arm.next_probe = time.monotonic() + min(ESTOP_PROBE_S,
                                                            backoff_s(arm.failures))
                    status, caps = "estopped", arm.info
                else:
                    arm.online, arm.failures = True, 0
                    arm.next_probe = time.monotonic() + HEARTBEAT_S
                    status, caps = "online", arm.info
            except Exception as e:  # noqa: BLE001 - bridge down: offline, probe with backoff
                arm.online = False
                arm.failures += 1
                arm.next_probe = time.monotonic() + backoff_s(arm.failures)
                status, caps = "offline", {"error": str(e)[:300]}
                if _actor_died(e):
                    arm.actor = None
            arm.probe_ref = None
            self._set_robot(arm, status, caps)

    def _media_checked(self, arm: Arm) -> None:
        """The answer of an arm held out for an unwritable media folder: writable again, it is
        probed right away; not yet, it waits (backoff up to MEDIA_PROBE_MAX_S)."""
        try:
            problem = ray.get(arm.probe_ref, timeout=1)
        except Exception as e:  # noqa: BLE001 - the actor itself failed: check again later
            problem = f"media check on {arm.cfg.name} failed: {e.__class__.__name__}"
            if _actor_died(e):
                arm.actor = None
        arm.probe_ref = None
        if isinstance(problem, dict):  # a hello sent before the abort: check media now
            arm.next_probe = 0.0
            return
        if problem is None:
            log.warning("%s: media folder %s is writable again", arm.cfg.name, arm.media_folder)
            arm.media_folder, arm.failures, arm.next_probe = None, 0, 0.0
            return
        arm.failures += 1
        arm.next_probe = time.monotonic() + min(MEDIA_PROBE_MAX_S, backoff_s(arm.failures))
        self._set_robot(arm, "offline", {**arm.info, "error": str(problem)[:300]})

    def _heartbeat(self, arm: Arm) -> None:
        """Every HEARTBEAT_S for an online arm (the Fleet page shows an arm stale when its
        heartbeat is older than a few of these, orchestrator.liveness): an idle arm is probed
        again, so a dead bridge turns offline; an arm with a job is in contact through it (a dead
        bridge aborts the episode and turns the arm offline), so only its heartbeat is renewed."""
        if arm.job is None:
            self._probe(arm)
            return
        arm.next_probe = time.monotonic() + HEARTBEAT_S
        self._db(lambda s: s.execute(update(Robot).where(Robot.id == arm.robot_id)
                                     .values(last_heartbeat=utcnow())))

    def _set_robot(self, arm: Arm, status: str, caps: dict[str, Any]) -> None:
        def w(s):  # type: ignore[no-untyped-def]
            row = s.get(Robot, arm.robot_id)
            if row.status != status:
                log_event(s, f"robot_{status}", robot_id=arm.robot_id, detail=caps.get("error"))
            row.status = status
            row.capabilities = {**caps, "tags": list(arm.cfg.capabilities)}
            row.last_heartbeat = utcnow()

        self._db(w)

    # -- policy workers ----------------------------------------------------------------------
    def _worker_for(self, trial: q.LeasedTrial, arm: str) -> Any:
        pool = self.workers.get(trial.policy_id)
        if pool is None:
            cfg = self.fleet.policy_workers
            config = {
                "name": trial.policy_name,
                "kind": trial.policy_config.get("kind", trial.policy_kind),
                "path": trial.policy_config.get("path"),
                "options": trial.policy_config.get("options") or {},
            }
            # the weights checksum taken at `policy register`: the worker refuses other weights
            expected = self._db(lambda s: s.get(Policy, trial.policy_id).weights_checksum)
            pool = [
                PolicyWorker.options(
                    num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_concurrency=1000,
                    resources=dict(cfg.resources) or None,
                ).remote(config, cfg.max_batch, cfg.batch_wait_ms, expected)
                for _ in range(cfg.replicas)
            ]
            try:
                meta = ray.get(pool[0].metadata.remote(), timeout=120)
            except Exception as e:  # a worker that failed to start is never cached
                for w in pool:
                    ray.kill(w, no_restart=True)
                raise RuntimeError(worker_start_error(e)) from e
            self.workers[trial.policy_id] = pool
            self.worker_meta[trial.policy_id] = meta
        return pool[sum(arm.encode()) % len(pool)]

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> None:
        self._check_estop_requests()
        self._acquire_arms()
        self._check_probes()
        self._collect()
        self._check_operators()
        self._renew_leases()
        self._schedule()

    def _check_estop_requests(self) -> None:
        """Act on `estop_requested` events (dashboard buttons, `fleet stop`): the bridges are
        e-stopped directly by whoever asked; this is the second path, through our actors
        (which hold the arms' CURVE keys when the dashboard does not)."""
        if time.monotonic() - self._last_estop_check < 0.2:
            return
        self._last_estop_check = time.monotonic()

        def new(s):  # type: ignore[no-untyped-def]
            return s.execute(
                select(Event.id, Event.payload).where(
                    Event.kind == "estop_requested", Event.id > self._last_estop_event
                ).order_by(Event.id)
            ).all()

        for event_id, payload in self._db(new):
            self._last_estop_event = event_id
            target = (payload or {}).get("robot", "all")
            for arm in self.arms.values():
                if arm.actor is not None and target in ("all", arm.cfg.name):
                    arm.actor.estop.remote(f"estop_requested event {event_id}")

    def busy_arms(self) -> int:
        return sum(1 for a in self.arms.values() if a.job is not None)

    def open_trials(self) -> int:
        def r(s):  # type: ignore[no-untyped-def]
            stmt = select(Trial.id).join(Campaign, Campaign.id == Trial.campaign_id).where(
                Trial.status.in_(("pending", "leased")),
                Campaign.status.in_(("pending", "running", "paused")),
            )
            if self.campaign_ids is not None:
                stmt = stmt.where(Trial.campaign_id.in_(self.campaign_ids))
            return len(s.scalars(stmt.limit(1)).all())

        return self._db(r)

    def run(self, *, until_done: bool, should_stop: Callable[[], bool] = lambda: False,
            on_tick: Callable[[FleetRunner], None] | None = None) -> None:
        while not should_stop():
            self.step()
            if on_tick:
                on_tick(self)
            if until_done and self.busy_arms() == 0 and self.open_trials() == 0:
                break
            refs = [a.job.ref for a in self.arms.values() if a.job and a.job.ref is not None]
            if refs:
                ray.wait(refs, num_returns=1, timeout=0.2)
            else:
                time.sleep(0.2)
        self._db(lambda s: q.finish_campaigns_if_done(s))
        self.sweep_media()

    def _schedule(self) -> None:
        states = [
            ArmState(
                name=a.cfg.name,
                station=a.cfg.station,
                capabilities=frozenset(a.cfg.capabilities),
                online=a.online and a.held,
                busy=a.job is not None,
                scene_key=a.scene_key,
            )
            for a in self.arms.values()
        ]
        if not any(s.online and not s.busy for s in states):
            return

        def lease(s):  # type: ignore[no-untyped-def]
            if q.reclaim_expired_leases(s):
                self._sweep_due = True  # their actors may have finished files after all
            cands = q.pending_candidates(s, limit=200, campaign_ids=self.campaign_ids)
            plan = assign(cands, states)
            out = []
            for a in plan:
                got = q.lease_trials(s, [a.trial_id], holder=self.holder, lease_s=self.lease_s)
                if not got:
                    continue
                trial = got[0]
                arm = self.arms[a.arm]
                # the arm's lease never runs out before the lease of the trial it runs
                lease_arms(s, [arm.robot_id], holder=self.holder, lease_s=self.lease_s)
                eid = q.start_episode(s, trial.trial_id, holder=self.holder, robot_id=arm.robot_id)
                camp = s.get(Campaign, trial.campaign_id)
                if camp.status == "pending":
                    camp.status = "running"
                out.append((arm, trial, eid, a.reuses_setup))
            return out

        self._sweep_due = False
        leased = self._db(lease)
        if leased:
            self._leased_until_now()
        if self._sweep_due:
            self.sweep_media()
        for arm, trial, eid, reused in leased:
            scene = {**trial.scene, "seed": trial.scene_seed, "instruction": trial.instruction,
                     "skill": trial.skill}
            arm.job = Job(trial=trial, episode_id=eid, phase="prepare", scene=scene)
            arm.job.ref = arm.actor.prepare.remote(scene, f"ep-{eid}")
            self.stats.resets_saved += int(reused)
            arm.scene_key = q.scene_key(trial.scene)

    def _collect(self) -> None:
        for arm in self.arms.values():
            job = arm.job
            if job is None or job.ref is None:
                continue
            ready, _ = ray.wait([job.ref], timeout=0)
            if not ready:
                if time.monotonic() - job.started > self._timeout(job.trial):
                    ray.cancel(job.ref, force=False)
                    arm.actor.stop_episode.remote()
                    self._abort(arm, f"episode timed out on arm {arm.cfg.name}",
                                AbortCause.ROBOT_ACTOR)
                continue
            try:
                result = ray.get(job.ref, timeout=5)
            except Exception as e:  # noqa: BLE001 - the reset failed, or the actor died
                inner = getattr(e, "cause", None) or e  # what the actor raised, if it did
                detail = (str(inner).splitlines() or [""])[0]
                reason = (f"arm {arm.cfg.name} {job.phase} failed: "
                          f"{inner.__class__.__name__}: {detail}")[:500]
                cause = cause_of_actor_error(e, during_reset=job.phase == "prepare")
                if _actor_died(e):
                    arm.actor = None
                self._abort(arm, reason, cause)
                continue
            if job.phase == "prepare":
                self._after_prepare(arm, result)
            else:
                self._after_run(arm, result)

    def _timeout(self, t: q.LeasedTrial) -> float:
        return t.max_steps / t.control_hz * 2 + self.margin_s

    def _after_prepare(self, arm: Arm, result: dict[str, Any]) -> None:
        job = arm.job
        assert job is not None
        if result.get("ready"):
            self._launch(arm)
            return

        def prompt(s):  # type: ignore[no-untyped-def]
            ev = Event(kind="operator_setup_required", robot_id=arm.robot_id,
                       episode_id=job.episode_id, campaign_id=job.trial.campaign_id,
                       payload={"robot": arm.cfg.name, "instructions": result.get("instructions"),
                                "trial_id": job.trial.trial_id})
            s.add(ev)
            s.flush()
            return ev.id

        job.prompt_event_id = self._db(prompt)
        job.phase, job.ref = "operator", None

    def _check_operators(self) -> None:
        waiting = [a for a in self.arms.values() if a.job and a.job.phase == "operator"]
        for arm in waiting:
            job = arm.job
            assert job is not None

            def confirmed(s, arm=arm, job=job):  # type: ignore[no-untyped-def]
                return s.scalar(select(Event.id).where(
                    Event.kind == "operator_confirmed", Event.robot_id == arm.robot_id,
                    Event.id > job.prompt_event_id).limit(1))

            if self._db(confirmed):
                job.scene = {**job.scene, "operator_confirmed": True}
                job.phase = "prepare"
                job.ref = arm.actor.prepare.remote(job.scene, f"ep-{job.episode_id}")

    def _launch(self, arm: Arm) -> None:
        job = arm.job
        assert job is not None
        try:
            worker = self._worker_for(job.trial, arm.cfg.name)
        except Exception as e:  # noqa: BLE001 - bad policy config: abort, re-queue, report
            self._abort(arm, f"policy {job.trial.policy_name} failed to start: {e}"[:500],
                        AbortCause.POLICY)
            return
        meta = self.worker_meta[job.trial.policy_id]
        spec = {
            "episode_id": job.episode_id,
            "campaign": job.trial.campaign_name,
            "instruction": job.trial.instruction,
            "max_steps": job.trial.max_steps,
            "control_hz": job.trial.control_hz,
            "needs_privileged": bool(meta.get("needs_privileged")),
            "timeout_s": self._timeout(job.trial),
            "record": self.record,
            # spread the arms over the control period (docs/architecture.md, "The control loop")
            "phase": list(self.arms).index(arm.cfg.name) / len(self.arms),
        }
        job.phase, job.started = "run", time.monotonic()
        job.ref = arm.actor.run_episode.remote(spec, worker)

    def _check_worker(self, policy_id: int) -> None:
        """After a policy fault: drop workers that Ray could not restart (recreated lazily)."""
        pool = self.workers.get(policy_id, [])
        for w in pool:
            try:
                ray.get(w.ping.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - dead for good: forget the pool, rebuild on demand
                self.workers.pop(policy_id, None)
                return

    def _after_run(self, arm: Arm, result: dict[str, Any]) -> None:
        job = arm.job
        assert job is not None
        if result["status"] != "recorded":
            # fault: why, as an AbortCause (orchestrator.faults): the bridge failed or refused
            # (e-stop, another client) -> the arm is probed before more work; media -> held
            # until writable; only policy/scene/unknown use up one of the trial's attempts
            cause = cause_of_fault(result.get("fault"))
            self._abort(arm, result.get("reason") or "aborted", cause)
            if cause is AbortCause.WORKER:
                self._check_worker(job.trial.policy_id)
            return
        steps = [{**st, "episode_id": job.episode_id} for st in result["steps"]]
        checksum = self.worker_meta.get(job.trial.policy_id, {}).get("checksum")

        def done(s):  # type: ignore[no-untyped-def]
            q.add_steps(s, steps)
            s.get(Episode, job.episode_id).policy_checksum = checksum
            return q.complete_episode(
                s, job.episode_id, holder=self.holder, step_count=len(steps),
                late_steps=result["late_steps"], terminated_by=result["terminated_by"],
                media=result["media"], sim_success=result["sim_success"],
            )

        self._db(done)
        if self.stats.first_action_s is None and steps:
            self.stats.first_action_s = time.monotonic() - self._t0
        self.stats.recorded += 1
        self.stats.steps += len(steps)
        self.stats.late_steps += result["late_steps"]
        cat = job.trial.category + (f"/{job.trial.difficulty}" if job.trial.difficulty else "")
        self.stats.done_by_category[cat] = self.stats.done_by_category.get(cat, 0) + 1
        arm.job = None

    def _abort(self, arm: Arm, reason: str, cause: AbortCause) -> None:
        """Close the arm's episode as aborted with its cause; the trial is re-queued (counted
        towards giving it up only for the trial's own causes); an infrastructure fault takes
        the arm out: offline and probed with backoff, or held until media is writable."""
        job = arm.job
        assert job is not None
        self._db(lambda s: q.abort_episode(s, job.episode_id, holder=self.holder, reason=reason,
                                           cause=cause))
        self.stats.aborted += 1
        arm.job = None
        arm.scene_key = None
        fate = disposition(cause).arm
        if fate is ArmFate.KEEP:
            return
        arm.online = False
        arm.failures += 1
        arm.next_probe = time.monotonic() + backoff_s(arm.failures)
        if fate is ArmFate.MEDIA_CHECK:
            arm.media_folder = campaign_dir(job.trial.campaign_name)
            arm.next_probe = time.monotonic() + min(MEDIA_PROBE_MAX_S, backoff_s(arm.failures))
            log.warning("%s held out until its media folder is writable: %s", arm.cfg.name,
                        reason)
        self._set_robot(arm, "offline", {**arm.info, "error": reason[:300]})

    def sweep_media(self) -> int:
        """Remove the media files of aborted episodes, so that every file has its row.

        Such files come from episodes closed as aborted while their RobotActor still ran:
        a timed-out episode, or the in-flight episodes of an orchestrator that was killed
        (Ray tears its actors down a moment later; a lease expiry aborts their rows), and
        `*.partial` leftovers of writers that crashed. Only files at the names the recorder
        gives an aborted episode of this store are touched (its campaign dir and episode id),
        never those of running or recorded episodes nor anything else in the dir; only this
        node's media dir is swept (RobotActors on other nodes write to theirs).
        """
        from orchestrator.recording import campaign_dir, episode_id_of

        root = Path(self.media_dir)
        if not root.is_dir():
            return 0

        def aborted(s):  # type: ignore[no-untyped-def]
            return s.execute(
                select(Episode.id, Campaign.name)
                .join(Trial, Trial.id == Episode.trial_id)
                .join(Campaign, Campaign.id == Trial.campaign_id)
                .where(Episode.status == "aborted")
            ).all()

        by_folder: dict[str, set[int]] = {}
        for eid, campaign in self._db(aborted):
            by_folder.setdefault(campaign_dir(campaign), set()).add(eid)
        removed = 0
        for folder, ids in by_folder.items():
            try:
                entries = list(os.scandir(root / folder))
            except FileNotFoundError:
                continue
            except OSError as e:  # not a folder, unreadable: nothing of ours to sweep there
                log.warning("cannot sweep %s: %s", root / folder, e)
                continue
            for entry in entries:  # one listing per folder: episode-00000042-main.mp4[.partial]
                if entry.is_file() and episode_id_of(entry.name) in ids:
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
                    log.warning("removed %s: its episode was aborted", entry.path)
        return removed

    def _renew_leases(self) -> None:
        if time.monotonic() - self._last_renew < self.lease_s / 4:
            return
        self._last_renew = time.monotonic()
        ids = [a.job.trial.trial_id for a in self.arms.values() if a.job]
        held = [a for a in self.arms.values() if a.held]
        if not ids and not held:
            return

        def renew(s):  # type: ignore[no-untyped-def]
            for t in ids:
                q.renew_lease(s, t, holder=self.holder, lease_s=self.lease_s)
            return renew_arm_leases(s, [a.robot_id for a in held], holder=self.holder,
                                    lease_s=self.lease_s)

        lost = set(self._db(renew))
        self._leased_until_now()
        for arm in held:
            if arm.robot_id in lost:
                self._lose_arm(arm)

    def shutdown(self, *, reason: str = "orchestrator stopped") -> None:
        """Abort in-flight episodes (re-queued, not counted against their trials), stop arms,
        release actors and the arms' leases. With the database gone, only the arms are
        stopped: the leases in the store run out by themselves."""
        for arm in self.arms.values():
            if arm.job is not None:
                if arm.actor is not None:
                    arm.actor.stop_episode.remote()
                if self._stopped is None:
                    try:
                        self._abort(arm, reason, AbortCause.SHUTDOWN)
                    except RunStopped:
                        pass
                arm.job = None
            if arm.actor is not None:
                ray.kill(arm.actor)
                arm.actor = None
        held = [a.robot_id for a in self.arms.values() if a.held]
        if held and self._stopped is None:
            try:
                self._db(lambda s: release_arms(s, held, holder=self.holder))
            except RunStopped:
                pass
        for a in self.arms.values():
            a.held = False
        for pool in self.workers.values():
            for w in pool:
                ray.kill(w)


def _actor_died(e: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(e, RayActorError | ActorDiedError | ActorUnavailableError)
