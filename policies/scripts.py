"""Scripted skill controllers over a tabletop state dict (the sim's privileged-state layout).

The scripted oracle feeds them the simulator's ground truth; the vision heuristic feeds them
its own estimate of the same layout. They rely on the tabletop's documented rules
(robots/drivers/sim.py, robots/sim/world.py): grasp by closing the gripper at an object's
centre; a tall object released within 3 cm of its support keeps standing; a held lying object
swings upright once it can hang; the drawer is pulled/pushed along its axis while its handle is
held. A script is a list of stages; a stage returns an action, or None when it is done. With
`verify`, a failed check (the grasp missed, the can still stands) restarts the script from the
current state; when the script ends, the runner sends terminate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from policies.control import TRAVEL_Z, add_noise, approach_from_above, reached, step_towards
from robots.types import Action, ActionSpace

OPEN, CLOSED = 1.0, 0.0
STROKE = 0.15  # the drawer's full stroke (m)
Stage = Callable[[dict], Action | None]
Dims = Callable[[str], tuple[float, float, bool]]  # name -> (footprint radius, height, tall)
SKILLS = (
    "pick",
    "move_near",
    "knock_over",
    "place_upright",
    "open_drawer",
    "close_drawer",
    "place_into_drawer",
    "pick_from_drawer",
)


class _Retry(Exception):
    pass


@dataclass
class Episode:
    """One arm's script progress."""

    instruction: str
    rng: np.random.Generator
    stages: list[Stage] = field(default_factory=list)
    index: int = 0
    retries: int = 0
    done: bool = False
    gripper: float = OPEN  # last commanded gripper
    memory: dict = field(default_factory=dict)  # for state estimators (vision heuristic)


class ScriptRunner:
    def __init__(
        self,
        space: ActionSpace,
        dims: Dims,
        *,
        tolerance: float = 0.006,
        noise: float = 0.0,
        verify: bool = True,
        max_retries: int = 4,
    ) -> None:
        self.space, self.dims, self.verify = space, dims, verify
        self.noise, self.max_retries = noise, max_retries
        self.tol = tolerance + 2.5 * noise  # noisy steps jitter around a goal

    def step(self, ep: Episode, s: dict) -> Action:
        if ep.done:
            return Action(terminate=True, gripper=ep.gripper)
        if not ep.stages:
            ep.stages, ep.index = self.script(s), 0
        for _ in range(len(ep.stages) + 1):
            if ep.index >= len(ep.stages):
                ep.done = True
                return Action(terminate=True, gripper=ep.gripper)
            try:
                a = ep.stages[ep.index](s)
            except _Retry:
                ep.retries += 1
                if ep.retries > self.max_retries:
                    ep.done = True
                    return Action(terminate=True, gripper=ep.gripper)
                ep.stages, ep.index = self.script(s), 0
                continue
            if a is None:
                ep.index += 1
                continue
            ep.gripper = a.gripper
            moving = abs(a.dx) + abs(a.dy) + abs(a.dz) > 0
            return add_noise(a, ep.rng, self.noise, self.space) if moving else a
        return Action(gripper=ep.gripper)

    # --- stages -----------------------------------------------------------------------
    def goto(
        self, target: Callable[[dict], Sequence[float]], gripper: float, above: bool = True
    ) -> Stage:
        def stage(s: dict) -> Action | None:
            t = target(s)
            if reached(s["ee"], t, self.tol):
                return None
            if above:
                return approach_from_above(s["ee"], t, self.space, gripper, TRAVEL_Z, self.tol)
            return step_towards(s["ee"], t, self.space, gripper)

        return stage

    @staticmethod
    def grip(value: float) -> Stage:
        def stage(s: dict) -> Action | None:
            if (value < 0.5) == (float(s["gripper"]) < 0.5):
                return None
            return Action(gripper=value)

        return stage

    def check(self, ok: Callable[[dict], bool]) -> list[Stage]:
        if not self.verify:
            return []

        def stage(s: dict) -> Action | None:
            if ok(s):
                return None
            raise _Retry

        return [stage]

    def up(self, dz: float, gripper: float) -> list[Stage]:
        box: dict = {}

        def lift(s: dict) -> Sequence[float]:
            box.setdefault("t", (s["ee"][0], s["ee"][1], min(s["ee"][2] + dz, 0.38)))
            return box["t"]

        return [self.goto(lift, gripper, above=False)]

    # --- scripts per skill ------------------------------------------------------------
    def script(self, s: dict) -> list[Stage]:
        skill, target, dest = s["skill"], s["target"], s.get("destination")
        build = {
            "pick": self._pick_lift,
            "pick_from_drawer": self._pick_lift,
            "move_near": self._move_near,
            "knock_over": self._knock_over,
            "place_upright": self._place_upright,
            "open_drawer": self._drawer_move,
            "close_drawer": self._drawer_move,
            "place_into_drawer": self._into_drawer,
        }
        if skill not in build:
            raise ValueError(f"no scripted controller for skill {skill!r}; known: {list(SKILLS)}")
        return build[skill](s, target, dest)

    def grasp(self, target: str) -> list[Stage]:
        pos = lambda s: s["objects"][target]["pos"]
        return [self.grip(OPEN), self.goto(pos, OPEN), self.grip(CLOSED)] + self.check(
            lambda s: s["grasped"] == target
        )

    def _pick_lift(self, s: dict, target: str, dest: str | None) -> list[Stage]:
        return (
            self.grasp(target)
            + self.up(0.12, CLOSED)
            + self.check(lambda s: s["grasped"] == target)
        )

    def _place(self, where: Callable[[dict], Sequence[float]]) -> list[Stage]:
        """Carry the held object over `where` (x, y, release z of the ee), lower, release."""
        return [self.goto(where, CLOSED), self.grip(OPEN)] + self.up(0.08, OPEN)

    def _half_height(self, s: dict, name: str) -> float:
        r, h, _ = self.dims(name)
        return h / 2 if s["objects"][name].get("upright", True) else r

    def _move_near(self, s: dict, target: str, dest: str | None) -> list[Stage]:
        if dest is None:
            raise ValueError("move_near needs a destination")
        rt, _, _ = self.dims(target)
        rd, _, _ = self.dims(dest)
        t0, d0 = np.array(s["objects"][target]["pos"][:2]), np.array(s["objects"][dest]["pos"][:2])
        u = t0 - d0
        u = u / np.linalg.norm(u) if np.linalg.norm(u) > 1e-6 else np.array([1.0, 0.0])
        dist = min(rt + rd + 0.012, max(0.08, rt + rd + 0.03) - 0.02)
        z = self._half_height(s, target) + 0.008

        def where(s: dict) -> Sequence[float]:
            d = np.array(s["objects"][dest]["pos"][:2]) + u * dist
            return (float(d[0]), float(d[1]), z)

        return self.grasp(target) + self._place(where) + self.check(lambda s: s["grasped"] is None)

    def _knock_over(self, s: dict, target: str, dest: str | None) -> list[Stage]:
        r, h, _ = self.dims(target)
        p = np.array(s["objects"][target]["pos"][:2])
        u = -p / np.linalg.norm(p) if np.linalg.norm(p) > 0.03 else np.array([1.0, 0.0])
        z = max(0.02, h * 0.5)
        start, end = p - u * (r + 0.05), p + u * 0.08
        return (
            [
                self.grip(OPEN),
                self.goto(lambda s: (*start, z), OPEN),
                self.goto(lambda s: (*end, z), OPEN, above=False),
            ]
            + self.up(0.1, OPEN)
            + self.check(lambda s: not s["objects"][target]["upright"])
        )

    def _place_upright(self, s: dict, target: str, dest: str | None) -> list[Stage]:
        r, h, _ = self.dims(target)
        box: dict = {}

        def release(s: dict) -> Sequence[float]:
            box.setdefault("t", (s["ee"][0], s["ee"][1], h - r + 0.015))
            return box["t"]

        return (
            self.grasp(target)
            + [self.goto(release, CLOSED, above=False), self.grip(OPEN)]
            + self.up(0.08, OPEN)
            + self.check(lambda s: s["objects"][target]["upright"])
        )

    def _drawer_move(self, s: dict, target: str, dest: str | None) -> list[Stage]:
        opening = s["skill"] == "open_drawer"
        box: dict = {}

        def pull(s: dict) -> Sequence[float]:
            if "t" not in box:
                hx, hy, hz = s["drawer"]["handle"]
                ux, uy = s["drawer"]["axis"]
                sign = 1.0 if opening else -1.0
                box["t"] = (hx + sign * ux * STROKE * 1.05, hy + sign * uy * STROKE * 1.05, hz)
            return box["t"]

        def done(s: dict) -> bool:
            o = s["drawer"]["opening"]
            return o > 0.75 if opening else o < 0.08

        move = self.goto(pull, CLOSED, above=False)
        until = lambda s: None if done(s) else move(s)
        return (
            [
                self.grip(OPEN),
                self.goto(lambda s: s["drawer"]["handle"], OPEN),
                self.grip(CLOSED),
                until,
                self.grip(OPEN),
            ]
            + self.up(0.08, OPEN)
            + self.check(done)
        )

    def _into_drawer(self, s: dict, target: str, dest: str | None) -> list[Stage]:
        half = self._half_height(s, target)

        def where(s: dict) -> Sequence[float]:
            x, y, floor = s["drawer"]["pos"]  # the centre of the tray floor
            return (x, y, floor + half + 0.01)

        return (
            self.grasp(target)
            + self._place(where)
            + self.check(lambda s: s["objects"][target]["in_drawer"])
        )
