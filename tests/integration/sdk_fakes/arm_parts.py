"""Fake parts the arm drivers take besides their SDK: a frame source and a gripper port."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robots.spaces import CameraSpec


class FakeFrameSource:
    """Frames of the declared sizes (a gradient, so they are not all zeros); counts reads."""

    def __init__(self, cameras: Sequence[CameraSpec]) -> None:
        self.cameras = tuple(cameras)
        self.reads = 0
        self.closed = False
        self._frames = {c.name: np.broadcast_to(np.arange(c.width, dtype=np.uint8)[None, :, None] % 251,
                                                (c.height, c.width, 3)).copy() for c in self.cameras}

    def read(self) -> dict[str, np.ndarray]:
        self.reads += 1
        return dict(self._frames)

    def close(self) -> None:
        self.closed = True


class FakeGripper:
    """A gripper port (0 open .. 1 closed) that reaches its target at once; records moves."""

    def __init__(self, closed: float = 0.0) -> None:
        self.position = closed
        self.moves: list[float] = []
        self.is_closed = False

    def move(self, closed: float) -> None:
        if not 0.0 <= closed <= 1.0:
            raise ValueError(f"gripper target {closed} outside 0..1")
        self.moves.append(closed)
        self.position = closed

    def closed(self) -> float:
        return self.position

    def close(self) -> None:
        self.is_closed = True


class ManualClock:
    """A clock the test moves by hand (the fakes integrate motion over its time)."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def gripper_for(host: str) -> FakeGripper:
    """A `gripper: package.module:Factory` target: the factory gets the arm's host."""
    return FakeGripper()
