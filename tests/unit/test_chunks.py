"""orchestrator/chunks.py: which row of which chunk each step sends, when the next chunk is
asked for, late chunks and temporal ensembling. Pure: a simulated clock, no sockets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.chunks import ChunkSchedule, StepAction
from policies.base import ActionChunk, Chunking, PolicyOutput
from robots.types import Action


def _chunk(step: int, h: int, d: int = 8, base: float = 0.0) -> ActionChunk:
    """Row i holds step + i in every column (so a row names the step it was planned for)."""
    v = np.repeat((np.arange(h, dtype=np.float64) + step + base)[:, None], d, axis=1)
    return ActionChunk(v, 15.0, step)


def simulate(chunking: Chunking, hz: float, latency_s: float, steps: int,
             latency_of=None) -> list[tuple[StepAction, bool]]:
    """A loop that polls arrivals at the start of each step; a query sent at step t (with
    t's observation) is usable at the first step starting at or after t*period + latency.
    Returns (action, waited) per step; waited: no chunk covered the step, the loop blocked."""
    period = 1.0 / hz
    s = ChunkSchedule(chunking, period)
    pending: tuple[int, float] | None = None  # (step of the observation, arrival time)
    out = []
    for t in range(steps):
        now = t * period
        if pending is not None and pending[1] <= now + 1e-9:
            s.note_latency(pending[1] - pending[0] * period)
            s.arrived(_chunk(pending[0], chunking.horizon), t)
            pending = None
        if s.wants_request(t):
            lat = latency_of(t) if latency_of else latency_s
            s.requested(t)
            pending = (t, now + lat)
        a = s.action(t)
        waited = False
        if a is None:  # block for the query in flight
            assert pending is not None, f"step {t}: no action and nothing in flight"
            s.note_latency(pending[1] - pending[0] * period)
            s.arrived(_chunk(pending[0], chunking.horizon), t)
            pending = None
            a = s.action(t)
            waited = True
        assert a is not None
        out.append((a, waited))
    return out


def test_h16_execute8_at_15hz_with_300ms_inference_never_waits_once_warm() -> None:
    out = simulate(Chunking(16, 8), 15.0, 0.300, 200)
    waits = [t for t, (_, w) in enumerate(out) if w]
    assert waits == [0]  # only the very first step waits for the first chunk
    for t, (a, _) in enumerate(out):
        assert a.values[0] == t  # the row planned for this very step (time-aligned)
        assert not a.overrun  # the next chunk was always there at the switch
        assert a.index < 16
    ids = [a.chunk_id for a, _ in out]
    assert ids == sorted(ids)
    # after warm-up every chunk runs exactly execute_steps steps
    runs = np.bincount(ids)
    assert set(runs[1:-1].tolist()) == {8}


def test_single_step_policy_queries_every_step_and_waits_for_it() -> None:
    out = simulate(Chunking(1, 1), 5.0, 0.05, 10)
    assert all(w for _, w in out)  # a chunk of length 1: one (synchronous) query per step
    assert [a.chunk_id for a, _ in out] == list(range(10))
    assert all(a.index == 0 and a.age_steps == 0 for a, _ in out)


def test_fast_policy_switches_on_the_execute_grid() -> None:
    out = simulate(Chunking(16, 8), 15.0, 0.010, 40)
    assert [w for _, w in out].count(True) == 1
    starts = [t for t in range(1, 40) if out[t][0].chunk_id != out[t - 1][0].chunk_id]
    assert starts == [8, 16, 24, 32]


def test_late_chunk_continues_the_old_one_beyond_execute_steps_and_records_it() -> None:
    lat = {0: 0.0, 2: 0.9}  # the second query takes 0.9 s: arrives at step ~16
    out = simulate(Chunking(16, 8), 15.0, 0.1,
                   40, latency_of=lambda t: lat.get(t, 0.1))
    first = [a for a, _ in out if a.chunk_id == 0]
    assert len(first) > 8  # kept going past execute_steps
    assert [a.overrun for a in first[8:]] == [True] * (len(first) - 8)
    assert all(a.index >= 8 for a in first[8:])
    assert all(not w for _, w in out[1:])  # it still never waited: the chunk had rows left


def test_old_chunk_runs_out_then_the_loop_waits() -> None:
    out = simulate(Chunking(4, 2), 10.0, 1.0, 12)
    waited = [t for t, (_, w) in enumerate(out) if w]
    assert 0 in waited and len(waited) > 1  # a 1 s policy cannot keep up with 4-row chunks


def test_terminate_row_and_single_action_as_chunk() -> None:
    out = PolicyOutput(Action(terminate=True, dx=0.01, gripper=1.0))
    assert out.the_chunk.values.shape == (1, 7) and out.the_chunk.terminates(0)
    assert not out.the_chunk.values.flags.writeable
    c = ActionChunk(np.zeros((3, 2)), 10.0, 0, terminate_at=2)
    s = ChunkSchedule(Chunking(3, 3), 0.1)
    s.requested(0)
    s.arrived(c, 0)
    assert [s.action(t).terminate for t in range(3)] == [False, False, True]  # type: ignore[union-attr]


def test_policy_output_needs_an_action_or_a_chunk() -> None:
    with pytest.raises(ValueError, match="action"):
        PolicyOutput()
    with pytest.raises(ValueError, match="execute_steps"):
        Chunking(4, 5)
    with pytest.raises(ValueError, match="H x D"):
        ActionChunk(np.zeros((0, 3)), 10.0)


def test_temporal_ensembling_weights_older_chunks_more() -> None:
    k = 0.5
    s = ChunkSchedule(Chunking(4, 1, temporal_ensemble=True, ensemble_k=k), 0.1)
    s.requested(0)
    s.arrived(ActionChunk(np.full((4, 1), 1.0), 10.0, 0), 0)
    a0 = s.action(0)
    assert a0 is not None and a0.values == (1.0,) and a0.ensembled == 1
    s.requested(1)
    s.arrived(ActionChunk(np.full((4, 1), 3.0), 10.0, 1), 1)
    a1 = s.action(1)
    w0, w1 = 1.0, math.exp(-k)
    assert a1 is not None and a1.ensembled == 2 and a1.chunk_id == 1
    assert a1.values[0] == pytest.approx((w0 * 1.0 + w1 * 3.0) / (w0 + w1))


def test_ensembling_leaves_nan_gripper_out() -> None:
    s = ChunkSchedule(Chunking(2, 1, temporal_ensemble=True), 0.1)
    s.requested(0)
    s.arrived(ActionChunk(np.array([[0.0, np.nan], [0.0, np.nan]]), 10.0, 0), 0)
    s.requested(1)
    s.arrived(ActionChunk(np.array([[2.0, 0.5], [2.0, 0.5]]), 10.0, 1), 1)
    a = s.action(1)
    assert a is not None and a.values[1] == 0.5 and 0 < a.values[0] < 2


def test_chunk_logic_and_step_record_are_pure() -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = ("import json, sys\nimport orchestrator.chunks, orchestrator.step_record\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
              "{'ray', 'zmq', 'sqlalchemy', 'torch', 'streamlit', 'av'})))\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
