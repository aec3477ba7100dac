"""FrankaDriver: a Franka Research 3 (or Panda) through `franky-control` (`pip install
'evalfleet[franka]'`, import name `franky`), in joint space.

Why franky-control and not panda-python: both wheels bundle their own libfranka (and its
shared libraries), so they cannot be imported into one process, and a lab has to pick one.
franky is chosen because (1) its motions are asynchronous and preemptible — `robot.move(m,
asynchronous=True)` returns at once and the next command re-plans from the current state with
Ruckig under velocity/acceleration/jerk limits, which is exactly one bridge step per control
period; (2) it has joint *velocity* motions (DROID's and openpi's `joint_velocity[8]` space)
and a deliberate stop per control mode (`JointStopMotion`, `JointVelocityStopMotion`);
(3) `relative_dynamics_factor` scales every motion's limits at the robot level, a second
speed layer under the bridge's; (4) it publishes wheels for FR3 and Panda across libfranka
versions. panda-python drives the arm through blocking `move_to_*` calls or a 1 kHz
controller context that Python must feed, which fits a per-step bridge less well.

Spaces (config `space`):
- `joint_position[8]`: joint_1..joint_7 targets (rad) + gripper. The declared limits are the
  model's published joint limits (FR3 or Panda, Franka's "robot and interface
  specifications") less `joint_margin`; the driver also moves each joint at most
  `max_joint_speed / control_hz` rad from where it is per command (the arm's own step limit,
  which the bridge cannot know). Sent as `JointMotion(target)`, asynchronous.
- `joint_velocity[8]`: joint velocities (rad/s) within ±`max_joint_speed` (capped by the
  model's velocity limits) + gripper. The driver also stops a joint that would cross its
  range within one control period. Sent as `JointVelocityMotion(v, duration=...)`: franky
  holds the velocity for `velocity_timeout_s` (default two control periods) and then stops the
  arm by itself, so a silent bridge cannot leave the arm moving.
The gripper dimension (both spaces) is the Franka Hand's opening, `closed_is_1` by default
(DROID's/openpi's; `gripper: open_is_1` for RT-2-style policies). A command whose opening
is below `grasp_below` grasps with force (`Gripper.grasp_async(0, speed, force,
epsilon_outer=1)`: an object of any width), otherwise the fingers move to the width
(`Gripper.move_async`); a new gripper command is only sent when the target width changed by
more than `gripper_deadband` metres and the previous one has finished.

State: joint_1..joint_7 (rad), gripper (same convention as the action), ee_x ee_y ee_z (m),
ee_roll ee_pitch ee_yaw (rad, from `current_cartesian_state.pose.end_effector_pose`).

Hold, watchdog and e-stop (the bridge calls `hold()` for all three): the running motion is
preempted by the stop motion of its control mode (`JointStopMotion` /
`JointVelocityStopMotion`: a jerk-limited deceleration, the arm then holds its pose under
the controller); if that fails (the arm is in a reflex error), `Robot.stop()` preempts the
control loop. The gripper is left as it is: stopping a grasp would drop what it holds.
Motion errors (reflexes) are not recovered silently mid-episode: the next command raises and
the bridge holds; `reset()` calls `recover_from_errors()` with the operator present. A lost
connection (`NetworkException`) is re-established on the next call.

`observe().info["sent"]` is what the driver really sent last (`SentCommand`: the SDK call,
its values in rad or rad/s, the dimensions the driver clipped beyond the bridge, the
gripper closed fraction). Not yet run on real hardware (docs/drivers.md).
"""

from __future__ import annotations

import importlib
import logging
import math
from types import ModuleType
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from robots.drivers.arm_common import (
    DriverError,
    SentCommand,
    clip_vector,
    from_closed,
    guard_joint_velocity,
    matrix_to_rpy,
    operator_instructions,
    step_toward,
    to_closed,
)
from robots.drivers.base import Capabilities, DriverObservation, ResetResult, RobotDriver
from robots.drivers.cameras import CameraConfig, CameraRig
from robots.spaces import ActionSpec, ArmCommand, GripperConvention, SpaceKind, StateSpec
from robots.types import Action, ActionSpace, SceneSpec

log = logging.getLogger(__name__)

JOINTS = tuple(f"joint_{i}" for i in range(1, 8))
#: Franka's published joint position limits (rad) and velocity limits (rad/s).
LIMITS: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    "fr3": ((-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159),
            (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159),
            (2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26)),
    "panda": ((-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
              (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
              (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)),
}
STATE = StateSpec((*JOINTS, "gripper", "ee_x", "ee_y", "ee_z", "ee_roll", "ee_pitch", "ee_yaw"),
                  ("rad",) * 7 + ("1",) + ("m",) * 3 + ("rad",) * 3)


class FrankaConfig(BaseModel):
    """The `--config` mapping of `robots.drivers.franka:FrankaDriver`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = Field(min_length=1)  # the FCI address, e.g. 172.16.0.2
    model: Literal["fr3", "panda"] = "fr3"
    space: Literal["joint_position", "joint_velocity"] = "joint_position"
    control_hz: float = Field(default=15.0, gt=0, le=100)
    relative_dynamics_factor: float = Field(default=0.1, gt=0, le=1)  # scales velocity/accel/jerk limits
    joint_margin: float = Field(default=0.05, ge=0, le=0.5)  # rad kept clear of each joint limit
    max_joint_speed: float = Field(default=0.5, gt=0, le=2.5)  # rad/s, both spaces (see docstring)
    velocity_timeout_s: float | None = Field(default=None, gt=0, le=2)  # joint_velocity; None: 2 periods
    gripper: Literal["closed_is_1", "open_is_1"] = "closed_is_1"
    use_gripper: bool = True
    gripper_speed: float = Field(default=0.1, gt=0, le=0.2)  # m/s
    gripper_force: float = Field(default=20.0, gt=0, le=70)  # N, for grasps
    gripper_deadband: float = Field(default=0.005, ge=0, le=0.02)  # m
    grasp_below: float = Field(default=0.1, ge=0, le=0.5)  # opening fraction under which a close grasps
    home: tuple[float, ...] | None = None  # joint angles (rad) reset() moves to, or None
    home_timeout_s: float = Field(default=20.0, gt=0, le=120)
    ignore_realtime: bool = False  # franky's RealtimeConfig.Ignore (no PREEMPT_RT kernel)
    cameras: tuple[CameraConfig, ...] = Field(min_length=1)

    @field_validator("home")
    @classmethod
    def _home(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and (len(v) != 7 or not all(math.isfinite(x) for x in v)):
            raise ValueError("home: seven finite joint angles in rad, or null")
        return v


def joint_bounds(cfg: FrankaConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The declared joint_position range: the model's limits less the margin."""
    low, high, _ = LIMITS[cfg.model]
    return tuple(lo + cfg.joint_margin for lo in low), tuple(hi - cfg.joint_margin for hi in high)


def velocity_bound(cfg: FrankaConfig) -> tuple[float, ...]:
    return tuple(min(cfg.max_joint_speed, v) for v in LIMITS[cfg.model][2])


def action_spec(cfg: FrankaConfig) -> ActionSpec:
    conv = GripperConvention(cfg.gripper)
    if cfg.space == "joint_position":
        low, high = joint_bounds(cfg)
        return ActionSpec(SpaceKind.JOINT_POSITION, (*JOINTS, "gripper"), ("rad",) * 7 + ("1",),
                          (*low, 0.0), (*high, 1.0), conv, cfg.control_hz)
    v = velocity_bound(cfg)
    return ActionSpec(SpaceKind.JOINT_VELOCITY, (*JOINTS, "gripper"), ("rad/s",) * 7 + ("1",),
                      (*(-x for x in v), 0.0), (*v, 1.0), conv, cfg.control_hz)


def quat_to_rpy(q: Any) -> tuple[float, float, float]:
    """franky's [x, y, z, w] quaternion -> roll, pitch, yaw (R = Rz Ry Rx)."""
    x, y, z, w = (float(v) for v in np.asarray(q, dtype=np.float64).reshape(-1))
    n = math.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / n, y / n, z / n, w / n
    m = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return matrix_to_rpy(m)


def _types(sdk: ModuleType, *names: str) -> tuple[type, ...]:
    return tuple(t for t in (getattr(sdk, n, None) for n in names) if isinstance(t, type))


class FrankaDriver(RobotDriver):
    """A Franka arm + Franka Hand + cameras. `sdk`: the `franky` module (tests pass a fake)."""

    def __init__(self, config: FrankaConfig | None = None, *, sdk: ModuleType | None = None,
                 **options: Any) -> None:
        self.config = config if config is not None else FrankaConfig(**options)
        self._sdk_given = sdk
        self.sdk: Any = None
        self.robot: Any = None
        self.gripper: Any = None
        self.rig = CameraRig(self.config.cameras)
        self.spec = action_spec(self.config)
        self._max_width = 0.08
        self._grip_future: Any = None
        self._grip_sent: float | None = None  # last width commanded (m)
        self._sent: SentCommand | None = None
        self._motion_error = ""
        self._holding = False
        self.reconnects = 0

    # ------------------------------------------------------------------ lifecycle
    def _import(self) -> Any:
        if self._sdk_given is not None:
            return self._sdk_given
        try:
            return importlib.import_module("franky")
        except ImportError as e:
            raise DriverError(f"franka: franky is not installed ({e}); pip install "
                              "'evalfleet[franka]' (franky-control, not panda-python)") from e

    def _open_robot(self) -> None:
        sdk, c = self.sdk, self.config
        try:
            rt = sdk.RealtimeConfig.Ignore if c.ignore_realtime else sdk.RealtimeConfig.Enforce
            robot = sdk.Robot(c.host, realtime_config=rt)
            robot.recover_from_errors()
            robot.relative_dynamics_factor = c.relative_dynamics_factor
            gripper = sdk.Gripper(c.host) if c.use_gripper else None
            max_width = float(gripper.max_width) if gripper is not None else 0.08
        except Exception as e:
            raise DriverError(f"franka at {c.host}: cannot connect ({type(e).__name__}: {e}); "
                              "check that FCI is active in Desk, the brakes are open and the "
                              "host is reachable") from e
        self.robot, self.gripper = robot, gripper
        self._max_width = max_width if max_width > 0 else 0.08

    def connect(self) -> None:
        self.sdk = self._import()
        self._open_robot()
        try:
            self.rig.open()
        except Exception:
            self._drop_robot()
            raise

    def _drop_robot(self) -> None:
        self.robot = self.gripper = self._grip_future = None

    def _live(self) -> Any:
        """The robot, reconnecting once when the connection was lost."""
        if self.robot is None:
            if self.sdk is None:
                raise DriverError("franka: not connected; call connect() first")
            self._open_robot()
            self.reconnects += 1
            log.warning("franka at %s: reconnected", self.config.host)
        return self.robot

    def _lost(self, e: BaseException) -> bool:
        if isinstance(e, _types(self.sdk, "NetworkException")):
            self._drop_robot()
            return True
        return False

    def close(self) -> None:
        try:
            if self.robot is not None:
                self.hold()
        except Exception:
            log.warning("franka: hold on close failed", exc_info=True)
        finally:
            self._drop_robot()
            self.rig.close()

    # ------------------------------------------------------------------ capabilities
    def capabilities(self) -> Capabilities:
        return Capabilities(driver="franky", cameras=self.rig.specs,
                            action_space=ActionSpace(control_hz=self.config.control_hz),
                            needs_operator_reset=True, action=self.spec, state=STATE)

    # ------------------------------------------------------------------ reset
    def reset(self, scene: SceneSpec) -> ResetResult:
        robot = self._live()
        if not scene.operator_confirmed:
            if self.config.home is not None:
                self._go_home(robot, self.config.home)
            return ResetResult(False, operator_instructions(scene, f"franka {self.config.model}"))
        if robot.has_errors and not robot.recover_from_errors():
            return ResetResult(False, "franka: the arm still reports errors after recovery; clear "
                                      "them in Desk (release the e-stop, open the brakes), then confirm")
        self._motion_error, self._holding = "", False
        return ResetResult(True)

    def _go_home(self, robot: Any, home: tuple[float, ...]) -> None:
        try:
            if robot.is_in_control:  # a (stop) motion of another control mode still runs
                robot.join_motion(2.0)
            robot.move(self.sdk.JointMotion(list(home)), asynchronous=True)
            done = robot.join_motion(self.config.home_timeout_s)
        except Exception as e:
            self._lost(e)
            raise DriverError(f"franka: moving home failed ({type(e).__name__}: {e}); recover in "
                              "Desk, then reset again") from e
        if not done:
            self.hold()
            raise DriverError(f"franka: home not reached within {self.config.home_timeout_s:g} s; "
                              "the arm was stopped: check for obstacles, then reset again")

    # ------------------------------------------------------------------ observe
    def observe(self) -> DriverObservation:
        robot = self._live()
        try:
            q = [float(v) for v in np.asarray(robot.current_joint_state.position).reshape(-1)]
            pose = robot.current_cartesian_state.pose.end_effector_pose
            xyz = [float(v) for v in np.asarray(pose.translation).reshape(-1)]
            width = float(self.gripper.width) if self.gripper is not None else self._max_width
        except Exception as e:
            if self._lost(e):
                raise DriverError(f"franka at {self.config.host}: connection lost while reading "
                                  f"the state ({e}); reconnecting on the next call") from e
            raise
        closed = 1.0 - min(max(width / self._max_width, 0.0), 1.0)
        g = from_closed(closed, GripperConvention(self.config.gripper))
        proprio = (*q, g, *xyz, *quat_to_rpy(pose.quaternion))
        info: dict[str, Any] = {"holding": self._holding, "gripper_width_m": width,
                                "sent": self._sent.to_info() if self._sent else None}
        if self._motion_error:
            info["motion_error"] = self._motion_error
        return DriverObservation(frames=self.rig.read(), proprio=proprio, info=info)

    # ------------------------------------------------------------------ act
    def apply(self, action: Action) -> None:
        raise TypeError("FrankaDriver speaks joint space; the bridge sends apply_command(ArmCommand)")

    def apply_command(self, command: ArmCommand) -> None:
        v = command.values
        if len(v) != 8:
            raise ValueError(f"franka {self.spec.label}: command has {len(v)} values")
        if self._motion_error:
            raise DriverError(f"franka: the last motion failed ({self._motion_error}); the arm is "
                              "stopped until an operator resets it")
        robot = self._live()
        sdk, c = self.sdk, self.config
        try:
            q = tuple(float(x) for x in np.asarray(robot.current_joint_positions).reshape(-1))
            low, high = joint_bounds(c)
            if c.space == "joint_position":
                target, hit = clip_vector(v[:7], low, high, JOINTS)
                step = c.max_joint_speed / c.control_hz
                target, hit2 = step_toward(q, target, (step,) * 7, JOINTS)
                motion = sdk.JointMotion(list(target))
                sent = SentCommand("JointMotion", target, "rad", tuple(dict.fromkeys(hit + hit2)))
            else:
                vmax = velocity_bound(c)
                vel, hit = clip_vector(v[:7], tuple(-x for x in vmax), vmax, JOINTS)
                vel, hit2 = guard_joint_velocity(q, vel, low, high, 1.0 / c.control_hz, JOINTS)
                hold_s = c.velocity_timeout_s or 2.0 / c.control_hz
                motion = sdk.JointVelocityMotion(list(vel), duration=sdk.Duration(int(hold_s * 1000)))
                sent = SentCommand("JointVelocityMotion", vel, "rad/s", tuple(dict.fromkeys(hit + hit2)))
            robot.move(motion, asynchronous=True)
        except Exception as e:
            if self._lost(e):
                raise DriverError(f"franka at {c.host}: connection lost ({e}); reconnecting on "
                                  "the next call") from e
            if isinstance(e, _types(sdk, "ControlException", "CommandException",
                                    "InvalidOperationException")):
                self._motion_error = f"{type(e).__name__}: {e}"
                raise DriverError(f"franka: motion refused ({self._motion_error}); the arm is held "
                                  "until an operator resets it") from e
            raise
        self._holding = False
        grip = self._gripper(float(v[7]))
        self._sent = SentCommand(sent.call, sent.values, sent.units, sent.driver_clipped, grip)

    def _gripper(self, value: float) -> float | None:
        """Send the gripper command when it changed and the last one finished; the closed
        fraction sent, or None."""
        if self.gripper is None:
            return None
        c = self.config
        closed = to_closed(value, GripperConvention(c.gripper))
        width = (1.0 - closed) * self._max_width
        if self._grip_sent is not None and abs(width - self._grip_sent) <= c.gripper_deadband:
            return None
        if self._grip_future is not None and not self._grip_future.wait(0):
            return None  # the previous gripper command is still running
        if 1.0 - closed < c.grasp_below:
            self._grip_future = self.gripper.grasp_async(0.0, c.gripper_speed, c.gripper_force,
                                                         epsilon_inner=0.005, epsilon_outer=1.0)
        else:
            self._grip_future = self.gripper.move_async(width, c.gripper_speed)
        self._grip_sent = width
        return closed

    # ------------------------------------------------------------------ stop
    def hold(self) -> None:
        """Stop motion in the active control mode (see the module docstring)."""
        self._holding = True
        robot = self.robot
        if robot is None:
            return  # not connected: nothing moves
        sdk = self.sdk
        try:
            if not robot.is_in_control:
                return  # no motion generator runs: the arm holds its pose
            stop = (sdk.JointStopMotion() if self.config.space == "joint_position"
                    else sdk.JointVelocityStopMotion())
            robot.move(stop, asynchronous=True)
            self._sent = SentCommand(type(stop).__name__, (), "", (), None)
        except Exception as e:  # noqa: BLE001 - fall back to preempting the control loop
            log.warning("franka: stop motion failed (%s: %s); calling Robot.stop()", type(e).__name__, e)
            try:
                robot.stop()
                self._sent = SentCommand("Robot.stop", (), "", (), None)
            except Exception as e2:
                self._lost(e2)
                raise DriverError(f"franka: cannot stop the arm ({type(e2).__name__}: {e2}); use "
                                  "the hardware e-stop") from e2
