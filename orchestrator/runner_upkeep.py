"""The runner's upkeep: policy worker pools, e-stop requests from the store, lease renewal,
the media sweep and the shutdown. A mixin of FleetRunner (orchestrator.runner), using its `_db` retrying
wrapper and its fields; no SQL here (orchestrator.store does the reads and writes).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from orchestrator.actors.policy import PolicyWorker, worker_start_error
from orchestrator.faults import AbortCause
from orchestrator.fleet_config import FleetConfig
from orchestrator.recording import campaign_dir
from orchestrator.runner_faults import RunStopped
from orchestrator.store import fleet as sf
from orchestrator.store import questions as qs
from orchestrator.store import queue as q
from orchestrator.store.arm_leases import release_arms, renew_arm_leases

if TYPE_CHECKING:
    from orchestrator.runner_arms import Arm

log = logging.getLogger("evalfleet.runner")
QUESTIONS_EVERY_S = 2.0  # re-evaluate declared questions for labels given in the dashboard


class UpkeepMixin:
    arms: dict[str, Arm]
    fleet: FleetConfig
    holder: str
    lease_s: float
    media_dir: str
    workers: dict[int, list[Any]]
    worker_meta: dict[int, dict[str, Any]]
    _last_estop_event: int
    _last_estop_check: float
    _last_renew: float
    _stopped: RunStopped | None
    campaign_ids: list[int] | None
    stats: Any  # orchestrator.runner.RunStats
    _last_questions: float = 0.0

    def _db(self, fn: Callable[[Any], Any]) -> Any: ...  # FleetRunner._db
    def _leased_until_now(self) -> None: ...
    def _lose_arm(self, arm: Arm) -> None: ...
    def _abort(self, arm: Arm, reason: str, cause: AbortCause) -> None: ...

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
            expected = self._db(lambda s: sf.policy_weights_checksum(s, trial.policy_id))
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

    def _check_worker(self, policy_id: int) -> None:
        """After a policy fault: drop workers that Ray could not restart (recreated lazily)."""
        pool = self.workers.get(policy_id, [])
        for w in pool:
            try:
                ray.get(w.ping.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - dead for good: forget the pool, rebuild on demand
                self.workers.pop(policy_id, None)
                return

    def _check_questions(self, campaign_id: int | None = None) -> None:
        """Re-evaluate the declared questions (orchestrator.store.questions) of one campaign
        right after its episode is written, or of every campaign this runner serves every
        QUESTIONS_EVERY_S (human labels arrive from the dashboard); only campaigns still
        running that declared questions are read. A decided question's pending trials become
        not needed before the next lease. An evaluation that fails is logged, never stops the
        fleet (the next one retries)."""
        if campaign_id is None:
            if time.monotonic() - self._last_questions < QUESTIONS_EVERY_S:
                return
            self._last_questions = time.monotonic()
        ids = [campaign_id] if campaign_id is not None else self.campaign_ids
        for cid in self._db(lambda s: qs.campaigns_to_evaluate(s, ids)):
            def evaluate(s: Any, cid: int = cid) -> Any:
                return qs.evaluate(s, cid)

            try:
                marked = self._db(evaluate).marked_not_needed
                self.stats.not_needed += len(marked)
            except RunStopped:
                raise
            except Exception:  # a bad evaluation must not stop the arms
                log.exception("campaign %s: its questions could not be evaluated", cid)

    def _check_estop_requests(self) -> None:
        """Act on `estop_requested` events (dashboard buttons, `fleet stop`): the bridges are
        e-stopped directly by whoever asked; this is the second path, through our actors
        (which hold the arms' CURVE keys when the dashboard does not)."""
        if time.monotonic() - self._last_estop_check < 0.2:
            return
        self._last_estop_check = time.monotonic()
        after = self._last_estop_event
        for event_id, payload in self._db(lambda s: sf.estop_requests_after(s, after)):
            self._last_estop_event = event_id
            target = payload.get("robot", "all")
            for arm in self.arms.values():
                if arm.actor is not None and target in ("all", arm.cfg.name):
                    arm.actor.estop.remote(f"estop_requested event {event_id}")

    def sweep_media(self) -> int:
        """Remove the media files of aborted episodes that their rows do not list, so that
        every file has its row.

        Such files come from episodes closed as aborted while their RobotActor still ran:
        a timed-out episode, or the in-flight episodes of an orchestrator that was killed
        (Ray tears its actors down a moment later; a lease expiry aborts their rows), and
        `*.partial` leftovers of writers that crashed. Only files at the names the recorder
        gives an aborted episode of this store are touched (its campaign dir and episode id),
        never those of running or recorded episodes, nor the files an aborted episode keeps
        (its media up to the abort), nor anything else in the dir; only this node's media dir
        is swept (RobotActors on other nodes write to theirs).
        """
        from orchestrator.recording import episode_id_of

        root = Path(self.media_dir)
        if not root.is_dir():
            return 0
        by_folder: dict[str, set[int]] = {}
        keep: set[str] = set()
        for eid, campaign, uris in self._db(sf.aborted_media):
            by_folder.setdefault(campaign_dir(campaign), set()).add(eid)
            keep.update(uris)
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
                if not entry.is_file() or episode_id_of(entry.name) not in ids:
                    continue
                if Path(entry.path).relative_to(root).as_posix() in keep:
                    continue
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
            arm.actor = None
        self.hosts.kill_all()
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
