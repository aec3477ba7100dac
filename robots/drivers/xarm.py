"""XArmDriver: UFactory xArm 6 / xArm 7 through `xarm-python-sdk` (XArmAPI), in servo mode.

Install with `pip install evalfleet[xarm]`; `xarm.wrapper` is imported inside connect(), so
evalfleet imports without it. NOT YET RUN ON REAL HARDWARE (docs/drivers.md).

Units: the SDK takes mm and degrees unless told otherwise; this driver creates XArmAPI with
`is_radian=True` and passes `is_radian=True` on every call that takes it, so angles are rad;
positions are converted m <-> mm at the SDK boundary (evalfleet speaks m and rad).

Two action spaces (config `space`), both in servo mode (set_mode(1), set_state(0)):
- `joint_position` (default): joint_1..joint_N targets (rad), then the gripper; one
  `set_servo_angle_j(angles, is_radian=True)` per step. Servo mode executes a target at once,
  without planning, so the driver moves each joint at most `max_joint_speed / control_hz`
  towards the target per step (and keeps it inside the joint's range).
- `ee_delta` (RT-2's space): dx dy dz (m), droll dpitch dyaw (rad), then the gripper; one
  `set_servo_cartesian([x, y, z mm, roll, pitch, yaw rad], is_radian=True)` towards the current
  pose plus the delta, kept inside the configured workspace box.
Gripper (`gripper: true`, the xArm Gripper): `set_gripper_position(pos)` with pos 850 open ..
0 closed; convention explicit (`gripper_convention`; default closed_is_1 for joint_position,
open_is_1 for ee_delta); the state's `gripper` uses the same convention.

State (proprio): joint_1..joint_N (rad), ee_x ee_y ee_z (m), ee_roll ee_pitch ee_yaw (rad,
the SDK's roll/pitch/yaw), [gripper].

Stops: `hold()` (the bridge's hold, watchdog and e-stop path) is `set_state(4)`; the next
command re-enters servo mode. `estop()` is the SDK's `emergency_stop()`; commands are then
refused until an operator-confirmed reset. Non-zero return codes are kept with the
controller's error/warn codes (`get_err_warn_code`) in `last_fault`, named in the DriverError
and in `observe().info["sdk_error"]`; only an operator-confirmed reset clears errors. A
dropped connection (code -1) is reconnected (`connect()`, `reconnect_attempts`).
"""

from __future__ import annotations

import logging
import threading
import types
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from robots.drivers import arm_common as C
from robots.drivers.arm_limits import XARM_MODELS
from robots.drivers.base import Capabilities, DriverObservation, ResetResult, RobotDriver
from robots.drivers.cameras import CameraConfig
from robots.spaces import ActionSpec, ArmCommand, GripperConvention, SpaceKind, StateSpec
from robots.types import Action, ActionSpace, SceneSpec, Workspace

log = logging.getLogger(__name__)
EE = ("ee_x", "ee_y", "ee_z", "ee_roll", "ee_pitch", "ee_yaw")
GRIPPER_OPEN = 850.0  # xArm Gripper position: 850 open .. 0 closed
#: API return codes (xArm-Python-SDK doc/api/xarm_api_code.md) this driver names in errors.
API_CODES = {-9: "emergency stop", -8: "out of range", -7: "joint angle limit", -6: "cartesian pos limit",
             -2: "xArm is not ready (motion not enabled or state not set)", -1: "xArm is not connected",
             1: "uncleared controller errors", 2: "uncleared controller warnings", 3: "response timeout",
             9: "state is not ready to move", 12: "parameter error"}


@dataclass(frozen=True)
class XArmFault:
    """A non-zero SDK return code and the controller's error/warn codes at that moment."""

    call: str
    code: int
    error_code: int
    warn_code: int

    def line(self) -> str:
        return (f"{self.call} returned code {self.code} ({API_CODES.get(self.code, 'see xarm_api_code.md')}); "
                f"controller error {self.error_code}, warn {self.warn_code}")


class XArmConfig(BaseModel):
    """`bridge check robots.drivers.xarm:XArmDriver --config xarm7.yaml` builds XArmDriver(**yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = Field(min_length=1)
    model: Literal["xarm6", "xarm7"] = "xarm7"
    space: Literal["joint_position", "ee_delta"] = "joint_position"
    control_hz: float = Field(15.0, gt=0, le=250)
    max_joint_speed: float = Field(0.5, gt=0)  # rad/s per joint (capped by the data sheet)
    joint_low: tuple[float, ...] | None = None  # rad, within the data sheet's ranges
    joint_high: tuple[float, ...] | None = None
    max_step_m: float = Field(0.01, gt=0, le=0.05)  # ee_delta per step
    max_step_rad: float = Field(0.05, gt=0, le=0.5)
    max_tcp_speed: float = Field(0.25, gt=0)  # m/s (capped by the data sheet)
    workspace_low: tuple[float, float, float] = Workspace().low  # m, base frame: MEASURE it
    workspace_high: tuple[float, float, float] = Workspace().high
    home_joints: tuple[float, ...] | None = None  # rad; reset moves there (position mode)
    home_speed: float = Field(0.35, gt=0, le=1.0)  # rad/s
    gripper: bool = True  # the xArm Gripper on the tool flange
    gripper_speed: float = Field(3000.0, ge=1000, le=5000)  # r/min, the SDK's unit
    gripper_convention: Literal["open_is_1", "closed_is_1"] | None = None
    cameras: tuple[CameraConfig, ...] = ()  # robots/drivers/cameras.py: kind opencv | realsense
    camera_source: str | None = None  # package.module:Factory(camera specs) -> FrameSource
    reconnect_attempts: int = Field(2, ge=0, le=10)

    @model_validator(mode="after")
    def _within_data_sheet(self) -> XArmConfig:
        m = XARM_MODELS[self.model]
        if self.max_joint_speed > m.max_joint_speed:
            raise ValueError(f"max_joint_speed {self.max_joint_speed} rad/s exceeds the {m.name} data sheet "
                             f"({m.max_joint_speed:.3f} rad/s)")
        if self.max_tcp_speed > m.max_tcp_speed:
            raise ValueError(f"max_tcp_speed {self.max_tcp_speed} m/s exceeds the {m.name} data sheet "
                             f"({m.max_tcp_speed} m/s)")
        C.check_ranges(m.name, m.joint_low, m.joint_high, self.joint_low, self.joint_high, self.home_joints,
                       self.workspace_low, self.workspace_high)
        C.camera_specs(self.cameras)
        return self

    @property
    def dof(self) -> int:
        return XARM_MODELS[self.model].dof

    @property
    def low(self) -> tuple[float, ...]:
        return self.joint_low or XARM_MODELS[self.model].joint_low

    @property
    def high(self) -> tuple[float, ...]:
        return self.joint_high or XARM_MODELS[self.model].joint_high

    @property
    def ee_steps(self) -> tuple[float, ...]:
        m = min(self.max_step_m, self.max_tcp_speed / self.control_hz)
        return (m,) * 3 + (self.max_step_rad,) * 3


def _sdk() -> Any:
    try:
        from xarm.wrapper import XArmAPI
    except ImportError as e:
        raise C.DriverError(f"XArmDriver: xarm-python-sdk is not installed ({e}); "
                            "pip install 'evalfleet[xarm]'") from e
    return types.SimpleNamespace(XArmAPI=XArmAPI)


def _code(result: Any) -> int:
    """The return code of an SDK call: `code` or `(code, value)`; None (emergency_stop) is 0."""
    if result is None:
        return 0
    return int(result[0] if isinstance(result, tuple | list) else result)


class XArmDriver(RobotDriver):
    """An xArm in servo mode. Thread-safe: one lock around every SDK call."""

    def __init__(self, config: XArmConfig | None = None, *, sdk: Any = None,
                 frame_source: C.FrameSource | None = None, **fields: Any) -> None:
        """`fields`: XArmConfig's fields (what a YAML config holds). `sdk` (a namespace with
        XArmAPI) and `frame_source` replace what connect() would import or build (tests pass fakes)."""
        if config is not None and fields:
            raise TypeError(f"XArmDriver: give an XArmConfig or its fields, not both (got {sorted(fields)})")
        self.config = cfg = config or XArmConfig(**fields)
        self._sdk, self._frame_source = sdk, frame_source
        self._frames: C.FrameSource | None = None
        self._lock = threading.RLock()
        self._arm: Any = None
        self.joints = tuple(f"joint_{i}" for i in range(1, cfg.dof + 1))
        self.period_s = 1.0 / cfg.control_hz
        self.convention = (C.default_convention(cfg.space, cfg.gripper_convention) if cfg.gripper
                           else GripperConvention.NONE)
        self.last_sent: C.SentCommand | None = None
        self.last_fault: XArmFault | None = None
        self.reconnects = 0
        self._servo_ready = False  # servo mode entered (set_mode(1), set_state(0)) since the last stop
        self._estopped = False
        self._gripper_sent: float | None = None
        self._cameras = C.camera_specs(cfg.cameras)
        self._action = self.capabilities().action_spec

    @property
    def arm(self) -> str:
        return f"{XARM_MODELS[self.config.model].name} at {self.config.host}"

    # ------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Cameras first (nothing moves), then the arm: connect, refuse an arm in error, enable
        motion, gripper and servo mode; whatever opened is closed again on failure."""
        sdk = self._sdk or _sdk()
        self._frames = C.open_frame_source(self._frame_source, self.config.camera_source, self.config.cameras,
                                           self._cameras)
        try:
            with self._lock:
                self._open_arm(sdk)
        except BaseException:
            self.close()
            raise

    def _open_arm(self, sdk: Any) -> None:
        try:
            self._arm = sdk.XArmAPI(self.config.host, is_radian=True, do_not_open=True)
            self._arm.connect()
        except Exception as e:
            raise C.DriverError(f"XArmDriver: cannot connect to {self.arm}: {e}; check the address and that "
                                "the controller is on") from e
        if not self._arm.connected:
            raise C.DriverError(f"XArmDriver: cannot connect to {self.arm}; check the address and that the "
                                "controller is on")
        code, ew = self._arm.get_err_warn_code()
        if code != 0 or ew[0] != 0:
            self.last_fault = XArmFault("connect", int(code), int(ew[0]), int(ew[1]))
            raise C.DriverError(f"XArmDriver: {self.arm} reports controller error {ew[0]} (warn {ew[1]}); "
                                "see the xArm manual, clear it in UFactory Studio, then connect again")
        self._enable()

    def _enable(self) -> None:
        self._ok(self._arm.motion_enable(enable=True), "motion_enable")
        if self.config.gripper:
            self._ok(self._arm.set_gripper_enable(True), "set_gripper_enable")
            self._ok(self._arm.set_gripper_mode(0), "set_gripper_mode")
        self._servo()

    def _servo(self) -> None:
        self._ok(self._arm.set_mode(1), "set_mode(1)")
        self._ok(self._arm.set_state(0), "set_state(0)")
        self._servo_ready = True

    def close(self) -> None:
        """Stop the arm (hold: set_state(4)), disconnect, close the cameras; never raises."""
        with self._lock:
            if self._arm is not None:
                try:
                    self.hold()
                except Exception:
                    log.warning("XArmDriver: hold() while closing %s failed", self.arm, exc_info=True)
                try:
                    self._arm.disconnect()
                except Exception:
                    log.debug("XArmDriver: disconnect() failed", exc_info=True)
            self._arm = None
        if self._frames is not None:
            self._frames.close()
        self._frames = None

    def capabilities(self) -> Capabilities:
        cfg = self.config
        grip = ("gripper",) if cfg.gripper else ()
        g = len(grip)
        if cfg.space == "joint_position":
            action = ActionSpec(SpaceKind.JOINT_POSITION, (*self.joints, *grip), ("rad",) * cfg.dof + ("1",) * g,
                                (*cfg.low, *(0.0,) * g), (*cfg.high, *(1.0,) * g), self.convention, cfg.control_hz)
        else:
            action = C.ee_delta_action(cfg.ee_steps, self.convention, cfg.control_hz)
        state = StateSpec((*self.joints, *EE, *grip), ("rad",) * cfg.dof + ("m",) * 3 + ("rad",) * 3 + ("1",) * g)
        return Capabilities(driver="xarm", cameras=self._cameras, action_space=ActionSpace(control_hz=cfg.control_hz),
                            workspace=Workspace(cfg.workspace_low, cfg.workspace_high), needs_operator_reset=True,
                            action=action, state=state)

    # ------------------------------------------------------------ SDK calls, codes, reconnect
    def _ensure_connected(self) -> Any:
        arm = self._arm
        if arm is None:
            raise C.DriverError(f"XArmDriver: {self.arm} is not connected; call connect() first")
        if arm.connected:
            return arm
        for _ in range(self.config.reconnect_attempts):
            try:
                arm.connect()
            except Exception:
                log.warning("XArmDriver: reconnect to %s failed", self.arm, exc_info=True)
                continue
            if arm.connected:
                self.reconnects += 1
                self._servo_ready = False  # re-enter servo mode before the next motion
                return arm
        raise C.DriverError(f"XArmDriver: connection to {self.arm} dropped and {self.config.reconnect_attempts} "
                            "reconnect(s) failed; check the network and the controller, then restart the bridge")

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self._ensure_connected(), name)(*args, **kwargs)
        if _code(result) == -1:  # dropped during the call: reconnect, once more
            result = getattr(self._ensure_connected(), name)(*args, **kwargs)
        return result

    def _ok(self, result: Any, call: str) -> Any:
        """The result of a call that returned 0 (or 2: uncleared warnings; motion goes on, the
        warn code shows in observe().info); any other code raises DriverError, kept in last_fault."""
        fault = self._fault(result, call)
        if fault is None:
            return result
        raise C.DriverError(f"XArmDriver: {self.arm}: {fault.line()}; check the arm, then reset")

    def _fault(self, result: Any, call: str) -> XArmFault | None:
        code = _code(result)
        if code in (0, 2):
            return None
        err, warn = -1, -1
        try:
            c2, ew = self._arm.get_err_warn_code()
            if c2 == 0:
                err, warn = int(ew[0]), int(ew[1])
        except Exception:
            log.debug("XArmDriver: get_err_warn_code() failed", exc_info=True)
        self.last_fault = XArmFault(call, code, err, warn)
        return self.last_fault

    # ------------------------------------------------------------ control
    def _pose(self) -> tuple[float, ...]:
        pose = self._ok(self._call("get_position", is_radian=True), "get_position")[1]
        return (*(float(v) / 1000.0 for v in pose[:3]), *(float(v) for v in pose[3:6]))

    def _joints(self) -> tuple[float, ...]:
        angles = self._ok(self._call("get_servo_angle", is_radian=True), "get_servo_angle")[1]
        return tuple(float(v) for v in angles[: self.config.dof])

    def observe(self) -> DriverObservation:
        with self._lock:
            q, pose = self._joints(), self._pose()
            grip: tuple[float, ...] = ()
            if self.config.gripper:
                pos = float(self._ok(self._call("get_gripper_position"), "get_gripper_position")[1])
                grip = (C.from_closed(1.0 - pos / GRIPPER_OPEN, self.convention),)
            arm = self._arm
            info = {"sent": self.last_sent.to_info() if self.last_sent else None, "reconnects": self.reconnects,
                    "sdk_error": {"error_code": int(arm.error_code), "warn_code": int(arm.warn_code),
                                  "last_fault": self.last_fault.line() if self.last_fault else None},
                    "estopped": self._estopped}
        return DriverObservation(C.read_frames(self._frames, self._cameras), (*q, *pose, *grip), None, info)

    def apply(self, action: Action) -> None:
        if self.config.space != "ee_delta":
            raise TypeError(f"XArmDriver: this arm speaks {self.config.space}; send apply_command")
        self.apply_command(ArmCommand(C.action_values(action, self.convention, self._gripper_sent), action.terminate))

    def apply_command(self, command: ArmCommand) -> None:
        spec = self._action
        if len(command.values) != spec.dim:
            raise ValueError(f"XArmDriver: {spec.label} needs {spec.dim} values, got {len(command.values)}")
        values, clipped = C.clip_vector(command.values, spec.low, spec.high, spec.names)
        n = self.config.dof if self.config.space == "joint_position" else 6
        with self._lock:
            if self._estopped:
                raise C.DriverError(f"XArmDriver: {self.arm} was emergency stopped; check the arm, then "
                                    "re-arm and reset (an operator-confirmed reset)")
            self._ensure_connected()
            if not self._servo_ready:
                self._servo()
            sent = self._joint_step(values[:n]) if self.config.space == "joint_position" else self._ee_step(values[:6])
            gripper = self._gripper_step(values[n]) if self.config.gripper else None
            self.last_sent = C.SentCommand(sent.call, sent.values, sent.units,
                                           tuple(dict.fromkeys((*clipped, *sent.driver_clipped))), gripper)

    def _joint_step(self, target: tuple[float, ...]) -> C.SentCommand:
        step = (self.config.max_joint_speed * self.period_s,) * self.config.dof
        out, hit = C.step_toward(self._joints(), target, step, self.joints)
        out, hit2 = C.clip_vector(out, self.config.low, self.config.high, self.joints)
        self._ok(self._call("set_servo_angle_j", list(out), is_radian=True), "set_servo_angle_j")
        return C.SentCommand("set_servo_angle_j", out, "rad", (*hit, *hit2))

    def _ee_step(self, delta: tuple[float, ...]) -> C.SentCommand:
        pose = self._pose()
        xyz = tuple(p + d for p, d in zip(pose[:3], delta[:3], strict=True))
        xyz, hit = C.clip_vector(xyz, self.config.workspace_low, self.config.workspace_high, EE[:3])
        rpy = tuple(C.wrap(a + d) for a, d in zip(pose[3:], delta[3:], strict=True))
        target = (*(v * 1000.0 for v in xyz), *rpy)
        self._ok(self._call("set_servo_cartesian", list(target), is_radian=True), "set_servo_cartesian")
        return C.SentCommand("set_servo_cartesian", target, "mm, rad", hit)

    def _gripper_step(self, value: float) -> float | None:
        closed = C.to_closed(value, self.convention)
        if self._gripper_sent is not None and abs(closed - self._gripper_sent) < 1e-3:
            return None
        pos = (1.0 - closed) * GRIPPER_OPEN
        self._ok(self._call("set_gripper_position", pos, wait=False, speed=self.config.gripper_speed),
                 "set_gripper_position")
        self._gripper_sent = closed
        return closed

    def hold(self) -> None:
        """set_state(4): stop, keep the pose; the next command re-enters servo mode."""
        with self._lock:
            if self._arm is None:
                return
            self._servo_ready = False
            result = self._call("set_state", 4)
            if _code(result) == 1:  # uncleared controller errors: the controller has stopped the arm
                self._fault(result, "set_state(4)")
            else:
                self._ok(result, "set_state(4)")
            self.last_sent = C.SentCommand("set_state", (4.0,), "state")

    def estop(self) -> None:
        """The SDK's emergency_stop(); commands are refused until an operator-confirmed reset."""
        with self._lock:
            self._estopped, self._servo_ready = True, False
            self._call("emergency_stop")
            self.last_sent = C.SentCommand("emergency_stop", (), "")

    def reset(self, scene: SceneSpec) -> ResetResult:
        """Stops the arm, starts the move home (position mode, if configured) and asks an
        operator to set the scene, naming any controller error; on the confirmed reset: errors
        (which the operator has seen) are cleared, ready once home is reached, servo mode on."""
        home = self.config.home_joints
        with self._lock:
            if not scene.operator_confirmed:
                self.hold()
                text = C.operator_instructions(scene, self.arm)
                if self._arm.error_code:
                    return ResetResult(False, f"{text} The controller reports error {self._arm.error_code}: "
                                              "check the arm first; confirming clears it.")
                if home is not None:
                    self._move_home(home)
                return ResetResult(False, text)
            if self._arm.error_code:
                self._ok(self._call("clean_error"), "clean_error")
                self._ok(self._call("clean_warn"), "clean_warn")
                if home is not None:
                    self._move_home(home)
                    return ResetResult(False, f"{self.arm}: error cleared, moving to its home pose: confirm "
                                              "again once it is there")
            if home is not None:
                err = max(abs(a - b) for a, b in zip(self._joints(), home, strict=True))
                if err > 0.01:
                    return ResetResult(False, f"{self.arm} has not reached its home pose yet (joint error "
                                              f"{err:.3f} rad): wait for it, then confirm again")
            self._estopped = False
            self._enable()
        return ResetResult(True)

    def _move_home(self, home: tuple[float, ...]) -> None:
        self._servo_ready = False
        self._ok(self._call("motion_enable", enable=True), "motion_enable")
        self._ok(self._call("set_mode", 0), "set_mode(0)")
        self._ok(self._call("set_state", 0), "set_state(0)")
        self._ok(self._call("set_servo_angle", angle=list(home), speed=self.config.home_speed, is_radian=True,
                            wait=False), "set_servo_angle")
