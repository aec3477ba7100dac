"""The episode loop: observe -> policy -> act -> record, at the protocol's control rate.

Plain Python over a BridgeClient and a policy callable, so it runs inside a RobotActor on a
Ray node and in tests without Ray. A command to the arm is never retried: a bridge error ends
the episode as aborted (the orchestrator re-queues the trial), after one attempt to hold.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.actors.dataplane import PolicyError, PolicyUnavailable
from orchestrator.faults import AbortCause, cause_of_refusal
from orchestrator.recording import MediaWriteError
from policies.base import PolicyInput
from robots.client import BridgeClient, BridgeCommandError, BridgeError
from robots.types import Action


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


@dataclass(frozen=True)
class PolicyReply:
    action: Action
    tokens: str | None
    plan: str | None
    inference_s: float
    call_s: float  # whole round trip to the policy worker
    hold_reason: str | None = None


@dataclass
class EpisodeResult:
    status: str  # recorded | aborted
    reason: str | None = None
    terminated_by: str | None = None  # terminate | success | max_steps | timeout | stopped
    steps: list[dict[str, Any]] = field(default_factory=list)
    media: list[dict[str, Any]] = field(default_factory=list)
    sim_success: bool | None = None
    late_steps: int = 0
    fault: str | None = None  # an orchestrator.faults.AbortCause value: why it aborted
    # per-step timing in ms (benchmarks; not stored): wake (slot -> loop awake), step (slot ->
    # command acknowledged), inference (model), policy (whole policy call), observe, act
    timing: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "terminated_by": self.terminated_by,
            "steps": self.steps,
            "media": self.media,
            "sim_success": self.sim_success,
            "late_steps": self.late_steps,
            "fault": self.fault,
            "timing": self.timing,
        }


PolicyCall = Callable[[PolicyInput], PolicyReply]


class _BackgroundRecorder:
    """Encodes frames on a thread so video encoding never delays a control step."""

    def __init__(self, media_dir: Path, campaign: str, episode_id: int, fps: float) -> None:
        from orchestrator.recording import EpisodeRecorder

        self.rec = EpisodeRecorder(media_dir, campaign, episode_id, fps)
        self.q: queue.Queue[dict[str, np.ndarray] | None] = queue.Queue(maxsize=256)
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, name=f"rec-{episode_id}", daemon=True)
        self.t.start()

    def _run(self) -> None:
        while (frames := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.rec.add(frames)
                except BaseException as e:  # noqa: BLE001 - surfaced by finish()
                    self.error = e

    def add(self, frames: dict[str, np.ndarray]) -> None:
        self.q.put({k: np.array(v, copy=True) for k, v in frames.items()}, timeout=5)

    def finish(self) -> list[dict[str, Any]]:
        self.q.put(None, timeout=5)
        self.t.join(timeout=60)
        if self.error is not None:
            self.rec.discard()
            if isinstance(self.error, MediaWriteError):
                raise self.error  # names the path; an infrastructure fault, not the trial's
            raise RuntimeError(f"video encoding failed: {self.error}") from self.error
        return [m.to_dict() for m in self.rec.finish()]

    def discard(self) -> None:
        try:
            self.q.put(None, timeout=1)
        except queue.Full:
            pass
        self.t.join(timeout=10)
        self.rec.discard()


def run_episode(
    client: BridgeClient,
    policy: PolicyCall,
    spec: EpisodeSpec,
    *,
    arm: str,
    media_dir: Path,
    stop: threading.Event | None = None,
) -> EpisodeResult:
    """Drive one episode on an arm whose scene is already reset. Never raises for arm or
    policy faults: they come back as an aborted result with the reason."""
    stop = stop or threading.Event()
    period = 1.0 / spec.control_hz
    recorder = (
        _BackgroundRecorder(media_dir, spec.campaign, spec.episode_id, spec.control_hz)
        if spec.record
        else None
    )
    steps: list[dict[str, Any]] = []
    late = 0
    terminated_by = "max_steps"
    sim_success: bool | None = None
    deadline = time.monotonic() + spec.timeout_s
    timing: dict[str, list[float]] = {
        k: [] for k in ("wake", "observe", "policy", "inference", "act", "step")
    }
    try:
        next_slot = _first_slot(period, spec.phase)
        for idx in range(spec.max_steps):
            if stop.is_set():
                terminated_by = "stopped"
                break
            if time.monotonic() > deadline:
                terminated_by = "timeout"
                break
            _sleep_until(next_slot)
            slot_start = next_slot
            t0 = time.perf_counter()
            obs = client.observe()
            t_obs = time.perf_counter()
            privileged = client.privileged() if spec.needs_privileged else None
            reply = policy(
                PolicyInput(
                    frames=obs.frames,
                    proprio=tuple(obs.proprio),
                    instruction=spec.instruction,
                    privileged=privileged,
                    arm=arm,
                )
            )
            t_pol = time.perf_counter()
            action = reply.action
            if not math.isfinite(action.gripper) and obs.proprio:  # Action.hold(): keep gripper
                action = replace(action, gripper=float(obs.proprio[-1]))
            sent_wall = time.time_ns() + client.clock_offset_ns
            result = client.act(action)
            t_act = time.perf_counter()
            timing["wake"].append((t0 - slot_start) * 1e3)
            timing["observe"].append((t_obs - t0) * 1e3)
            timing["policy"].append((t_pol - t_obs) * 1e3)
            timing["inference"].append(reply.inference_s * 1e3)
            timing["act"].append((t_act - t_pol) * 1e3)
            timing["step"].append((t_act - slot_start) * 1e3)
            is_late = t_pol > slot_start + period  # command left after this step's deadline
            late += is_late
            if recorder is not None:
                recorder.add(obs.frames)
            a = result.applied
            steps.append(
                {
                    "idx": idx,
                    "terminate": bool(reply.action.terminate),
                    "dx": a.dx, "dy": a.dy, "dz": a.dz,
                    "droll": a.droll, "dpitch": a.dpitch, "dyaw": a.dyaw,
                    "gripper": a.gripper,
                    "tokens": reply.tokens,
                    "proprio": [float(v) for v in obs.proprio],
                    "obs_seq": obs.seq,
                    "obs_monotonic_ns": obs.robot_monotonic_ns,
                    "obs_wall_ns": obs.robot_wall_ns,
                    "command_wall_ns": sent_wall,
                    "obs_age_ms": max(0.0, (sent_wall - obs.robot_wall_ns) / 1e6),
                    "inference_ms": reply.inference_s * 1e3,
                    "orchestration_ms": max(
                        0.0, ((t_pol - t0) - reply.inference_s - (t_obs - t0)) * 1e3
                    ),
                    "command_ms": (t_act - t_pol) * 1e3,
                    "late": bool(is_late),
                    "clipped": any(result.clipped),
                    "plan": reply.plan,
                }
            )
            sim_success = result.observation.sim_success
            if reply.action.terminate:
                terminated_by = "terminate"
                break
            if sim_success:
                terminated_by = "success"
                break
            next_slot += period
            if next_slot < time.perf_counter() - period:  # fell behind by > a period: resync
                next_slot = _first_slot(period, spec.phase)
        client.end_episode()
        media = recorder.finish() if recorder is not None else []
        return EpisodeResult(
            status="recorded",
            terminated_by=terminated_by,
            steps=steps,
            media=media,
            sim_success=sim_success,
            late_steps=late,
            timing=timing,
        )
    except BridgeCommandError as e:  # the bridge refused a command: the arm itself is fine
        _try_hold(client)
        if recorder is not None:
            recorder.discard()
        return EpisodeResult(
            status="aborted", reason=f"arm {arm}: {e}", steps=steps,
            fault=cause_of_refusal(e.code, during_reset=False).value,
        )
    except BridgeError as e:
        _try_hold(client)
        if recorder is not None:
            recorder.discard()
        return EpisodeResult(status="aborted", reason=f"arm {arm}: {e}", steps=steps,
                             fault=AbortCause.BRIDGE.value)
    except MediaWriteError as e:  # the episode ran, its video could not be written
        if recorder is not None:
            recorder.discard()
        return EpisodeResult(status="aborted", reason=f"arm {arm}: {e}"[:500], steps=steps,
                             fault=AbortCause.MEDIA.value)
    except Exception as e:  # noqa: BLE001 - policy worker died, policy raised, encoder failed
        _try_hold(client)
        if recorder is not None:
            recorder.discard()
        ray_error = e.__class__.__module__.startswith("ray")
        if isinstance(e, PolicyError):
            fault = AbortCause.POLICY.value  # the policy itself raised on this step
        elif ray_error or isinstance(e, PolicyUnavailable):
            fault = AbortCause.WORKER.value  # the worker died, restarted or did not answer
        else:
            fault = AbortCause.UNKNOWN.value
        return EpisodeResult(
            status="aborted",
            reason=f"arm {arm}: {e.__class__.__name__}: {e}"[:500],
            steps=steps,
            fault=fault,
        )


def _try_hold(client: BridgeClient) -> None:
    """One attempt to hold the arm after a fault; the bridge's watchdog holds it anyway."""
    try:
        client.hold()
    except Exception:  # noqa: BLE001 - best effort; the watchdog is the guarantee
        pass


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
    while True:
        dt = t - time.perf_counter()
        if dt <= 0:
            return
        time.sleep(min(dt, 0.05))
