"""The runner's arms: leasing them in the store, probing them (hello with backoff, heartbeats,
e-stop latches), holding out an arm whose media folder is unwritable, and matching each arm's
declared spaces against the campaign policies before any of their trials is leased.

A mixin of FleetRunner (orchestrator.runner): it uses the runner's `_db` retrying wrapper and
its fields; it holds no SQL (orchestrator.store.fleet does the writes).

Space matching (robots.spaces.match_pair, docs/architecture.md): once an arm answered hello,
every policy with pending trials is matched against it. A pair that fits (with the explicit
adapters match_pair returns) makes the arm carry the capability tag `policy:<id>`, and every
candidate trial needs the tag of its policy, so the scheduler's capability filter leases a
policy's trials only to arms it matches. A pair that does not fit is logged once, in one line
naming both sides, and audited (space_mismatch). Once every arm of the fleet has declared its
spaces, a policy that matches none of them stops the run before any of its trials is leased
(NoArmMatches, with those lines).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import ray

from orchestrator.actors.hosts import HostPool
from orchestrator.arm_info import ArmInfo
from orchestrator.faults import AbortCause
from orchestrator.fleet_config import ArmConfig
from orchestrator.liveness import HEARTBEAT_S
from orchestrator.runner_faults import NoArmMatches, error_line
from orchestrator.scheduler import TrialCandidate, backoff_s
from orchestrator.store import fleet as sf
from orchestrator.store import queue as q
from orchestrator.store.campaigns import log_event
from orchestrator.store.states import EventKind, RobotStatus
from policies.registry import PolicyConfigError, policy_io
from robots.spaces import Adapter, PolicyIO, SpaceMismatch, match_pair
from robots.types import SceneSpec

log = logging.getLogger("evalfleet.runner")

ESTOP_PROBE_S = 1.0  # how often an e-stopped arm is asked whether it was re-armed
MEDIA_PROBE_MAX_S = 5.0  # the longest wait between checks of an unwritable media folder
OFFLINE_REPORT_S = 30.0  # while no arm is online: how often the run says why (one line)


def policy_tag(policy_id: int) -> str:
    """The capability an arm carries for each policy it matches (scheduler filter)."""
    return f"policy:{policy_id}"


class Phase(StrEnum):
    """Where a leased trial is on its arm (the runner's own state, not stored)."""

    PREPARE = "prepare"  # the scene reset is in flight
    OPERATOR = "operator"  # the arm asked an operator to set the scene up; waiting
    RUN = "run"  # the episode runs


@dataclass
class Job:
    trial: q.LeasedTrial
    episode_id: int
    phase: Phase
    ref: Any = None
    started: float = field(default_factory=time.monotonic)
    prompt_event_id: int | None = None
    scene: SceneSpec | None = None  # what the arm is asked to set up


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
    info: ArmInfo | None = None  # its last hello
    error: str | None = None  # why it is offline
    job: Job | None = None
    held: bool = False  # leased to this runner in the store (only then probed and scheduled)
    media_folder: str | None = None  # set while its media folder is unwritable: held out
    # policy id -> the adapters that make it drive this arm (only policies it matches)
    matches: dict[int, tuple[Adapter, ...]] = field(default_factory=dict)


def actor_died(e: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(e, RayActorError | ActorDiedError | ActorUnavailableError)


class ArmsMixin:
    """Arm leasing, probing and space matching for FleetRunner."""

    arms: dict[str, Arm]
    hosts: HostPool
    holder: str
    lease_s: float
    media_dir: str
    waiting: dict[str, str]
    _next_arm_try: float
    # policy id -> (name, PolicyIO) or the one-line reason its config has no io
    _policy_io: dict[int, tuple[str, PolicyIO] | str]
    _reported: set[tuple[int, str]]
    _policies_seen: set[int]  # the policies of the last tick's pending trials (matched)
    _offline_since: float | None = None  # since when no held arm is online (and one failed)
    _next_offline_report: float = 0.0

    def _db(self, fn: Any) -> Any: ...  # FleetRunner._db
    def _leased_until_now(self) -> None: ...
    def _abort(self, arm: Arm, reason: str, cause: AbortCause) -> None: ...

    # -- leasing ---------------------------------------------------------------------------
    def _acquire_arms(self) -> None:
        """Lease the arms this runner does not hold yet (free, released or expired ones);
        say once per holder which arms another orchestrator holds and that we wait."""
        free = [a for a in self.arms.values() if not a.held]
        if not free or time.monotonic() < self._next_arm_try:
            return
        self._next_arm_try = time.monotonic() + min(1.0, self.lease_s / 4)
        ids = [a.robot_id for a in free]
        res = self._db(lambda s: sf.take_arms(s, ids, holder=self.holder, lease_s=self.lease_s))
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
            self.hosts.release(arm.actor)
        arm.actor, arm.probe_ref = None, None
        arm.held, arm.online = False, False

    # -- probing ---------------------------------------------------------------------------
    def _new_actor(self, arm: Arm) -> Any:
        """The arm's handle on a RobotHost of its station (orchestrator/actors/hosts.py)."""
        return self.hosts.handle(arm.cfg.model_dump(mode="json"), arm.cfg.station)

    def _actor_gone(self, arm: Arm) -> None:
        """The arm's host died: forget it (a new one is started at the next probe)."""
        if arm.actor is not None:
            self.hosts.forget(arm.actor)
        arm.actor = None

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
            self._hello_answered(arm)

    def _hello_answered(self, arm: Arm) -> None:
        try:
            info = ray.get(arm.probe_ref, timeout=1)
            if not isinstance(info, ArmInfo):  # an answer to an earlier media check
                raise TypeError(f"unexpected probe answer {type(info).__name__}")
            arm.info, arm.error = info, None
            if info.estopped:
                # Reachable but latched: every reset would be refused and burn a trial's
                # attempt. Keep it out of scheduling; look again soon for the re-arm.
                arm.online = False
                arm.failures += 1
                arm.next_probe = time.monotonic() + min(ESTOP_PROBE_S, backoff_s(arm.failures))
                status = RobotStatus.ESTOPPED
            else:
                arm.online, arm.failures = True, 0
                arm.next_probe = time.monotonic() + HEARTBEAT_S
                status = RobotStatus.ONLINE
        except Exception as e:  # noqa: BLE001 - bridge down: offline, probe with backoff
            arm.online = False
            arm.failures += 1
            arm.next_probe = time.monotonic() + backoff_s(arm.failures)
            # the client's own one-line message (a refused hello says which rule), never the
            # Ray traceback header around it
            error = error_line(e)
            if error != arm.error:
                log.warning("%s offline: %s", arm.cfg.name, error)
            status, arm.error = RobotStatus.OFFLINE, error
            if actor_died(e):
                self._actor_gone(arm)
        arm.probe_ref = None
        self._set_robot(arm, status)

    def offline_lines(self) -> list[str]:
        """While no arm this runner holds is online: one line per held arm that failed its
        hello, naming the arm and its error (empty when an arm is online or none failed)."""
        held = [a for a in self.arms.values() if a.held]
        if any(a.online for a in held):
            return []
        return [f"{a.cfg.name}: {a.error}" for a in held if a.error]

    def _report_offline(self) -> None:
        """No arm online: say so every OFFLINE_REPORT_S, one line naming each arm and its error
        (a run against arms that never answer a good hello is not silent)."""
        lines = self.offline_lines()
        now = time.monotonic()
        if not lines:
            self._offline_since = None
            return
        if self._offline_since is None:
            self._offline_since = now
            self._next_offline_report = now
        if now >= self._next_offline_report:
            self._next_offline_report = now + OFFLINE_REPORT_S
            log.warning("no arm online (for %.0f s): %s", now - self._offline_since,
                        "; ".join(lines))

    def _media_checked(self, arm: Arm) -> None:
        """The answer of an arm held out for an unwritable media folder: writable again, it is
        probed right away; not yet, it waits (backoff up to MEDIA_PROBE_MAX_S)."""
        try:
            problem = ray.get(arm.probe_ref, timeout=1)
        except Exception as e:  # noqa: BLE001 - the actor itself failed: check again later
            problem = f"media check on {arm.cfg.name} failed: {e.__class__.__name__}"
            if actor_died(e):
                self._actor_gone(arm)
        arm.probe_ref = None
        if isinstance(problem, ArmInfo):  # a hello sent before the abort: check media now
            arm.next_probe = 0.0
            return
        if problem is None:
            log.warning("%s: media folder %s is writable again", arm.cfg.name, arm.media_folder)
            arm.media_folder, arm.failures, arm.next_probe = None, 0, 0.0
            return
        arm.failures += 1
        arm.next_probe = time.monotonic() + min(MEDIA_PROBE_MAX_S, backoff_s(arm.failures))
        arm.error = str(problem)[:300]
        self._set_robot(arm, RobotStatus.OFFLINE)

    def _heartbeat(self, arm: Arm) -> None:
        """Every HEARTBEAT_S for an online arm (the Fleet page shows an arm stale when its
        heartbeat is older than a few of these, orchestrator.liveness): an idle arm is probed
        again, so a dead bridge turns offline; an arm with a job is in contact through it (a dead
        bridge aborts the episode and turns the arm offline), so only its heartbeat is renewed."""
        if arm.job is None:
            self._probe(arm)
            return
        arm.next_probe = time.monotonic() + HEARTBEAT_S
        self._db(lambda s: sf.touch_heartbeat(s, arm.robot_id))

    def _set_robot(self, arm: Arm, status: RobotStatus) -> None:
        caps = arm.info.to_json() if arm.info is not None else {}
        if arm.error:
            caps["error"] = arm.error
        caps["tags"] = list(arm.cfg.capabilities)
        self._db(lambda s: sf.set_robot_status(s, arm.robot_id, status, caps, arm.error))

    # -- space matching --------------------------------------------------------------------
    def _policy_ios(self, policy_ids: set[int]) -> None:
        """Read (once) what each policy emits and reads, from its registered config."""
        new = sorted(policy_ids - set(self._policy_io))
        if not new:
            return
        configs = self._db(lambda s: sf.policy_configs(s, new))
        for pid in new:
            cfg = configs.get(pid)
            if cfg is None:
                self._policy_io[pid] = f"policy #{pid} is not in the store"
                continue
            try:
                self._policy_io[pid] = (cfg["name"], policy_io(cfg))
            except (PolicyConfigError, ValueError) as e:
                self._policy_io[pid] = str(e).splitlines()[0]

    def _match_arms(self) -> None:
        """Match every policy with pending trials against every arm that answered hello;
        report each mismatched pair once; stop the run for a policy no arm of the fleet fits."""
        policy_ids = set(self._policies_seen)
        self._policy_ios(policy_ids)
        for pid in sorted(policy_ids):
            entry = self._policy_io[pid]
            if isinstance(entry, str):
                raise NoArmMatches(f"cannot match policy #{pid} against the arms: {entry}")
            name, io = entry
            lines = []
            for arm in self.arms.values():
                if arm.info is None:
                    continue
                try:
                    arm.matches[pid] = match_pair(name, io, arm.cfg.name, arm.info.spaces)
                    continue
                except SpaceMismatch as e:
                    arm.matches.pop(pid, None)
                    lines.append(str(e))
                    if (pid, arm.cfg.name) not in self._reported:
                        self._reported.add((pid, arm.cfg.name))
                        log.warning("%s", e)
                        self._db(lambda s, e=e, arm=arm, name=name: log_event(
                            s, EventKind.SPACE_MISMATCH, robot_id=arm.robot_id,
                            policy=name, detail=str(e)))
            known = all(a.info is not None for a in self.arms.values())
            if known and not any(pid in a.matches for a in self.arms.values()):
                raise NoArmMatches(
                    f"policy {name} matches no arm of the fleet, so none of its trials can run:"
                    "\n" + "\n".join(lines))

    def _filter_by_match(self, cands: list[TrialCandidate]) -> list[TrialCandidate]:
        """Each candidate needs its policy's tag (see the module docstring); a policy seen
        for the first time is matched on the next tick (no arm has its tag before)."""
        self._policies_seen = {c.policy_id for c in cands}
        return [replace(c, station_needs=(*c.station_needs, policy_tag(c.policy_id)))
                for c in cands]

    def _first_hellos_pending(self) -> bool:
        """Whether an arm this runner holds has not answered (nor failed) its first hello:
        nothing is leased until then, so that a policy no arm matches stops the run before
        any trial of the campaign is leased."""
        return any(a.held and a.info is None and a.failures == 0 for a in self.arms.values())

    def _arm_tags(self, arm: Arm) -> frozenset[str]:
        return frozenset(arm.cfg.capabilities) | {policy_tag(p) for p in arm.matches}
