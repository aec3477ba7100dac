"""The episode loop: policy chunks -> act -> record, at the protocol's control rate.

Plain Python over a BridgeClient and a policy callable, so it runs inside a RobotActor on a
Ray node and in tests without Ray. A command to the arm is never retried: a bridge error ends
the episode as aborted (the orchestrator re-queues the trial), after one attempt to hold.

**One round trip per step.** Only the very first step calls `observe`; every `act` reply
carries the observation taken right after the action was applied, which is the next step's
observation (and the frame the recorder stores for that step).

**Chunks.** Every policy reply is an action chunk (policies.base.ActionChunk; a single-step
policy's action is a chunk of length 1). orchestrator/chunks.ChunkSchedule decides, per step,
which row of which chunk is sent and when the next chunk is asked for: the query for the next
chunk leaves in the background (one thread per episode) while the current chunk executes
open-loop, early enough for the measured inference latency that it is there before the
current chunk has run `execute_steps`. When no chunk covers a step (the first step; a
single-step policy every step) the loop asks synchronously and waits: the step is late if the
command then leaves after its slot. Every step records its chunk id, index and age.

**Aborts keep what happened.** An e-stop, a bridge refusal or a policy error ends the episode
as aborted with every step applied so far and the video up to the abort (the recorder is
finished, not discarded); `EpisodeResult.status` says aborted, `fault` why. So does a stop
from the orchestrator (`EpisodeStop`: an operator's e-stop, a shutdown, a lost lease): a
stopped episode is never a recorded one, whether it stopped before its first step or after
its hundredth, so it is never counted and its trial is run again.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.actors.dataplane import PolicyError, PolicyUnavailable
from orchestrator.chunks import ChunkSchedule, StepAction
from orchestrator.episode_io import Querier, act_fn, applied_values, space_of
from orchestrator.faults import AbortCause, cause_of_refusal
from orchestrator.recording import BackgroundRecorder, MediaFile, MediaWriteError
from orchestrator.step_record import StepRecord, ee_columns
from orchestrator.store.states import EpisodeStatus, TerminationReason
from policies.base import SINGLE_STEP, ActionChunk, Chunking, PolicyInput
from robots.client import BridgeClient, BridgeCommandError, BridgeError
from robots.spaces import Adapter, apply_adapters
from robots.types import Action, Observation


@dataclass(frozen=True)
class EpisodeSpec:
    episode_id: int
    campaign: str
    instruction: str
    max_steps: int
    control_hz: float
    needs_privileged: bool
    timeout_s: float
    record: bool = True
    # Where in the control period this arm steps, as a fraction of it on a wall-clock grid
    # shared by the fleet (the runner spreads its arms over the period, so that their steps
    # do not all contend for the CPU at once); None: start right away.
    phase: float | None = None
    # how the policy's chunks execute (its metadata.chunking; RT-2: one query per step)
    chunking: Chunking = SINGLE_STEP
    # explicit conversions policy space -> arm space (robots.spaces.match_pair), in order
    adapters: tuple[Adapter, ...] = ()


@dataclass(frozen=True)
class PolicyReply:
    """One query's answer. `chunk` is what the loop executes; a reply built from an RT-2
    `action` alone gets it as a chunk of length 1."""

    action: Action | None
    tokens: str | None
    plan: str | None
    inference_s: float
    call_s: float  # whole round trip to the policy worker
    hold_reason: str | None = None
    chunk: ActionChunk | None = None

    def __post_init__(self) -> None:
        if self.chunk is None:
            if self.action is None:
                raise ValueError("policy reply: neither an action nor a chunk")
            object.__setattr__(self, "chunk", ActionChunk.of_action(self.action, 1.0))

    @property
    def the_chunk(self) -> ActionChunk:
        assert self.chunk is not None
        return self.chunk


@dataclass(frozen=True)
class EpisodeResult:
    status: EpisodeStatus
    reason: str | None = None
    terminated_by: TerminationReason | None = None
    steps: tuple[StepRecord, ...] = ()
    media: tuple[MediaFile, ...] = ()
    sim_success: bool | None = None
    late_steps: int = 0
    fault: str | None = None  # an orchestrator.faults.AbortCause value: why it aborted
    worker_instance: str | None = None  # the policy worker instance that answered (its id)
    # per-step timing in ms (benchmarks; not stored): wake (slot -> loop awake), step (slot ->
    # command acknowledged), inference (model, when the step waited for it), policy (time the
    # step waited for a chunk), observe (first step only), act
    timing: Mapping[str, tuple[float, ...]] = field(default_factory=dict)


PolicyCall = Callable[[PolicyInput], PolicyReply]


@dataclass
class _ChunkInfo:
    reply: PolicyReply
    obs_wall_ns: int  # of the observation it was computed from
    executed: bool = False  # a step has executed one of its rows


class EpisodeStop:
    """Whether, and why, the orchestrator stopped the running episode. Set from another
    thread (the RobotActor's `estop` / `stop_episode`); the loop reads it before every step
    and while it waits for a chunk."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.cause = AbortCause.SHUTDOWN
        self.reason = "stopped by the orchestrator"

    def set(self, cause: AbortCause = AbortCause.SHUTDOWN,
            reason: str = "stopped by the orchestrator") -> None:
        self.cause, self.reason = cause, reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()
        self.cause, self.reason = AbortCause.SHUTDOWN, "stopped by the orchestrator"


def run_episode(
    client: BridgeClient,
    policy: PolicyCall,
    spec: EpisodeSpec,
    *,
    arm: str,
    media_dir: Path,
    stop: EpisodeStop | None = None,
) -> EpisodeResult:
    """Drive one episode on an arm whose scene is already reset. Never raises for arm or
    policy faults: they come back as an aborted result with the reason, the steps applied
    so far and the video up to the abort. A stop comes back the same way, with the stop's
    cause."""
    return _Episode(client, policy, spec, arm, media_dir, stop or EpisodeStop()).run()


class _Episode:
    def __init__(self, client: BridgeClient, policy: PolicyCall, spec: EpisodeSpec, arm: str,
                 media_dir: Path, stop: EpisodeStop) -> None:
        self.client, self.policy, self.spec, self.arm, self.stop = client, policy, spec, arm, stop
        self.period = 1.0 / spec.control_hz
        self.recorder = (
            BackgroundRecorder(media_dir, spec.campaign, spec.episode_id, spec.control_hz)
            if spec.record else None
        )
        self.steps: list[StepRecord] = []
        self.timing: dict[str, list[float]] = {
            k: [] for k in ("wake", "observe", "policy", "inference", "act", "step")}
        self.late = 0
        self.sched = ChunkSchedule(spec.chunking, self.period)
        self.chunks: dict[int, _ChunkInfo] = {}  # chunk id -> reply, source observation
        self.obs_wall: dict[int, int] = {}  # step -> its observation's wall ns (in flight)
        self.querier: Querier | None = None
        self.label, self.state_spec = space_of(client)
        self.act = act_fn(client)

    # --- policy queries ---------------------------------------------------------------------

    def _input(self, obs: Observation) -> PolicyInput:
        privileged = self.client.privileged() if self.spec.needs_privileged else None
        return PolicyInput(frames=obs.frames, proprio=tuple(obs.proprio),
                           instruction=self.spec.instruction, privileged=privileged, arm=self.arm,
                           state_names=self.state_spec.names if self.state_spec else ())

    def _landed(self, step: int, reply: PolicyReply, latency_s: float, now_step: int) -> None:
        c = reply.the_chunk
        if c.horizon > 1 and abs(c.control_hz - self.spec.control_hz) > 1e-6 * c.control_hz:
            # rows are consecutive control steps: at another rate they would mean other motions
            raise PolicyError(f"the policy's chunks are planned at {c.control_hz:g} Hz; this "
                              f"episode runs the arm at {self.spec.control_hz:g} Hz (the "
                              "protocol's control rate): set one to the other")
        self.sched.note_latency(latency_s)
        cid = self.sched.arrived(reply.the_chunk.at_step(step), now_step)
        self.chunks[cid] = _ChunkInfo(reply, self.obs_wall.pop(step, 0))
        # keep the last 64 chunks: ids are consecutive, so one falls out per arrival
        self.chunks.pop(cid - 65, None)

    def _poll(self, t: int, *, block: bool) -> float:
        """Take the background query's reply if it is there (or wait for it); returns the
        seconds waited."""
        q = self.querier
        if q is None or not self.sched.in_flight:
            return 0.0
        t0 = time.perf_counter()
        while True:
            try:
                step, reply, sent, done = q.replies.get(timeout=0.05 if block else 0)
                break
            except queue.Empty:
                if not block:
                    return 0.0
                if self.stop.is_set():
                    raise _Stopped
        if isinstance(reply, BaseException):
            self.sched.failed()
            raise reply
        self._landed(step, reply, done - sent, t)
        return time.perf_counter() - t0

    def _next_action(self, t: int, obs: Observation) -> tuple[StepAction, float, float]:
        """The step's action, the seconds it waited for a chunk, and the inference seconds of
        a chunk it waited for."""
        waited = self._poll(t, block=False)
        infer = 0.0
        a = self.sched.action(t)
        if self.sched.wants_request(t):
            inp = self._input(obs)
            self.obs_wall[t] = obs.robot_wall_ns
            self.sched.requested(t)
            if a is None:  # nothing to execute meanwhile: ask and wait in this thread
                t0 = time.perf_counter()
                try:
                    reply = self.policy(inp)
                except BaseException:
                    self.sched.failed()
                    raise
                dt = time.perf_counter() - t0
                self._landed(t, reply, dt, t)
                waited += dt
                infer = reply.inference_s
            else:
                if self.querier is None:
                    self.querier = Querier(self.policy, self.arm)
                self.querier.send(t, inp)
        if a is None:
            a = self.sched.action(t)
        if a is None:  # the old chunk ran out before the next one came: wait for it
            waited += self._poll(t, block=True)
            a = self.sched.action(t)
            if a is not None:
                infer = self.chunks[a.chunk_id].reply.inference_s
        if a is None:
            raise RuntimeError(f"step {t}: no policy chunk covers this step (internal error)")
        return a, waited, infer

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> EpisodeResult:
        spec, client = self.spec, self.client
        terminated_by = TerminationReason.MAX_STEPS
        sim_success: bool | None = None
        deadline = time.monotonic() + spec.timeout_s
        try:
            try:
                next_slot = _first_slot(self.period, spec.phase)
                obs: Observation | None = None
                for idx in range(spec.max_steps):
                    if self.stop.is_set():
                        raise _Stopped
                    if time.monotonic() > deadline:
                        terminated_by = TerminationReason.TIMEOUT
                        break
                    _sleep_until(next_slot)
                    slot_start = next_slot
                    t0 = time.perf_counter()
                    if obs is None:  # the only observe of the episode
                        obs = client.observe()
                        self.timing["observe"].append((time.perf_counter() - t0) * 1e3)
                    result, terminate = self._step(idx, obs, slot_start, t0)
                    obs = result.observation
                    sim_success = obs.sim_success
                    if terminate:
                        terminated_by = TerminationReason.TERMINATE
                        break
                    if sim_success:
                        terminated_by = TerminationReason.SUCCESS
                        break
                    next_slot += self.period
                    if next_slot < time.perf_counter() - self.period:  # behind > a period
                        next_slot = _first_slot(self.period, spec.phase)
            except _Stopped:
                _try_hold(client)
                with contextlib.suppress(Exception):  # the arm may be e-stopped: best effort
                    client.end_episode()
                return self._aborted(f"arm {self.arm}: {self.stop.reason} after "
                                     f"{len(self.steps)} steps", self.stop.cause)
            client.end_episode()
            media = self.recorder.finish() if self.recorder is not None else ()
            return EpisodeResult(
                status=EpisodeStatus.RECORDED, terminated_by=terminated_by,
                steps=tuple(self.steps), media=media, sim_success=sim_success,
                late_steps=self.late, timing=self._timing(),
            )
        except BridgeCommandError as e:  # the bridge refused a command: the arm itself is fine
            _try_hold(client)
            return self._aborted(f"arm {self.arm}: {e}",
                                 cause_of_refusal(e.code, during_reset=False))
        except BridgeError as e:
            _try_hold(client)
            return self._aborted(f"arm {self.arm}: {e}", AbortCause.BRIDGE)
        except MediaWriteError as e:  # the episode ran, its video could not be written
            if self.recorder is not None:
                self.recorder.discard()
                self.recorder = None
            return self._aborted(f"arm {self.arm}: {e}"[:500], AbortCause.MEDIA)
        except Exception as e:  # noqa: BLE001 - policy worker died, policy raised, encoder failed
            _try_hold(client)
            ray_error = e.__class__.__module__.startswith("ray")
            if isinstance(e, PolicyError):
                fault = AbortCause.POLICY  # the policy itself raised on this step
            elif ray_error or isinstance(e, PolicyUnavailable):
                fault = AbortCause.WORKER  # the worker died, restarted or did not answer
            else:
                fault = AbortCause.UNKNOWN
            return self._aborted(f"arm {self.arm}: {e.__class__.__name__}: {e}"[:500], fault)
        finally:
            if self.querier is not None:
                self.querier.close(timeout_s=max(30.0, self.spec.timeout_s))

    def _step(self, idx: int, obs: Observation, slot_start: float,
              t0: float) -> tuple[Any, bool]:
        a, waited_s, infer_s = self._next_action(idx, obs)
        info = self.chunks[a.chunk_id]
        values = a.values
        if self.spec.adapters:
            if self.state_spec is None:
                raise RuntimeError(f"arm {self.arm}: adapters {list(self.spec.adapters)} need "
                                   "the arm's state spec (hello capabilities)")
            values = apply_adapters(self.spec.adapters, values, state=self.state_spec,
                                    state_values=obs.proprio)
        if values and not math.isfinite(values[-1]):  # Action.hold(): keep the gripper
            g = self._gripper_state(obs)
            if g is not None:
                values = (*values[:-1], g)
        t_ready = time.perf_counter()
        sent_wall = time.time_ns() + self.client.clock_offset_ns
        result = self.act(values, a.terminate)
        t_act = time.perf_counter()
        is_late = t_ready > slot_start + self.period  # command left after this step's deadline
        self.late += is_late
        tm = self.timing
        tm["wake"].append((t0 - slot_start) * 1e3)
        tm["policy"].append(waited_s * 1e3)
        tm["inference"].append(infer_s * 1e3)
        tm["act"].append((t_act - t_ready) * 1e3)
        tm["step"].append((t_act - slot_start) * 1e3)
        if self.recorder is not None:
            self.recorder.add(obs.frames)
        applied = applied_values(result.applied)
        reply = info.reply
        first = not info.executed
        info.executed = True
        dx, dy, dz, droll, dpitch, dyaw, gripper = ee_columns(self.label, applied)
        self.steps.append(StepRecord(
            idx=idx,
            terminate=a.terminate,
            action=applied,
            action_space=self.label,
            dx=dx, dy=dy, dz=dz, droll=droll, dpitch=dpitch, dyaw=dyaw, gripper=gripper,
            tokens=reply.tokens if first else None,  # on the chunk's first executed step
            proprio=tuple(map(float, obs.proprio)),
            obs_seq=obs.seq,
            obs_monotonic_ns=obs.robot_monotonic_ns,
            obs_wall_ns=obs.robot_wall_ns,
            command_wall_ns=sent_wall,
            obs_age_ms=max(0.0, (sent_wall - obs.robot_wall_ns) / 1e6),
            inference_ms=reply.inference_s * 1e3,
            orchestration_ms=max(0.0, ((t_ready - t0) - infer_s) * 1e3),
            command_ms=(t_act - t_ready) * 1e3,
            late=bool(is_late),
            clipped=any(result.clipped),
            plan=reply.plan if first else None,
            chunk_id=a.chunk_id,
            chunk_index=a.index,
            chunk_age_ms=max(0.0, (sent_wall - info.obs_wall_ns) / 1e6),
        ))
        return result, a.terminate

    def _gripper_state(self, obs: Observation) -> float | None:
        """The gripper's state from the observation: the state field named `gripper`, or
        the last value of RT-2's ee state; None if the arm reports no gripper (the NaN then
        reaches the bridge, which refuses it)."""
        names = self.state_spec.names if self.state_spec is not None else None
        if names is not None and "gripper" in names and len(obs.proprio) == len(names):
            return float(obs.proprio[names.index("gripper")])
        if names is None and obs.proprio:
            return float(obs.proprio[-1])
        return None

    def _aborted(self, reason: str, fault: AbortCause) -> EpisodeResult:
        """An aborted episode keeps its steps and its video up to the abort."""
        media: tuple[MediaFile, ...] = ()
        if self.recorder is not None:
            try:
                media = self.recorder.finish()  # every camera's frames up to the abort
            except Exception:  # noqa: BLE001 - the abort's own reason is what matters
                media = ()
        return EpisodeResult(status=EpisodeStatus.ABORTED, reason=reason, steps=tuple(self.steps),
                             media=media, late_steps=self.late, fault=fault.value,
                             timing=self._timing())

    def _timing(self) -> dict[str, tuple[float, ...]]:
        return {k: tuple(v) for k, v in self.timing.items()}


class _Stopped(Exception):
    """The orchestrator stopped the episode while the loop waited for a chunk."""


def _try_hold(client: BridgeClient) -> None:
    """One attempt to hold the arm after a fault; the bridge's watchdog holds it anyway."""
    with contextlib.suppress(Exception):  # best effort; the watchdog is the guarantee
        client.hold()


def slot_delay(period: float, phase: float | None, wall: float) -> float:
    """Seconds from wall-clock time `wall` to the next slot on the fleet's grid at `phase`
    (pure: 0 <= delay < period; 0 when the arm has no phase)."""
    if phase is None:
        return 0.0
    offset = (phase % 1.0) * period
    slot_wall = math.ceil((wall - offset) / period) * period + offset
    return slot_wall - wall


def _first_slot(period: float, phase: float | None) -> float:
    """The next slot (perf_counter time) on the fleet's wall-clock grid at `phase`."""
    return time.perf_counter() + slot_delay(period, phase, time.time())


def _sleep_until(t: float) -> None:
    # one sleep per step (a wake-up costs CPU); the loop re-checks in case it woke early
    while (dt := t - time.perf_counter()) > 0:
        time.sleep(dt)


_BackgroundRecorder = BackgroundRecorder  # the name tests/integration/test_media_errors.py uses
