"""SimDriver: the simulated tabletop arm behind the same RobotDriver interface as a real arm.

The embedded default: tests and `evalfleet demo` run the real bridge against it. Each
`apply()` advances the world (`robots.sim.world`) by one control period (1 / control_hz);
`observe()` renders the configured cameras (`robots.sim.render`) and reports the skill's
success predicate (`robots.sim.predicates`) as `sim_success`.

Two action spaces, chosen per arm (`SimOptions.space`):
- `ee_delta` (the default, RT-2's): `apply()` / `apply_command()` move the ee by the deltas.
  Capabilities declare RT-2's ee_delta[7] and the EE_STATE proprio (ee_x..ee_yaw, gripper).
- `joint_position`: a kinematic UR5e (robots/sim/kinematics.py, published DH parameters)
  whose tool drives the same world. `apply_command(ArmCommand)` takes 7 values: joint targets
  j1..j6 (rad, within the joint ranges) and the gripper (0 closed .. 1 open). Each step moves
  every joint towards its target by at most `max_joint_speed / control_hz` rad, computes the
  tool pose by forward kinematics and steps the world with that ee motion, so every world
  rule (grasp, push, drawer) applies unchanged. When the world stops the ee where the arm
  would have gone (the Workspace box, the roll/pitch limit, a closed drawer front), the joints
  follow the world's ee (a few IK iterations). The state vector (proprio) is, in this order,
  j1..j6 (rad), gripper (1), ee_x, ee_y, ee_z (m), ee_roll, ee_pitch, ee_yaw (rad). The arm
  starts every episode at the world's HOME pose (`kinematics.home_joints()`).

Cameras: `main` (alias `front`), external, behind the robot; `wrist`, on the gripper looking
down (role wrist). Both spaces have both.

Privileged state (for the scripted oracle only; a vision policy must never see it), from
`privileged_state()`, a JSON-able dict:

    {"ee": [x, y, z, roll, pitch, yaw], "gripper": float (0 closed .. 1 open),
     "joints": [j1, .., j6] (joint_position arms only: the key is absent on ee_delta arms),
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

import math
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
from robots.sim import kinematics, predicates
from robots.sim.render import CAMERAS, Renderer, camera_role
from robots.sim.world import WorldState, make_world, step
from robots.spaces import (
    ActionSpec,
    ArmCommand,
    GripperConvention,
    SpaceKind,
    StateSpec,
)
from robots.types import Action, ActionSpace, SceneSpec

SIM_SPACES = (SpaceKind.EE_DELTA, SpaceKind.JOINT_POSITION)
_JOINT_STATE_NAMES = (*kinematics.JOINT_NAMES, "gripper", "ee_x", "ee_y", "ee_z", "ee_roll",
                      "ee_pitch", "ee_yaw")
JOINT_STATE = StateSpec(_JOINT_STATE_NAMES, ("rad",) * 6 + ("1",) + ("m",) * 3 + ("rad",) * 3)


def joint_action_spec(control_hz: float) -> ActionSpec:
    """The sim's joint_position[7] space: UR5e joint targets (rad) + gripper (0 closed..1 open)."""
    return ActionSpec(SpaceKind.JOINT_POSITION, (*kinematics.JOINT_NAMES, "gripper"),
                      ("rad",) * 6 + ("1",), (*kinematics.JOINT_LOW, 0.0),
                      (*kinematics.JOINT_HIGH, 1.0), GripperConvention.OPEN_IS_1, control_hz)


@dataclass(frozen=True)
class SimOptions:
    cameras: tuple[CameraSpec, ...] = (CameraSpec("main", 256, 256),)
    control_hz: float = 5.0
    seed: int | None = None  # overrides every scene's seed when set
    space: SpaceKind = SpaceKind.EE_DELTA  # ee_delta | joint_position (a str is accepted)
    max_joint_speed: float = math.pi / 2  # rad/s per joint, joint_position only (UR5e: pi)

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
        try:
            space = SpaceKind(self.space)
        except ValueError:
            raise ValueError(f"sim space {self.space!r}: use one of "
                             f"{[k.value for k in SIM_SPACES]}") from None
        if space not in SIM_SPACES:
            raise ValueError(f"sim space {space.value!r}: the sim arm speaks "
                             f"{[k.value for k in SIM_SPACES]}")
        if not (0 < self.max_joint_speed <= 10):
            raise ValueError(f"max_joint_speed {self.max_joint_speed} rad/s: use (0, 10]")
        # each camera's role follows from its name (wrist: on the gripper)
        cams = tuple(c if c.role is camera_role(c.name) else replace(c, role=camera_role(c.name))
                     for c in self.cameras)
        object.__setattr__(self, "cameras", cams)
        object.__setattr__(self, "space", space)


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
        self._joints: tuple[float, ...] | None = None  # joint_position arms

    @property
    def joint_space(self) -> bool:
        return self.options.space is SpaceKind.JOINT_POSITION

    # ------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        self._connected = True

    def close(self) -> None:
        with self._lock:
            self._connected = False
            self._state = self._renderer = self._frames = None

    def capabilities(self) -> Capabilities:
        hz = self.options.control_hz
        if self.joint_space:
            return Capabilities(driver="sim", cameras=self.options.cameras,
                                action_space=ActionSpace(control_hz=hz), needs_operator_reset=False,
                                privileged_state=True, tags=("drawer",),
                                action=joint_action_spec(hz), state=JOINT_STATE)
        return Capabilities(driver="sim", cameras=self.options.cameras,
                            action_space=ActionSpace(control_hz=hz),
                            needs_operator_reset=False, privileged_state=True, tags=("drawer",))

    def reset(self, scene: SceneSpec) -> ResetResult:
        if self.options.seed is not None:
            scene = replace(scene, seed=self.options.seed)
        world = make_world(scene)  # raises ValueError on a scene the sim cannot set up
        renderer = Renderer(scene, world, self.options.cameras)
        joints = kinematics.home_joints(tuple(world.ee)) if self.joint_space else None
        with self._lock:
            self._scene, self._state, self._renderer, self._frames = scene, world, renderer, None
            self._holding = False
            self._joints = joints
        return ResetResult(ready=True)

    # ------------------------------------------------------------ control
    def _require(self) -> tuple[SceneSpec, WorldState, Renderer]:
        if self._state is None or self._scene is None or self._renderer is None:
            raise NotReady("SimDriver: call reset(scene) before observe/apply")
        return self._scene, self._state, self._renderer

    def apply(self, action: Action) -> None:
        if self.joint_space:
            raise TypeError("SimDriver: this arm speaks joint_position; send "
                            "apply_command(ArmCommand(j1..j6, gripper)), not an ee_delta Action")
        with self._lock:
            _, state, _ = self._require()
            self._state = step(state, action, 1.0 / self.options.control_hz)
            self._holding = False

    def apply_command(self, command: ArmCommand) -> None:
        """One step in the declared space (the bridge's entry point); see the module docstring."""
        if not self.joint_space:
            super().apply_command(command)
            return
        v = command.values
        if len(v) != 7:
            raise ValueError(f"SimDriver joint_position[7]: command has {len(v)} values; send "
                             "j1..j6 (rad) and the gripper (0 closed .. 1 open)")
        with self._lock:
            _, state, _ = self._require()
            assert self._joints is not None
            dt = 1.0 / self.options.control_hz
            q, ee = joint_step(self._joints, v[:6], self.options.max_joint_speed * dt)
            g = float(v[6])
            dx, dy, dz, droll, dpitch, dyaw = ee_delta(state.ee, ee)
            action = Action(command.terminate, dx, dy, dz, droll, dpitch, dyaw, g)
            new = step(state, action, dt)
            if max(abs(x) for x in ee_delta(ee, new.ee)) > 1e-6:
                # the world stopped the ee short of the arm's motion: the joints follow it
                q = kinematics.ik(new.ee, q, iters=30).q
            self._state, self._joints = new, q
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
                self._frames = (state.steps, renderer.render(state, self._joints))
            frames = self._frames[1]
            ok = predicates.success(state, scene)
            joints = self._joints
        proprio = (*state.ee, state.gripper) if joints is None else (
            *joints, state.gripper, *state.ee)
        return DriverObservation(
            frames=dict(frames),
            proprio=proprio,
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
            return privileged_dict(self._state, self._scene, self._joints)

    @property
    def joints(self) -> tuple[float, ...] | None:
        """The arm's joint angles (joint_position arms after a reset), else None."""
        return self._joints


def joint_step(q0: tuple[float, ...], target: tuple[float, ...] | list[float],
               max_step: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Move each joint towards its target by at most `max_step` rad (a NaN target keeps the
    joint) -> (new joints, the tool's ee pose there). Pure."""
    q = []
    for a, t in zip(q0, target, strict=True):
        d = float(t) - a if math.isfinite(t) else 0.0
        q.append(a + min(max_step, max(-max_step, d)))
    return tuple(q), kinematics.ee_pose(q)


def ee_delta(ee0: tuple[float, ...], ee1: tuple[float, ...]
             ) -> tuple[float, float, float, float, float, float]:
    """The world's 6 ee deltas from pose ee0 to ee1 (yaw wrapped)."""
    d = [b - a for a, b in zip(ee0, ee1, strict=True)]
    return d[0], d[1], d[2], d[3], d[4], math.atan2(math.sin(d[5]), math.cos(d[5]))


def privileged_dict(state: WorldState, scene: SceneSpec,
                    joints: tuple[float, ...] | None = None) -> dict:
    """The JSON-able privileged-state contract (see the module docstring)."""
    d = state.drawer
    grasped = "drawer" if d is not None and d.held else state.grasped
    out = {
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
    if joints is not None:
        out["joints"] = [float(v) for v in joints]
    return out
