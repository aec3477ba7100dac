"""Action-chunk execution, decided step by step (pure: no Ray, ZeroMQ, SQL or torch).

The episode loop (orchestrator/episode.py) asks a `ChunkSchedule` three things each step `t`:

- `wants_request(t)`: send the policy a query now, with step t's observation? Only one query
  is in flight at a time. The next chunk is requested `lead` steps before the current one
  has run `execute_steps` (its *switch* step), where `lead = ceil(latency / period) + margin`
  and `latency` is the slowest of the recent measured round trips (`note_latency`): the
  query overlaps the execution of the current chunk, and the new chunk arrives before the
  switch, so the arm never idles. A chunk whose switch is closer than `lead` is re-queried
  at once (the policy is slower than execute_steps: every chunk then runs a little longer).
- `arrived(chunk, t)`: a chunk computed from step `chunk.step`'s observation has arrived.
  It takes over at the current chunk's switch step (right away when there is none yet or
  the switch has passed).
- `action(t)`: what to send at step t: a `StepAction` (the values, chunk id, index within
  the chunk, age in steps), or None when no chunk covers t (the loop then waits for the
  query in flight: the first step of an episode, or a single-step policy every step).

Time alignment: row i of a chunk is the action for step `chunk.step + i` (the policy planned
it from that step's observation), so a chunk that takes over at step s starts at row
`s - chunk.step`: the rows for steps already past are skipped, never replayed late.

A late chunk (not there at the switch step): the current chunk **continues beyond
execute_steps** along its plan, as long as it has rows (`StepAction.overrun` is True; in
the recorded steps that chunk id then covers more than execute_steps steps); only when it
runs out does `action` return None and the loop waits (that step is late). Holding instead would stop
the arm mid-motion at every hiccup; continuing follows the policy's own plan, which is
what the chunk's later rows are for.

Temporal ensembling (ACT, Zhao et al. 2023), optional: the action for step t is the
weighted mean of the rows for t of every arrived chunk that covers t, weights
exp(-k * i) with i = 0 for the oldest chunk (ACT's convention: older predictions weigh
more, k small). The recorded chunk id/index are those of the newest contributing chunk.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from policies.base import ActionChunk, Chunking

LATENCY_WINDOW = 8  # round trips remembered for the latency estimate
DEFAULT_MARGIN_STEPS = 1  # extra steps of lead, for jitter and the step the reply lands in


@dataclass(frozen=True)
class StepAction:
    """What the arm gets at one step, and where it came from."""

    values: tuple[float, ...]
    chunk_id: int  # 0, 1, ... in arrival order within the episode
    index: int  # row of that chunk
    age_steps: int  # steps since the observation the chunk was computed from (== index)
    terminate: bool
    overrun: bool  # past its switch step: the next chunk was late, this one continued
    ensembled: int = 1  # how many chunks were averaged (temporal ensembling)


@dataclass
class _Live:
    id: int
    chunk: ActionChunk
    start: int  # the step at which it took over (or will)
    step0: int = field(init=False)  # chunk.step and chunk.horizon, read every step
    horizon: int = field(init=False)
    # the rows as tuples of Python floats, converted once per chunk (not once per step)
    rows: tuple[tuple[float, ...], ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.step0 = self.chunk.step
        self.horizon = self.chunk.horizon

    def covers(self, t: int) -> bool:
        return 0 <= t - self.step0 < self.horizon

    def row(self, i: int) -> tuple[float, ...]:
        if not self.rows:
            self.rows = tuple(map(tuple, self.chunk.values.tolist()))
        return self.rows[i]


class ChunkSchedule:
    """The per-episode chunk state machine. `period_s`: the control period of the loop."""

    def __init__(self, chunking: Chunking, period_s: float,
                 margin_steps: int = DEFAULT_MARGIN_STEPS) -> None:
        if not period_s > 0:
            raise ValueError(f"chunk schedule: period_s must be > 0, got {period_s}")
        self.chunking = chunking
        self.period_s = period_s
        self.margin_steps = margin_steps
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._current: _Live | None = None
        self._next: _Live | None = None  # arrived, waiting for the current one's switch
        self._history: deque[_Live] = deque(maxlen=64)  # for ensembling
        self._ids = 0
        self._in_flight = False
        self._requested_for: _Live | None = None  # the chunk current when the query left

    # --- inputs -----------------------------------------------------------------------------

    def note_latency(self, seconds: float) -> None:
        """A measured query round trip (request sent -> chunk usable)."""
        if math.isfinite(seconds) and seconds >= 0:
            self._latencies.append(seconds)

    def requested(self, t: int) -> None:
        """The loop sent a query at step t."""
        self._in_flight = True
        self._requested_for = self._current

    def failed(self) -> None:
        """The query in flight ended without a chunk (the loop aborts or retries)."""
        self._in_flight = False
        self._requested_for = None

    def arrived(self, chunk: ActionChunk, t: int) -> int:
        """The chunk answering the query in flight, usable from step t; returns its id."""
        self._in_flight = False
        live = _Live(self._ids, chunk, t)
        self._ids += 1
        self._history.append(live)
        cur = self._current
        if cur is None or t >= self._switch(cur) or not cur.covers(t):
            self._current, self._next = live, None
        else:
            self._next = live
            live.start = self._switch(cur)
        return live.id

    # --- decisions --------------------------------------------------------------------------

    @property
    def lead_steps(self) -> int:
        """Steps before a switch at which the next query leaves."""
        lat = max(self._latencies) if self._latencies else 0.0
        return math.ceil(lat / self.period_s - 1e-9) + self.margin_steps

    @property
    def in_flight(self) -> bool:
        return self._in_flight

    def wants_request(self, t: int) -> bool:
        if self._in_flight:
            return False
        cur = self._current
        if cur is None:
            return True
        if self._next is not None:
            return False  # the successor is already here
        if self._requested_for is cur:
            return False  # this chunk's successor was asked for already (and failed/landed)
        return t >= self._switch(cur) - self.lead_steps

    def action(self, t: int) -> StepAction | None:
        self._advance(t)
        cur = self._current
        if cur is None or not cur.covers(t):
            return None
        idx = t - cur.step0
        values = cur.row(idx)
        n = 1
        if self.chunking.temporal_ensemble:
            covering = [c for c in self._history if c.covers(t) and c.id <= cur.id]
            if len(covering) > 1:
                rows = np.stack([c.chunk.values[t - c.step0] for c in covering])
                w = np.exp(-self.chunking.ensemble_k * np.arange(len(covering)))
                values = tuple(_weighted_mean(rows, w).tolist())
                n = len(covering)
        return StepAction(
            values=values,
            chunk_id=cur.id,
            index=idx,
            age_steps=idx,
            terminate=cur.chunk.terminates(idx),
            overrun=t >= self._switch(cur),
            ensembled=n,
        )

    # --- internals --------------------------------------------------------------------------

    def _switch(self, live: _Live) -> int:
        return live.start + self.chunking.execute_steps

    def _advance(self, t: int) -> None:
        nxt = self._next
        if nxt is not None and (self._current is None or t >= nxt.start
                                or not self._current.covers(t)):
            self._current, self._next = nxt, None
            nxt.start = min(nxt.start, t)


def _weighted_mean(rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per column, NaN (keep the gripper) rows left out; all NaN stays NaN."""
    ok = np.isfinite(rows)
    ww = np.where(ok, w[:, None], 0.0)
    tot = ww.sum(axis=0)
    s = np.where(ok, rows, 0.0) * ww
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, s.sum(axis=0) / np.where(tot > 0, tot, 1.0), np.nan)
