"""The simulated tabletop: pure, deterministic state and kinematic "physics".

Frame: metres, robot base frame; the table top is z = 0, the camera looks from -x towards +x.
Everything is a frozen dataclass; `step(state, action, dt)` returns a new state and never
mutates. Same scene seed + same actions -> identical states (no global randomness).

Rules (kinematic, instantaneous, documented so a scripted oracle can rely on them):
- The end effector (ee) moves by the action's deltas per step, clipped to the Workspace box;
  roll/pitch are limited to +-1 rad, yaw wraps. A NaN gripper (Action.hold()) keeps it as is.
- Object `pos` is the object's *centre*; the ee grasps an object when the gripper closes
  (crosses 0.5 going down) with the ee within `size + 2 cm` of it horizontally (of the lying
  axis for toppled ones) and within half its height + 2 cm vertically. The object then
  centres horizontally under the gripper and follows it (yaw too), at the height offset it
  had when grasped. Opening the gripper releases it: it falls straight down onto the table,
  the top of the drawer cabinet, or into the drawer's tray when released above the part of
  the tray that sticks out of the cabinet. A step's deltas are per step; dt only advances t.
- A tall object (catalog `uprightable`) released from more than 3 cm above its support falls
  over. Lowered gently (within 3 cm) it keeps its orientation.
- place_upright: a lying object that is held swings upright as soon as there is room for it
  to hang below the gripper; lowered gently and released, it stands.
- Knocking: the ee moving horizontally into a standing object (entering its footprint while
  below the object's top, having been beside it, also below the top) topples a tall object in
  the direction of motion, and pushes any other object aside. Descending onto an object from
  above never knocks it.
- Drawer (a fixture): a cabinet at the table's edge whose tray slides out along `axis`
  (a unit vector pointing out of the cabinet, towards the middle of the table). Close the
  gripper within 4 cm of the handle to hold it; moving the ee along +axis pulls the drawer
  open, along -axis pushes it closed; opening the gripper (or moving > 5 cm off the handle)
  lets go. Pushing the tray's front with the ee below the cabinet's height (moving along
  -axis) also closes it; a closed front stops the ee. Objects in the tray move with it. The
  cabinet's body does not otherwise block the arm.
- Environment clutter lies at the table's rim, out of reach; it is scenery (rendered only).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace

import numpy as np

from robots.sim.catalog import BACKGROUNDS, ENVIRONMENTS, OBJECTS, ObjectKind
from robots.types import Action, SceneSpec, Skill, Workspace

HOME: tuple[float, ...] = (0.0, 0.0, 0.25, 0.0, 0.0, 0.0)
WORKSPACE = Workspace()
PLACE_LIMIT = 0.21  # object centres are placed within |x|,|y| <= this (reach is 0.25)
FINGER = 0.02  # grasp/contact margin around an object's footprint
CLOSED = 0.5  # gripper below this is closed
GENTLE_DROP = 0.03  # max release height (m) at which a tall object keeps standing
ROT_LIMIT = 1.0  # |roll|, |pitch| limit (rad)
HANDLE_REACH = 0.04
HANDLE_SLIP = 0.05
DRAWER_SKILLS = {Skill.OPEN_DRAWER, Skill.CLOSE_DRAWER, Skill.PLACE_INTO_DRAWER,
                 Skill.PICK_FROM_DRAWER}

# drawer geometry (m): cabinet footprint depth x width, height, tray travel
CAB_DEPTH, CAB_WIDTH, CAB_HEIGHT, TRAVEL = 0.16, 0.22, 0.10, 0.15
TRAY_FLOOR, HANDLE_OUT, HANDLE_Z = 0.02, 0.015, 0.05
CAB_DIST = 0.30  # cabinet centre's distance from the table centre


@dataclass(frozen=True)
class ObjectState:
    name: str
    pos: tuple[float, float, float]  # centre of the object
    yaw: float
    upright: bool = True
    in_drawer: bool = False
    graspable: bool = True

    @property
    def kind(self) -> ObjectKind:
        return OBJECTS[self.name]

    @property
    def tall(self) -> bool:
        return self.kind.uprightable

    @property
    def extent(self) -> float:
        """Vertical extent in its current orientation (a lying object's diameter)."""
        return self.kind.height if self.upright else 2 * self.kind.size

    @property
    def bottom(self) -> float:
        return self.pos[2] - self.extent / 2


@dataclass(frozen=True)
class DrawerState:
    center: tuple[float, float]  # cabinet footprint centre
    axis: tuple[float, float]  # unit vector, out of the cabinet
    opening: float = 0.0  # 0 closed .. 1 fully open
    held: bool = False  # the gripper holds the handle

    def local(self, x: float, y: float) -> tuple[float, float]:
        """(a, b): along the axis and across it, relative to the cabinet centre."""
        dx, dy = x - self.center[0], y - self.center[1]
        ux, uy = self.axis
        return dx * ux + dy * uy, -dx * uy + dy * ux

    def world(self, a: float, b: float, z: float = 0.0) -> tuple[float, float, float]:
        ux, uy = self.axis
        return (self.center[0] + a * ux - b * uy, self.center[1] + a * uy + b * ux, z)

    @property
    def front(self) -> float:
        return CAB_DEPTH / 2 + self.opening * TRAVEL

    @property
    def handle(self) -> tuple[float, float, float]:
        return self.world(self.front + HANDLE_OUT, 0.0, HANDLE_Z)

    @property
    def tray_center(self) -> tuple[float, float, float]:
        return self.world(self.front - TRAVEL / 2, 0.0, TRAY_FLOOR)

    def over_tray(self, x: float, y: float, margin: float = 0.0) -> bool:
        """Above the part of the tray that sticks out of the cabinet."""
        a, b = self.local(x, y)
        return CAB_DEPTH / 2 + margin < a < self.front - margin and abs(b) < CAB_WIDTH / 2 - margin

    def over_cabinet(self, x: float, y: float) -> bool:
        a, b = self.local(x, y)
        return abs(a) <= CAB_DEPTH / 2 and abs(b) <= CAB_WIDTH / 2


@dataclass(frozen=True)
class Clutter:
    name: str
    shape: str  # box | can | ball
    pos: tuple[float, float, float]
    yaw: float
    size: float
    height: float
    color: tuple[int, int, int]


@dataclass(frozen=True)
class WorldState:
    ee: tuple[float, ...]  # x y z roll pitch yaw
    gripper: float  # 0 closed .. 1 open
    objects: tuple[ObjectState, ...]
    drawer: DrawerState | None
    grasped: str | None = None
    grasp_dz: float = 0.0  # held object's centre height relative to the ee
    clutter: tuple[Clutter, ...] = ()
    initial: tuple[ObjectState, ...] = ()
    initial_opening: float | None = None
    t: float = 0.0
    steps: int = 0

    def obj(self, name: str, initial: bool = False) -> ObjectState:
        """An object by name, now (or as the episode started)."""
        for o in self.initial if initial else self.objects:
            if o.name == name:
                return o
        raise KeyError(f"no object {name!r} in this scene")

    def initial_obj(self, name: str) -> ObjectState:
        return self.obj(name, initial=True)


# ---------------------------------------------------------------- scene setup


def _scene_rng(scene: SceneSpec, salt: int = 0) -> np.random.Generator:
    key = zlib.crc32(f"{scene.skill}|{scene.target}|{','.join(scene.objects)}".encode())
    seed = scene.seed & 0xFFFFFFFFFFFFFFFF
    return np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32, key, salt])


def scene_names(scene: SceneSpec) -> list[str]:
    """The scene's movable objects, in a stable order, without the drawer fixture."""
    names: list[str] = []
    dest = [scene.destination] if scene.destination else []
    for n in (scene.target, *scene.objects, *dest, *scene.distractors):
        if n != "drawer" and n not in names:
            names.append(n)
    return names


def _validate(scene: SceneSpec) -> Skill:
    try:
        skill = Skill(scene.skill)
    except ValueError:
        raise ValueError(f"unknown skill {scene.skill!r}; "
                         f"expected one of {[s.value for s in Skill]}") from None
    every = {scene.target, *scene.objects, *scene.distractors, scene.destination} - {None}
    unknown = sorted(n for n in every if n not in OBJECTS)
    if unknown:
        raise ValueError(f"unknown object(s) {unknown}; the sim catalog has {sorted(OBJECTS)}")
    if scene.background not in BACKGROUNDS:
        raise ValueError(f"unknown background {scene.background!r}; "
                         f"expected one of {sorted(BACKGROUNDS)}")
    if scene.environment not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {scene.environment!r}; "
                         f"expected one of {sorted(ENVIRONMENTS)}")
    holds = {Skill.PICK, Skill.MOVE_NEAR, Skill.PLACE_UPRIGHT, Skill.PLACE_INTO_DRAWER,
             Skill.PICK_FROM_DRAWER}
    if skill in holds and not OBJECTS[scene.target].graspable:
        raise ValueError(f"{skill.value} needs a graspable target, {scene.target!r} is not")
    if skill in (Skill.PLACE_UPRIGHT, Skill.KNOCK_OVER) and not OBJECTS[scene.target].uprightable:
        raise ValueError(f"{skill.value} needs a tall target that can stand and lie down (catalog "
                         f"uprightable), {scene.target!r} cannot")
    if skill == Skill.MOVE_NEAR and not scene.destination:
        raise ValueError("move_near needs a destination")
    return skill


def _footprint(kind: ObjectKind, lying: bool) -> float:
    return max(kind.size, kind.height / 2) if (lying or kind.uprightable) else kind.size


def make_world(scene: SceneSpec) -> WorldState:
    """Lay out a scene reproducibly from its seed: no overlaps, everything within reach."""
    skill = _validate(scene)
    rng = _scene_rng(scene)
    drawer = None
    if skill in DRAWER_SKILLS or "drawer" in scene.objects or scene.destination == "drawer":
        theta = float(rng.choice([0.0, math.pi / 2, -math.pi / 2]) + rng.uniform(-0.12, 0.12))
        opening = {Skill.CLOSE_DRAWER: float(rng.uniform(0.85, 1.0)), Skill.PLACE_INTO_DRAWER: 1.0,
                   Skill.PICK_FROM_DRAWER: 1.0}.get(skill, 0.0)
        drawer = DrawerState(center=(CAB_DIST * math.cos(theta), CAB_DIST * math.sin(theta)),
                             axis=(-math.cos(theta), -math.sin(theta)), opening=opening)

    placed: list[tuple[float, float, float]] = []  # x, y, footprint radius
    objects: list[ObjectState] = []
    for name in scene_names(scene):
        kind = OBJECTS[name]
        lying = skill == Skill.PLACE_UPRIGHT and name == scene.target
        if skill == Skill.PICK_FROM_DRAWER and name == scene.target:
            assert drawer is not None
            yaw = float(rng.uniform(-math.pi, math.pi))
            a, b = drawer.front - TRAVEL / 2 + rng.uniform(-0.02, 0.02), rng.uniform(-0.03, 0.03)
            x, y, _ = drawer.world(a, b)
            z = TRAY_FLOOR + kind.height / 2
            objects.append(ObjectState(name, (x, y, z), yaw, True, True, kind.graspable))
            continue
        r = _footprint(kind, lying)
        for _ in range(4000):
            x, y = (float(v) for v in rng.uniform(-PLACE_LIMIT, PLACE_LIMIT, size=2))
            if any(math.hypot(x - px, y - py) < r + pr + 0.02 for px, py, pr in placed):
                continue
            if drawer is not None:
                a, b = drawer.local(x, y)
                far = CAB_DEPTH / 2 + TRAVEL + HANDLE_OUT + 0.03  # the open tray and its handle
                if -CAB_DEPTH / 2 - r < a < far + r and abs(b) < CAB_WIDTH / 2 + r:
                    continue
            if skill == Skill.MOVE_NEAR and scene.destination in {o.name for o in objects} | {name}:
                other = scene.target if name == scene.destination else scene.destination
                if any(o.name == other and math.hypot(x - o.pos[0], y - o.pos[1]) < 0.16
                       for o in objects):
                    continue
            break
        else:
            raise ValueError(f"scene too crowded: no free place for {name!r} (seed {scene.seed})")
        placed.append((x, y, r))
        yaw = float(rng.uniform(-math.pi, math.pi))
        z = kind.height / 2 if not lying else kind.size
        objects.append(ObjectState(name, (x, y, z), yaw, not lying, False, kind.graspable))

    clutter = _make_clutter(scene, drawer)
    objs = tuple(objects)
    return WorldState(ee=HOME, gripper=1.0, objects=objs, drawer=drawer, clutter=clutter,
                      initial=objs, initial_opening=drawer.opening if drawer else None)


def _make_clutter(scene: SceneSpec, drawer: DrawerState | None) -> tuple[Clutter, ...]:
    rng = _scene_rng(scene, salt=1)
    items: list[Clutter] = []
    for i in range(int(ENVIRONMENTS[scene.environment]["clutter"])):
        for _ in range(200):
            side = int(rng.integers(0, 3))  # far rim, left rim, right rim
            along, across = float(rng.uniform(-0.36, 0.36)), float(rng.uniform(0.30, 0.36))
            x, y = [(across, along), (along, across), (along, -across)][side]
            if drawer is not None and math.hypot(x - drawer.center[0], y - drawer.center[1]) < 0.2:
                continue
            if all(math.hypot(x - c.pos[0], y - c.pos[1]) > 0.09 for c in items):
                break
        shape = ("box", "can", "ball")[int(rng.integers(0, 3))]
        size = float(rng.uniform(0.02, 0.04))
        height = {"box": float(rng.uniform(0.03, 0.12)), "can": float(rng.uniform(0.08, 0.16)),
                  "ball": 2 * size}[shape]
        color = tuple(int(c) for c in rng.integers(40, 220, size=3))
        yaw = float(rng.uniform(-math.pi, math.pi))
        items.append(Clutter(f"clutter_{i}", shape, (x, y, height / 2), yaw, size, height,
                             color))  # type: ignore[arg-type]
    return tuple(items)


# ---------------------------------------------------------------- dynamics


def _support(state: WorldState, x: float, y: float) -> tuple[float, bool]:
    """(surface height, in the drawer's tray) below a point."""
    d = state.drawer
    if d is not None:
        if d.over_tray(x, y):
            return TRAY_FLOOR, True
        if d.over_cabinet(x, y):
            return CAB_HEIGHT, False
    return 0.0, False


def _wrap(angle: float) -> float:
    return math.atan2(math.sin(angle), math.cos(angle))


def _num(v: float, default: float = 0.0) -> float:
    return float(v) if math.isfinite(v) else default


def _seg_point_dist(p0: np.ndarray, p1: np.ndarray, q: np.ndarray) -> float:
    d = p1 - p0
    n = float(d @ d)
    s = 0.0 if n < 1e-12 else min(1.0, max(0.0, float((q - p0) @ d) / n))
    return float(np.linalg.norm(p0 + s * d - q))


def _footprint_dist(o: ObjectState, x: float, y: float) -> float:
    """Horizontal distance from (x, y) to the object's axis (a point when standing)."""
    p = np.array(o.pos[:2])
    if o.upright:
        return float(math.hypot(x - p[0], y - p[1]))
    half = max(0.0, o.kind.height / 2 - o.kind.size)
    u = np.array([math.cos(o.yaw), math.sin(o.yaw)])
    return _seg_point_dist(p - half * u, p + half * u, np.array([x, y]))


def step(state: WorldState, action: Action, dt: float) -> WorldState:
    """Advance one control period. Deltas are per step; dt only advances the clock."""
    x0, y0, z0, r0, p0, yaw0 = state.ee
    lo, hi = WORKSPACE.low, WORKSPACE.high
    x = min(hi[0], max(lo[0], x0 + _num(action.dx)))
    y = min(hi[1], max(lo[1], y0 + _num(action.dy)))
    z = min(hi[2], max(lo[2], z0 + _num(action.dz)))
    roll = min(ROT_LIMIT, max(-ROT_LIMIT, r0 + _num(action.droll)))
    pitch = min(ROT_LIMIT, max(-ROT_LIMIT, p0 + _num(action.dpitch)))
    dyaw = _num(action.dyaw)
    yaw = _wrap(yaw0 + dyaw)
    objects = {o.name: o for o in state.objects}
    drawer = state.drawer

    # the drawer: pulled/pushed by its handle, or pushed closed at its front
    if drawer is not None:
        a0, _ = drawer.local(x0, y0)
        a1, b1 = drawer.local(x, y)
        new_open, a_ee = drawer.opening, None
        if drawer.held:  # the ee stays on the handle along the axis
            new_open = min(1.0, max(0.0, drawer.opening + (a1 - a0) / TRAVEL))
            a_ee = a0 + (new_open - drawer.opening) * TRAVEL
        elif (z < CAB_HEIGHT and abs(b1) < CAB_WIDTH / 2
              and a0 >= drawer.front - 1e-9 and a1 < drawer.front):
            new_open = min(drawer.opening, max(0.0, (a1 - CAB_DEPTH / 2) / TRAVEL))
            a_ee = max(a1, CAB_DEPTH / 2)  # a closed front stops the ee
        if a_ee is not None:
            shift = (new_open - drawer.opening) * TRAVEL
            x, y, _ = drawer.world(a_ee, b1)
            ux, uy = drawer.axis
            for n, o in objects.items():
                if o.in_drawer:
                    pos = (o.pos[0] + shift * ux, o.pos[1] + shift * uy, o.pos[2])
                    objects[n] = replace(o, pos=pos)
            drawer = replace(drawer, opening=new_open)
            if drawer.held and math.dist((x, y, z), drawer.handle) > HANDLE_SLIP:
                drawer = replace(drawer, held=False)

    # the held object follows the gripper (and swings upright when it can hang)
    grasped, grasp_dz = state.grasped, state.grasp_dz
    if grasped is not None:
        o = objects[grasped]
        k = o.kind
        surface, _ = _support(replace(state, drawer=drawer), x, y)
        if not o.upright and o.tall and z - (k.height - k.size) >= surface + 0.005:
            o, grasp_dz = replace(o, upright=True), -(k.height / 2 - k.size)
        cz = max(z + grasp_dz, surface + o.extent / 2)
        o = replace(o, pos=(x, y, cz), yaw=_wrap(o.yaw + dyaw))
        objects[grasped] = o

    # knocking and pushing
    seg0, seg1 = np.array([x0, y0]), np.array([x, y])
    if math.hypot(x - x0, y - y0) > 1e-4:
        direction = (seg1 - seg0) / np.linalg.norm(seg1 - seg0)
        for n, o in list(objects.items()):
            if n == grasped or o.in_drawer or o.kind.height < 0.01:
                continue
            top, rad = o.bottom + o.extent, o.kind.size + FINGER
            if not (z0 < top and z < top and z0 >= o.bottom - 0.02):
                continue
            if (_footprint_dist(o, x0, y0) < rad
                    or _seg_point_dist(seg0, seg1, np.array(o.pos[:2])) >= rad):
                continue
            if o.upright and o.tall:
                k = o.kind
                cx, cy = np.array(o.pos[:2]) + direction * k.height / 2
                objects[n] = replace(o, upright=False, yaw=math.atan2(direction[1], direction[0]),
                                     pos=(float(cx), float(cy), o.bottom + k.size))
            else:
                away = np.array(o.pos[:2]) - seg1
                norm = float(np.linalg.norm(away))
                u = away / norm if norm > 1e-6 else direction
                px, py = np.clip(seg1 + u * (rad + 0.002), -0.45, 0.45)
                objects[n] = replace(o, pos=(float(px), float(py), o.pos[2]))

    # the gripper: close -> grasp, open -> release
    g_old = state.gripper
    g = min(1.0, max(0.0, float(action.gripper))) if math.isfinite(action.gripper) else g_old
    if g_old >= CLOSED > g and grasped is None and not (drawer is not None and drawer.held):
        best, best_d = None, math.inf
        for n, o in objects.items():
            if not o.graspable:
                continue
            if o.in_drawer and drawer is not None and not drawer.over_tray(o.pos[0], o.pos[1]):
                continue
            d = _footprint_dist(o, x, y)
            if d < o.kind.size + FINGER and abs(z - o.pos[2]) <= o.extent / 2 + 0.02 and d < best_d:
                best, best_d = n, d
        if drawer is not None and math.dist((x, y, z), drawer.handle) < min(HANDLE_REACH, best_d):
            drawer = replace(drawer, held=True)
        elif best is not None:
            o = objects[best]
            objects[best] = replace(o, pos=(x, y, o.pos[2]), in_drawer=False)
            grasped, grasp_dz = best, o.pos[2] - z
    elif g_old < CLOSED <= g:
        if drawer is not None and drawer.held:
            drawer = replace(drawer, held=False)
        if grasped is not None:
            o = objects[grasped]
            tmp = replace(state, drawer=drawer)
            surface, in_tray = _support(tmp, o.pos[0], o.pos[1])
            drop = o.bottom - surface
            if o.tall and o.upright and drop > GENTLE_DROP:
                o = replace(o, upright=False)
                o = replace(o, pos=(o.pos[0] + math.cos(o.yaw) * o.kind.height / 2 * 0.5,
                                    o.pos[1] + math.sin(o.yaw) * o.kind.height / 2 * 0.5, o.pos[2]))
                surface, in_tray = _support(tmp, o.pos[0], o.pos[1])
            pos = (o.pos[0], o.pos[1], surface + o.extent / 2)
            objects[grasped] = replace(o, pos=pos, in_drawer=in_tray)
            grasped, grasp_dz = None, 0.0

    return replace(state, ee=(x, y, z, roll, pitch, yaw), gripper=g, drawer=drawer,
                   grasped=grasped, grasp_dz=grasp_dz, t=state.t + dt, steps=state.steps + 1,
                   objects=tuple(objects[o.name] for o in state.objects))
