"""Success predicates of the simulated tabletop, one per skill (pure).

`success(state, scene)` is the sim's own outcome for an episode's current state; the bridge
reports it as `sim_success`. Each predicate is False in the state `make_world` lays out.

- pick: the target is held and its bottom is > 5 cm above where it started.
- move_near: the target rests (released, not in the drawer) with its centre within
  max(8 cm, r_target + r_destination + 3 cm) of the destination's centre, horizontally
  (so two wide objects count as near when they nearly touch); a "drawer" destination
  means the middle of the drawer's front.
- knock_over: the (initially standing) target lies down.
- place_upright: the target started lying down, now stands and is released.
- open_drawer: drawer opening > 0.7.
- close_drawer: drawer opening < 0.1, having started at or above 0.1.
- place_into_drawer: the target lies in the drawer's tray, released.
- pick_from_drawer: the target started in the drawer, is held, out of the drawer, and its
  bottom is > 5 cm above where it started.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from robots.sim.world import WorldState
from robots.types import SceneSpec, Skill

LIFT_M = 0.05
NEAR_M = 0.08
NEAR_GAP_M = 0.03
OPEN_ABOVE = 0.7
CLOSED_BELOW = 0.1


def _lifted(state: WorldState, name: str) -> bool:
    return (
        state.grasped == name and state.obj(name).bottom > state.initial_obj(name).bottom + LIFT_M
    )


def pick(state: WorldState, scene: SceneSpec) -> bool:
    return _lifted(state, scene.target)


def move_near(state: WorldState, scene: SceneSpec) -> bool:
    if not scene.destination or state.grasped == scene.target:
        return False
    t = state.obj(scene.target)
    if t.in_drawer:
        return False
    if scene.destination == "drawer":  # near the drawer: near the middle of its front
        if state.drawer is None:
            return False
        dx, dy, _ = state.drawer.world(state.drawer.front, 0.0)
        near = max(NEAR_M, t.kind.size + NEAR_GAP_M)
    else:
        d = state.obj(scene.destination)
        dx, dy, near = d.pos[0], d.pos[1], max(NEAR_M, t.kind.size + d.kind.size + NEAR_GAP_M)
    return math.hypot(t.pos[0] - dx, t.pos[1] - dy) <= near


def knock_over(state: WorldState, scene: SceneSpec) -> bool:
    return state.initial_obj(scene.target).upright and not state.obj(scene.target).upright


def place_upright(state: WorldState, scene: SceneSpec) -> bool:
    return (not state.initial_obj(scene.target).upright and state.obj(scene.target).upright
            and state.grasped != scene.target)


def open_drawer(state: WorldState, scene: SceneSpec) -> bool:
    return state.drawer is not None and state.drawer.opening > OPEN_ABOVE


def close_drawer(state: WorldState, scene: SceneSpec) -> bool:
    return (state.drawer is not None and state.initial_opening is not None
            and state.initial_opening >= CLOSED_BELOW and state.drawer.opening < CLOSED_BELOW)


def place_into_drawer(state: WorldState, scene: SceneSpec) -> bool:
    return state.obj(scene.target).in_drawer and state.grasped != scene.target


def pick_from_drawer(state: WorldState, scene: SceneSpec) -> bool:
    return state.initial_obj(scene.target).in_drawer and not state.obj(scene.target).in_drawer \
        and _lifted(state, scene.target)


PREDICATES: dict[Skill, Callable[[WorldState, SceneSpec], bool]] = {
    Skill.PICK: pick,
    Skill.MOVE_NEAR: move_near,
    Skill.KNOCK_OVER: knock_over,
    Skill.PLACE_UPRIGHT: place_upright,
    Skill.OPEN_DRAWER: open_drawer,
    Skill.CLOSE_DRAWER: close_drawer,
    Skill.PLACE_INTO_DRAWER: place_into_drawer,
    Skill.PICK_FROM_DRAWER: pick_from_drawer,
}


def success(state: WorldState, scene: SceneSpec) -> bool:
    """The sim's own outcome: does the state satisfy the scene's skill?"""
    try:
        skill = Skill(scene.skill)
    except ValueError:
        raise ValueError(f"no success predicate for skill {scene.skill!r}") from None
    return bool(PREDICATES[skill](state, scene))
