"""orchestrator/episode.py's loop against an in-memory bridge client (no sockets, no Ray):
one round trip per step, chunk bookkeeping, aborts that keep their steps, a chunk rate that
does not match the episode's."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.actors.dataplane import PolicyError
from orchestrator.episode import EpisodeSpec, PolicyReply, run_episode
from orchestrator.store.states import EpisodeStatus
from policies.base import SINGLE_STEP, ActionChunk, Chunking, PolicyInput
from robots.types import Action, Observation


@dataclass
class FakeClient:
    """observe/act/hold/end_episode of a BridgeClient; counts the calls."""

    calls: list[str] = field(default_factory=list)
    seq: int = 0
    clock_offset_ns: int = 0
    capabilities: None = None

    def _obs(self) -> Observation:
        self.seq += 1
        return Observation(self.seq, time.monotonic_ns(), time.time_ns(),
                           {"main": np.zeros((8, 8, 3), np.uint8)}, (0.0,) * 6 + (0.5,))

    def observe(self) -> Observation:
        self.calls.append("observe")
        return self._obs()

    def act(self, values, terminate: bool = False):  # type: ignore[no-untyped-def]
        self.calls.append("act")
        return SimpleNamespace(applied=tuple(values), clipped=(False,) * len(values),
                               observation=self._obs(), terminate=terminate)

    def hold(self) -> None:
        self.calls.append("hold")

    def end_episode(self) -> None:
        self.calls.append("end_episode")

    def privileged(self) -> dict:
        return {}


def _spec(steps: int, hz: float = 50.0, chunking: Chunking = SINGLE_STEP) -> EpisodeSpec:
    return EpisodeSpec(episode_id=1, campaign="c", instruction="pick", max_steps=steps,
                       control_hz=hz, needs_privileged=False, timeout_s=30, record=False,
                       chunking=chunking)


def _reply(chunk: ActionChunk | None = None, action: Action | None = None) -> PolicyReply:
    return PolicyReply(action, None, None, 0.0, 0.0, None, chunk)


def test_one_round_trip_per_step_and_hold_keeps_the_gripper() -> None:
    c = FakeClient()
    r = run_episode(c, lambda inp: _reply(action=Action.hold()), _spec(5),  # type: ignore[arg-type]
                    arm="a", media_dir=Path("/nonexistent"))
    assert r.status == EpisodeStatus.RECORDED
    assert c.calls == ["observe"] + ["act"] * 5 + ["end_episode"]
    assert [s.obs_seq for s in r.steps] == [1, 2, 3, 4, 5]  # each act's reply fed the next
    assert all(s.action[-1] == 0.5 for s in r.steps)  # NaN gripper -> the observed one
    assert [(s.chunk_id, s.chunk_index) for s in r.steps] == [(i, 0) for i in range(5)]


def test_a_chunk_runs_open_loop_and_terminates_on_its_row() -> None:
    c = FakeClient()
    calls: list[PolicyInput] = []

    def policy(inp: PolicyInput) -> PolicyReply:
        calls.append(inp)
        return _reply(ActionChunk(np.zeros((4, 7)), 50.0, terminate_at=2))

    r = run_episode(c, policy, _spec(10, chunking=Chunking(4, 4)),  # type: ignore[arg-type]
                    arm="a", media_dir=Path("/nonexistent"))
    assert r.status == EpisodeStatus.RECORDED and r.terminated_by == "terminate"
    assert [(s.chunk_id, s.chunk_index, s.terminate) for s in r.steps] == [
        (0, 0, False), (0, 1, False), (0, 2, True)]
    # the next chunk may have been asked for already (it overlaps the execution)
    assert len(calls) <= 2 and r.steps[0].action_space == "ee_delta[7]"


def test_policy_error_aborts_and_keeps_the_steps_so_far() -> None:
    c = FakeClient()
    n = [0]

    def policy(inp: PolicyInput) -> PolicyReply:
        n[0] += 1
        if n[0] == 4:
            raise PolicyError("policy failed: boom")
        return _reply(action=Action(dx=0.01, gripper=1.0))

    r = run_episode(c, policy, _spec(10), arm="a",  # type: ignore[arg-type]
                    media_dir=Path("/nonexistent"))
    assert r.status == EpisodeStatus.ABORTED and r.fault == "policy" and "boom" in (r.reason or "")
    assert [s.idx for s in r.steps] == [0, 1, 2] and "hold" in c.calls


def test_a_chunk_at_another_rate_is_refused_in_one_line() -> None:
    c = FakeClient()
    r = run_episode(c, lambda inp: _reply(ActionChunk(np.zeros((8, 7)), 10.0)),  # type: ignore[arg-type]
                    _spec(4, hz=50.0, chunking=Chunking(8, 4)), arm="a",
                    media_dir=Path("/nonexistent"))
    assert r.status == EpisodeStatus.ABORTED and r.fault == "policy"
    assert "10 Hz" in (r.reason or "") and "50 Hz" in (r.reason or "")


@pytest.mark.parametrize("ensemble", [False, True])
def test_background_queries_overlap_execution(ensemble: bool) -> None:
    """A 60 ms policy, 8-row chunks executed 4 at a time at 50 Hz (20 ms steps): after the
    first chunk no step waits (ordering, not latency: the chunk ids advance by one every
    execute_steps steps)."""
    c = FakeClient()

    def policy(inp: PolicyInput) -> PolicyReply:
        time.sleep(0.06)  # the model's compute time, simulated
        return _reply(ActionChunk(np.zeros((8, 7)), 50.0))

    r = run_episode(c, policy, _spec(24, chunking=Chunking(8, 4, temporal_ensemble=ensemble)),  # type: ignore[arg-type]
                    arm="a", media_dir=Path("/nonexistent"))
    assert r.status == EpisodeStatus.RECORDED, r.reason
    ids = [s.chunk_id for s in r.steps]
    assert ids == sorted(ids) and len(set(ids)) >= 4


@pytest.mark.parametrize("after_steps", [0, 3])
def test_a_stopped_episode_is_aborted_with_the_stops_cause(after_steps: int) -> None:
    """An e-stop from the orchestrator never leaves a recorded (counted) episode, whether it
    lands before the first step or mid-way; the steps up to it are kept."""
    from orchestrator.episode import EpisodeStop
    from orchestrator.faults import AbortCause

    c = FakeClient()
    stop = EpisodeStop()
    n = 0

    def policy(inp: PolicyInput) -> PolicyReply:
        nonlocal n
        if n == after_steps:
            stop.set(AbortCause.ESTOP, "e-stopped (test)")
        n += 1
        return _reply(action=Action.hold())

    if after_steps == 0:
        stop.set(AbortCause.ESTOP, "e-stopped (test)")
    r = run_episode(c, policy, _spec(10), arm="a",  # type: ignore[arg-type]
                    media_dir=Path("/nonexistent"), stop=stop)
    assert r.status == EpisodeStatus.ABORTED
    assert r.fault == AbortCause.ESTOP.value
    assert r.reason is not None and "e-stopped (test)" in r.reason
    assert len(r.steps) == (0 if after_steps == 0 else after_steps + 1)
    assert "act" not in c.calls[c.calls.index("hold"):]  # nothing moved after the stop
