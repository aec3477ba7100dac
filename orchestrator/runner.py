"""FleetRunner: the orchestrator's loop (imperative shell around orchestrator.scheduler).

Leases trials from the store, places them on idle arms (RobotActors), waits for operators
where a reset needs one, collects results and writes them, and handles faults:
- an arm whose bridge fails mid-episode: the episode is aborted with the reason, the trial
  re-queued (any capable arm may take it), the arm marked offline and probed with backoff;
- a policy worker that dies: Ray restarts it; its in-flight episodes abort and re-queue;
- the orchestrator itself killed: its leases expire and `campaign run` picks them up again;
- a short database outage: store calls are retried with backoff, not fatal.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from sqlalchemy import func, select

from orchestrator.actors.policy import PolicyWorker
from orchestrator.actors.robot import RobotActor, station_resource
from orchestrator.fleet_config import ArmConfig, FleetConfig
from orchestrator.scheduler import ArmState, assign, backoff_s
from orchestrator.store import queue as q
from orchestrator.store.campaigns import log_event
from orchestrator.store.db import Store
from orchestrator.store.models import Campaign, Episode, Event, Robot, Trial, utcnow

log = logging.getLogger("evalfleet.runner")

ESTOP_PROBE_S = 1.0  # how often an e-stopped arm is asked whether it was re-armed


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

    # -- store access with retry ---------------------------------------------------------------
    def _db(self, fn: Callable[[Any], Any]) -> Any:
        return self.store.retrying(fn, attempts=10, first_delay_s=0.2)

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
                row.status = "unknown"
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
        for arm in self.arms.values():
            self._probe(arm)

    def _new_actor(self, arm: Arm) -> Any:
        return RobotActor.options(
            name=f"evalfleet-robot-{arm.cfg.name}-{uuid.uuid4().hex[:4]}",
            resources={station_resource(arm.cfg.station): 0.001},
        ).remote(arm.cfg.model_dump(mode="json"), self.media_dir)

    def _probe(self, arm: Arm) -> None:
        if arm.actor is None:
            arm.actor = self._new_actor(arm)
        arm.probe_ref = arm.actor.hello.remote()
        arm.next_probe = time.monotonic() + backoff_s(arm.failures + 1)

    def _check_probes(self) -> None:
        for arm in self.arms.values():
            if arm.probe_ref is None:
                if not arm.online and time.monotonic() >= arm.next_probe:
                    self._probe(arm)
                continue
            ready, _ = ray.wait([arm.probe_ref], timeout=0)
            if not ready:
                if time.monotonic() > arm.next_probe + 10:
                    arm.probe_ref = None  # a hung probe: try again later
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
            pool = [
                PolicyWorker.options(
                    num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_concurrency=1000,
                    resources=dict(cfg.resources) or None,
                ).remote(config, cfg.max_batch, cfg.batch_wait_ms)
                for _ in range(cfg.replicas)
            ]
            self.workers[trial.policy_id] = pool
            self.worker_meta[trial.policy_id] = ray.get(pool[0].metadata.remote(), timeout=120)
        return pool[sum(arm.encode()) % len(pool)]

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> None:
        self._check_estop_requests()
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
                online=a.online,
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
                eid = q.start_episode(s, trial.trial_id, holder=self.holder, robot_id=arm.robot_id)
                camp = s.get(Campaign, trial.campaign_id)
                if camp.status == "pending":
                    camp.status = "running"
                out.append((arm, trial, eid, a.reuses_setup))
            return out

        self._sweep_due = False
        leased = self._db(lease)
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
                    self._abort(arm, f"episode timed out on arm {arm.cfg.name}")
                continue
            try:
                result = ray.get(job.ref, timeout=5)
            except Exception as e:  # noqa: BLE001 - the RobotActor itself died
                reason = f"robot actor for {arm.cfg.name} failed: {e.__class__.__name__}"
                if _actor_died(e):
                    arm.actor = None
                self._abort(arm, reason, offline=True)
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
            self._abort(arm, f"policy {job.trial.policy_name} failed to start: {e}"[:500])
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
            # "arm": the bridge failed; "command": it refused a command (an e-stop latched
            # mid-episode, ...): either way probe the arm before it gets more work.
            self._abort(arm, result.get("reason") or "aborted",
                        offline=result.get("fault") in ("arm", "command"))
            if result.get("fault") == "policy":
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

    def _abort(self, arm: Arm, reason: str, *, offline: bool = False) -> None:
        job = arm.job
        assert job is not None
        self._db(lambda s: q.abort_episode(s, job.episode_id, holder=self.holder, reason=reason))
        self.stats.aborted += 1
        arm.job = None
        arm.scene_key = None
        if offline:
            arm.online = False
            arm.failures += 1
            arm.next_probe = time.monotonic() + backoff_s(arm.failures)
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
        if ids:
            self._db(lambda s: [q.renew_lease(s, t, holder=self.holder, lease_s=self.lease_s)
                                for t in ids])

    def shutdown(self, *, reason: str = "orchestrator stopped") -> None:
        """Abort in-flight episodes (re-queued), stop arms, release actors."""
        for arm in self.arms.values():
            if arm.job is not None:
                if arm.actor is not None:
                    arm.actor.stop_episode.remote()
                self._abort(arm, reason)
            if arm.actor is not None:
                ray.kill(arm.actor)
        for pool in self.workers.values():
            for w in pool:
                ray.kill(w)


def _actor_died(e: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(e, RayActorError | ActorDiedError | ActorUnavailableError)
