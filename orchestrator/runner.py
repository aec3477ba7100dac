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
What crosses Ray is typed: ArmInfo and PrepareResult (orchestrator.arm_info), EpisodeSpec and
EpisodeResult (orchestrator.episode). Arm leasing, probing and the policy/arm space match live in
orchestrator.runner_arms; every read and write goes through orchestrator.store (no SQL here).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import ray

from orchestrator.actors.hosts import HostPool
from orchestrator.arm_info import PrepareResult
from orchestrator.episode import EpisodeResult, EpisodeSpec
from orchestrator.faults import AbortCause, ArmFate, disposition
from orchestrator.fleet_config import FleetConfig
from orchestrator.recording import campaign_dir
from orchestrator.runner_arms import MEDIA_PROBE_MAX_S, Arm, ArmsMixin, Job, Phase, actor_died
from orchestrator.runner_faults import (
    RunStopped,
    actor_error_reason,
    cause_of_actor_error,
    cause_of_fault,
    outage_paragraph,
)
from orchestrator.runner_upkeep import UpkeepMixin
from orchestrator.scheduler import ArmState, assign, backoff_s
from orchestrator.store import fleet as sf
from orchestrator.store import queue as q
from orchestrator.store.arm_leases import lease_arms
from orchestrator.store.db import DatabaseUnavailableError, Store
from orchestrator.store.states import EpisodeStatus, RobotStatus
from policies.base import Chunking
from robots.types import SceneSpec

log = logging.getLogger("evalfleet.runner")


@dataclass
class RunStats:
    recorded: int = 0
    aborted: int = 0
    steps: int = 0
    late_steps: int = 0
    resets_saved: int = 0
    not_needed: int = 0  # trials this run marked not needed (decided questions)
    done_by_category: dict[str, int] = field(default_factory=dict)
    first_action_s: float | None = None


def _media_dicts(media: Sequence[Any]) -> list[dict[str, Any]]:
    """An EpisodeResult's media files as the episodes.media JSON."""
    return [m.to_dict() if hasattr(m, "to_dict") else dict(m) for m in media]


class FleetRunner(ArmsMixin, UpkeepMixin):
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
        self.hosts = HostPool(media_dir, fleet.arms_per_process)
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
        self._policy_io: dict[int, Any] = {}
        self._reported: set[tuple[int, str]] = set()
        self._policies_seen: set[int] = set()

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
        self._leases_until = datetime.now(UTC) + timedelta(seconds=self.lease_s)

    # -- setup -------------------------------------------------------------------------------
    def start(self) -> None:
        rows = [sf.ArmRow(a.name, a.endpoint, a.station) for a in self.fleet.arms]

        def upsert(s):  # type: ignore[no-untyped-def]
            ids = sf.upsert_robots(s, rows)
            q.reclaim_expired_leases(s)
            return ids

        ids = self._db(upsert)
        self._last_estop_event = self._db(sf.last_event_id)
        self.sweep_media()
        for a in self.fleet.arms:
            self.arms[a.name] = Arm(cfg=a, robot_id=ids[a.name])
        self._acquire_arms()

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> None:
        self._check_estop_requests()
        self._acquire_arms()
        self._check_probes()
        self._report_offline()
        self._collect()
        self._check_operators()
        self._renew_leases()
        self._check_questions()  # decided questions: their trials are not leased (upkeep)
        self._schedule()

    def busy_arms(self) -> int:
        return sum(1 for a in self.arms.values() if a.job is not None)

    def open_trials(self) -> int:
        return int(self._db(lambda s: sf.has_open_trials(s, self.campaign_ids)))

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
        self._match_arms()  # raises NoArmMatches for a policy no arm of the fleet fits
        if self._first_hellos_pending():
            return
        states = [
            ArmState(
                name=a.cfg.name,
                station=a.cfg.station,
                capabilities=self._arm_tags(a),
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
            plan = assign(self._filter_by_match(cands), states)
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
                sf.mark_campaign_running(s, trial.campaign_id)
                out.append((arm, trial, eid, a.reuses_setup))
            return out

        self._sweep_due = False
        leased = self._db(lease)
        if leased:
            self._leased_until_now()
        if self._sweep_due:
            self.sweep_media()
        for arm, trial, eid, reused in leased:
            scene = SceneSpec.from_dict({**trial.scene, "seed": trial.scene_seed,
                                         "instruction": trial.instruction, "skill": trial.skill})
            arm.job = Job(trial=trial, episode_id=eid, phase=Phase.PREPARE, scene=scene)
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
                # a refusal of the arm keeps its code and message (runner_faults)
                reason = actor_error_reason(arm.cfg.name, job.phase, e)
                cause = cause_of_actor_error(e, during_reset=job.phase is Phase.PREPARE)
                if actor_died(e):
                    self._actor_gone(arm)
                self._abort(arm, reason, cause)
                continue
            if job.phase is Phase.PREPARE:
                self._after_prepare(arm, result)
            else:
                self._after_run(arm, result)

    def _timeout(self, t: q.LeasedTrial) -> float:
        return t.max_steps / t.control_hz * 2 + self.margin_s

    def _after_prepare(self, arm: Arm, result: PrepareResult) -> None:
        job = arm.job
        assert job is not None
        if result.ready:
            self._launch(arm)
            return
        job.prompt_event_id = self._db(lambda s: sf.ask_operator(
            s, robot_id=arm.robot_id, robot=arm.cfg.name, episode_id=job.episode_id,
            campaign_id=job.trial.campaign_id, trial_id=job.trial.trial_id,
            instructions=result.instructions))
        job.phase, job.ref = Phase.OPERATOR, None

    def _check_operators(self) -> None:
        waiting = [a for a in self.arms.values() if a.job and a.job.phase is Phase.OPERATOR]
        for arm in waiting:
            job = arm.job
            assert job is not None and job.prompt_event_id is not None and job.scene is not None
            rid, after = arm.robot_id, job.prompt_event_id
            if self._db(lambda s, rid=rid, after=after: sf.operator_confirmed(s, rid, after)):
                job.scene = replace(job.scene, operator_confirmed=True)
                job.phase = Phase.PREPARE
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
        spec = EpisodeSpec(
            episode_id=job.episode_id,
            campaign=job.trial.campaign_name,
            instruction=job.trial.instruction,
            max_steps=job.trial.max_steps,
            control_hz=job.trial.control_hz,
            needs_privileged=bool(meta.get("needs_privileged")),
            timeout_s=self._timeout(job.trial),
            record=self.record,
            # spread the arms over the control period (docs/architecture.md, "The control loop")
            phase=list(self.arms).index(arm.cfg.name) / len(self.arms),
            # the explicit conversions match_pair chose for this policy on this arm
            adapters=arm.matches.get(job.trial.policy_id, ()),
            # how the policy's action chunks execute (policies.base.Chunking)
            chunking=Chunking.from_dict(meta.get("chunking")),
        )
        job.phase, job.started = Phase.RUN, time.monotonic()
        job.ref = arm.actor.run_episode.remote(spec, worker)

    def _store_steps(self, s: Any, episode_id: int, result: EpisodeResult) -> int:
        """The episode's steps into the store (recorded and aborted episodes alike)."""
        return q.add_steps(s, episode_id, result.steps)

    def _after_run(self, arm: Arm, result: EpisodeResult) -> None:
        job = arm.job
        assert job is not None
        if result.status != EpisodeStatus.RECORDED:
            # fault: why, as an AbortCause (orchestrator.faults): the bridge failed or refused
            # (e-stop, another client) -> the arm is probed before more work; media -> held
            # until writable; only policy/scene/unknown use up one of the trial's attempts.
            # The steps and media up to the abort are kept with the aborted episode.
            cause = cause_of_fault(result.fault)
            self._abort(arm, result.reason or "aborted", cause, result)
            if cause is AbortCause.WORKER:
                self._check_worker(job.trial.policy_id)
            return
        checksum = self.worker_meta.get(job.trial.policy_id, {}).get("checksum")

        def done(s):  # type: ignore[no-untyped-def]
            n = self._store_steps(s, job.episode_id, result)
            q.complete_episode(
                s, job.episode_id, holder=self.holder, step_count=n,
                late_steps=result.late_steps, terminated_by=result.terminated_by or "",
                media=_media_dicts(result.media), sim_success=result.sim_success,
                policy_checksum=checksum, worker_instance=result.worker_instance,
            )
            return n

        n = self._db(done)
        self._check_questions(job.trial.campaign_id)
        if self.stats.first_action_s is None and n:
            self.stats.first_action_s = time.monotonic() - self._t0
        self.stats.recorded += 1
        self.stats.steps += n
        self.stats.late_steps += result.late_steps
        cat = job.trial.category + (f"/{job.trial.difficulty}" if job.trial.difficulty else "")
        self.stats.done_by_category[cat] = self.stats.done_by_category.get(cat, 0) + 1
        arm.job = None

    def _abort(self, arm: Arm, reason: str, cause: AbortCause,
               result: EpisodeResult | None = None) -> None:
        """Close the arm's episode as aborted with its cause (and the steps and media it has up
        to the abort); the trial is re-queued (counted towards giving it up only for the
        trial's own causes); an infrastructure fault takes the arm out: offline and probed
        with backoff, or held until media is writable."""
        job = arm.job
        assert job is not None
        checksum = self.worker_meta.get(job.trial.policy_id, {}).get("checksum")

        def abort(s):  # type: ignore[no-untyped-def]
            n = 0 if result is None else self._store_steps(s, job.episode_id, result)
            q.abort_episode(
                s, job.episode_id, holder=self.holder, reason=reason, cause=cause,
                step_count=n, late_steps=0 if result is None else result.late_steps,
                media=[] if result is None else _media_dicts(result.media),
                worker_instance=None if result is None else result.worker_instance,
                policy_checksum=checksum)

        self._db(abort)
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
        arm.error = reason[:300]
        self._set_robot(arm, RobotStatus.OFFLINE)
