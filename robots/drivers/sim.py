"""SimDriver: the simulated tabletop arm behind the same RobotDriver interface as a real arm.

The embedded default: tests and `evalfleet demo` run the real bridge against it. Each
`apply()` advances the world (`robots.sim.world`) by one control period (1 / control_hz);
`observe()` renders the configured cameras (`robots.sim.render`) and reports the skill's
success predicate (`robots.sim.predicates`) as `sim_success`.

Privileged state (for the scripted oracle only; a vision policy must never see it), from
`privileged_state()`, a JSON-able dict:

    {"ee": [x, y, z, roll, pitch, yaw], "gripper": float (0 closed .. 1 open),
     "grasped": name | "drawer" (holding its handle) | None,
     "skill": str, "target": str, "destination": str | None,
     "objects": {name: {"pos": [x, y, z], "yaw": float, "upright": bool,
                        "in_drawer": bool, "graspable": bool}},
     "drawer": {"pos": [x, y, z], "handle": [x, y, z], "opening": float,
                "axis": [ux, uy]} | None}

Units: metres and radians, robot base frame, table top at z = 0. An object's `pos` is its
centre. The drawer's `pos` is the centre of its tray floor (it moves with the opening);
`axis` points out of the cabinet, the direction that opens the drawer.

How to script an oracle (the world's rules are in robots/sim/world.py's docstring):
- Travel at a safe height (z >= 0.18 m): the ee moving sideways below an object's top knocks
  it (tall objects topple, others are pushed). Descend vertically onto a target.
- Grasp: move the ee to the object's `pos` (within ~2 cm horizontally), then close the
  gripper (gripper < 0.5; it grasps on the open -> closed transition, so open it first).
- Place: lower the held object until its bottom is within 3 cm of the surface below, then
  open the gripper (released higher, a tall object falls over).
- Place upright: grasp the lying object at its `pos`, lift (>= 10 cm) so it hangs upright,
  lower it to the table, open the gripper.
- Knock over: from beside the target (its footprint radius + 2 cm away) at half its height,
  move horizontally through it.
- Open the drawer: with the gripper open, go to the handle (within 4 cm), close the gripper,
  then move along +axis until opening > 0.7 (a full stroke is 0.15 m), open the gripper.
- Close the drawer: either grasp the handle and move along -axis, or, with the ee below the
  cabinet's height (0.10 m) and in front of the tray's front, move along -axis.
- Place into the drawer: carry the object above the drawer's `pos` (above z 0.15), lower it to
  a few cm above the tray floor, open the gripper. Pick from the drawer: descend onto the
  object's `pos` in the tray, grasp, lift.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np

from robots.drivers.base import (
    CameraSpec,
    Capabilities,
    DriverObservation,
    NotReady,
    ResetResult,
    RobotDriver,
)
from robots.sim import predicates
from robots.sim.render import CAMERAS, Renderer
from robots.sim.world import WorldState, make_world, step
from robots.types import Action, ActionSpace, SceneSpec


@dataclass(frozen=True)
class SimOptions:
    cameras: tuple[CameraSpec, ...] = (CameraSpec("main", 256, 256),)
    control_hz: float = 5.0
    seed: int | None = None  # overrides every scene's seed when set

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("the sim needs at least one camera")
        for c in self.cameras:
            if c.name not in CAMERAS:
                raise ValueError(f"unknown sim camera {c.name!r}; the sim has {CAMERAS}")
            if not (16 <= c.height <= 2160 and 16 <= c.width <= 3840):
                raise ValueError(f"camera {c.name!r}: size {c.height}x{c.width} out of range")
        if len({c.name for c in self.cameras}) != len(self.cameras):
            raise ValueError("camera names must be unique")
        if not self.control_hz > 0:
            raise ValueError("control_hz must be > 0")


class SimDriver(RobotDriver):
    """The simulated tabletop arm. Thread-safe: one lock around the world."""

    def __init__(self, options: SimOptions | None = None, **kwargs: object) -> None:
        opts = options or SimOptions()
        if kwargs:
            opts = replace(opts, **kwargs)  # type: ignore[arg-type]
        self.options = opts
        self._lock = threading.Lock()
        self._scene: SceneSpec | None = None
        self._state: WorldState | None = None
        self._renderer: Renderer | None = None
        self._frames: tuple[int, dict[str, np.ndarray]] | None = None
        self._connected = False
        self._holding = False

    # ------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        self._connected = True

    def close(self) -> None:
        with self._lock:
            self._connected = False
            self._state = self._renderer = self._frames = None

    def capabilities(self) -> Capabilities:
        return Capabilities(driver="sim", cameras=self.options.cameras,
                            action_space=ActionSpace(control_hz=self.options.control_hz),
                            needs_operator_reset=False, privileged_state=True, tags=("drawer",))

    def reset(self, scene: SceneSpec) -> ResetResult:
        if self.options.seed is not None:
            scene = replace(scene, seed=self.options.seed)
        world = make_world(scene)  # raises ValueError on a scene the sim cannot set up
        renderer = Renderer(scene, world, self.options.cameras)
        with self._lock:
            self._scene, self._state, self._renderer, self._frames = scene, world, renderer, None
            self._holding = False
        return ResetResult(ready=True)

    # ------------------------------------------------------------ control
    def _require(self) -> tuple[SceneSpec, WorldState, Renderer]:
        if self._state is None or self._scene is None or self._renderer is None:
            raise NotReady("SimDriver: call reset(scene) before observe/apply")
        return self._scene, self._state, self._renderer

    def apply(self, action: Action) -> None:
        with self._lock:
            _, state, _ = self._require()
            self._state = step(state, action, 1.0 / self.options.control_hz)
            self._holding = False

    def hold(self) -> None:
        """Protective stop: the sim arm simply stays where it is (no motion, gripper kept).

        Safe to call at any time, also before the first reset (the bridge's e-stop may).
        Observations report `info["holding"]` until the next apply()."""
        self._holding = True

    def observe(self) -> DriverObservation:
        with self._lock:
            scene, state, renderer = self._require()
            if self._frames is None or self._frames[0] != state.steps:
                self._frames = (state.steps, renderer.render(state))
            frames = self._frames[1]
            ok = predicates.success(state, scene)
        return DriverObservation(
            frames=dict(frames),
            proprio=(*state.ee, state.gripper),
            sim_success=ok,
            info={"sim_step": state.steps, "sim_time": state.t, "holding": self._holding},
        )

    # ------------------------------------------------------------ privileged
    @property
    def state(self) -> WorldState | None:
        """The world state itself (tests and tools; the oracle uses privileged_state())."""
        return self._state

    def privileged_state(self) -> dict | None:
        with self._lock:
            if self._state is None or self._scene is None:
                return None
            return privileged_dict(self._state, self._scene)


def privileged_dict(state: WorldState, scene: SceneSpec) -> dict:
    """The JSON-able privileged-state contract (see the module docstring)."""
    d = state.drawer
    grasped = "drawer" if d is not None and d.held else state.grasped
    return {
        "ee": [float(v) for v in state.ee],
        "gripper": float(state.gripper),
        "grasped": grasped,
        "skill": scene.skill,
        "target": scene.target,
        "destination": scene.destination,
        "objects": {
            o.name: {
                "pos": [float(v) for v in o.pos],
                "yaw": float(o.yaw),
                "upright": bool(o.upright),
                "in_drawer": bool(o.in_drawer),
                "graspable": bool(o.graspable),
            }
            for o in state.objects
        },
        "drawer": None
        if d is None
        else {
            "pos": [float(v) for v in d.tray_center],
            "handle": [float(v) for v in d.handle],
            "opening": float(d.opening),
            "axis": [float(v) for v in d.axis],
        },
    }
