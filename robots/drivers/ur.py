"""URDriver: Universal Robots e-Series arms (UR3e, UR5e, UR10e, UR16e) through `ur-rtde`.

Install with `pip install evalfleet[ur]`; `rtde_control` / `rtde_receive` are imported inside
connect(), so evalfleet imports without them. NOT YET RUN ON REAL HARDWARE (docs/drivers.md).

Two action spaces (config `space`), units as ur-rtde takes them (SI: rad, m, s):
- `joint_velocity` (default; DROID-style): joint_1..joint_6 in rad/s, then the gripper.
  Each step is one `speedJ(qd, joint_acceleration, 0.0)`; the arm keeps that velocity until
  the next step or a stop (the bridge's watchdog holds it when steps stop coming).
- `ee_delta` (RT-2's space): dx dy dz (m), droll dpitch dyaw (rad), then the gripper. Each
  step is one `servoL(target, 0, 0, 1/control_hz, lookahead, gain)` towards the current TCP
  pose plus the delta (roll/pitch/yaw added, then converted to UR's rotation vector), the
  target kept inside the configured workspace box.
The gripper dimension exists when a gripper is configured (`gripper: package.module:Factory`
returning a GripperPort, or one passed in): ur-rtde has no gripper call of its own. Its
convention is explicit: `gripper_convention`, default closed_is_1 for joint_velocity (DROID,
openpi) and open_is_1 for ee_delta (RT-2); the state's `gripper` uses the same convention.

State (proprio), in order: joint_1..joint_6 (rad), joint_1_vel..joint_6_vel (rad/s), ee_x ee_y
ee_z (m), ee_roll ee_pitch ee_yaw (rad), base frame, [gripper].

The arm's own limits, applied after the bridge's clip: joint speeds at most `max_joint_speed`
and the model's data-sheet speed; a joint velocity that would carry a joint past its range
within one control period is cut to stop at the range; ee steps at most `max_step_m` /
`max_step_rad` (and `max_tool_speed / control_hz`); ee targets inside the workspace box.

Stops: `hold()` (the bridge's hold, watchdog and e-stop path) is `speedStop(a)` after speedJ
and `servoStop(a)` after servoL (ur-rtde's stops for those modes; `stop_deceleration`).
`estop()` is `triggerProtectiveStop()`: the controller's protective stop, which only a
person clears (teach pendant); until then every command is refused with that instruction.
A dropped RTDE connection is reconnected (`reconnect()`, `reconnect_attempts` tries) before
the next command; when that fails the command raises DriverError and the bridge holds.
`observe().info` reports what was really sent (`sent`), reconnects and the safety state.
"""

from __future__ import annotations

import logging
import threading
import types
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from robots.drivers import arm_common as C
from robots.drivers.arm_limits import UR_MODELS
from robots.drivers.base import Capabilities, DriverObservation, ResetResult, RobotDriver
from robots.drivers.cameras import CameraConfig
from robots.spaces import ActionSpec, ArmCommand, GripperConvention, SpaceKind, StateSpec
from robots.types import Action, ActionSpace, SceneSpec, Workspace

log = logging.getLogger(__name__)
JOINTS = tuple(f"joint_{i}" for i in range(1, 7))
EE = ("ee_x", "ee_y", "ee_z", "ee_roll", "ee_pitch", "ee_yaw")


class URConfig(BaseModel):
    """`bridge check robots.drivers.ur:URDriver --config ur5e.yaml` builds URDriver(**yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = Field(min_length=1)
    model: Literal["ur3e", "ur5e", "ur10e", "ur16e"] = "ur5e"
    space: Literal["joint_velocity", "ee_delta"] = "joint_velocity"
    control_hz: float = Field(15.0, gt=0, le=500)
    max_joint_speed: float = Field(1.0, gt=0)  # rad/s, every joint (capped by the data sheet)
    joint_low: tuple[float, ...] | None = None  # rad, within the data sheet's ranges
    joint_high: tuple[float, ...] | None = None
    joint_acceleration: float = Field(4.0, gt=0, le=40)  # rad/s^2, speedJ
    stop_deceleration: float = Field(10.0, gt=0, le=40)  # speedStop rad/s^2, servoStop m/s^2
    max_step_m: float = Field(0.01, gt=0, le=0.05)  # ee_delta per step
    max_step_rad: float = Field(0.05, gt=0, le=0.5)
    max_tool_speed: float = Field(0.25, gt=0)  # m/s (capped by the data sheet)
    servo_lookahead_time: float = Field(0.1, ge=0.03, le=0.2)
    servo_gain: float = Field(300.0, ge=100, le=2000)
    workspace_low: tuple[float, float, float] = Workspace().low  # m, base frame: MEASURE it
    workspace_high: tuple[float, float, float] = Workspace().high
    home_joints: tuple[float, ...] | None = None  # moveJ there on reset (asynchronous)
    home_speed: float = Field(0.5, gt=0, le=1.05)
    gripper: str | None = None  # package.module:Factory(host) -> GripperPort
    gripper_convention: Literal["open_is_1", "closed_is_1"] | None = None
    cameras: tuple[CameraConfig, ...] = ()  # robots/drivers/cameras.py: kind opencv | realsense
    camera_source: str | None = None  # package.module:Factory(camera specs) -> FrameSource
    rtde_frequency: float = -1.0  # ur-rtde's default: the controller's rate
    reconnect_attempts: int = Field(2, ge=0, le=10)

    @model_validator(mode="after")
    def _within_data_sheet(self) -> URConfig:
        m = UR_MODELS[self.model]
        if self.max_tool_speed > m.max_tool_speed:
            raise ValueError(f"max_tool_speed {self.max_tool_speed} m/s exceeds the {m.name} data "
                             f"sheet ({m.max_tool_speed} m/s)")
        if self.max_joint_speed > max(m.max_joint_speed):
            raise ValueError(f"max_joint_speed {self.max_joint_speed} rad/s exceeds the {m.name} "
                             f"data sheet ({max(m.max_joint_speed):.3f} rad/s)")
        C.check_ranges(m.name, m.joint_low, m.joint_high, self.joint_low, self.joint_high, self.home_joints,
                       self.workspace_low, self.workspace_high)
        C.camera_specs(self.cameras)
        return self

    @property
    def low(self) -> tuple[float, ...]:
        return self.joint_low or UR_MODELS[self.model].joint_low

    @property
    def high(self) -> tuple[float, ...]:
        return self.joint_high or UR_MODELS[self.model].joint_high

    @property
    def joint_speeds(self) -> tuple[float, ...]:
        return tuple(min(self.max_joint_speed, s) for s in UR_MODELS[self.model].max_joint_speed)

    @property
    def ee_steps(self) -> tuple[float, ...]:
        m = min(self.max_step_m, self.max_tool_speed / self.control_hz)
        return (m,) * 3 + (self.max_step_rad,) * 3


def _sdk() -> Any:
    try:
        import rtde_control
        import rtde_receive
    except ImportError as e:
        raise C.DriverError(f"URDriver: ur-rtde is not installed ({e}); pip install 'evalfleet[ur]'") from e
    return types.SimpleNamespace(RTDEControlInterface=rtde_control.RTDEControlInterface,
                                 RTDEReceiveInterface=rtde_receive.RTDEReceiveInterface)


class URDriver(RobotDriver):
    """A UR e-Series arm over RTDE. Thread-safe: one lock around every SDK call."""

    def __init__(self, config: URConfig | None = None, *, sdk: Any = None, gripper_port: C.GripperPort | None = None,
                 frame_source: C.FrameSource | None = None, **fields: Any) -> None:
        """`fields`: URConfig's fields (what a YAML config holds). `sdk` (a namespace with
        RTDEControlInterface / RTDEReceiveInterface), `gripper_port` and `frame_source` replace
        what connect() would import or build (tests pass fakes)."""
        if config is not None and fields:
            raise TypeError(f"URDriver: give a URConfig or its fields, not both (got {sorted(fields)})")
        self.config = cfg = config or URConfig(**fields)
        self._sdk, self._gripper_port, self._frame_source = sdk, gripper_port, frame_source
        self._gripper: C.GripperPort | None = gripper_port
        self._frames: C.FrameSource | None = None
        self._lock = threading.RLock()
        self._ctrl: Any = None
        self._recv: Any = None
        self.period_s = 1.0 / cfg.control_hz
        self.convention = (C.default_convention(cfg.space, cfg.gripper_convention)
                           if self.has_gripper else GripperConvention.NONE)
        self.last_sent: C.SentCommand | None = None
        self.reconnects = 0
        self._protective_stop_requested = False
        self._gripper_sent: float | None = None
        self._cameras = C.camera_specs(cfg.cameras)
        self._action = self.capabilities().action_spec

    @property
    def has_gripper(self) -> bool:
        return self._gripper_port is not None or self.config.gripper is not None

    @property
    def arm(self) -> str:
        return f"{UR_MODELS[self.config.model].name} at {self.config.host}"

    # ------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Cameras first (nothing moves), then RTDE receive and control, then the gripper;
        whatever opened is closed again when a later part fails."""
        cfg = self.config
        sdk = self._sdk or _sdk()
        self._frames = C.open_frame_source(self._frame_source, cfg.camera_source, cfg.cameras, self._cameras)
        try:
            with self._lock:
                self._open_rtde(sdk)
            if self._gripper is None and cfg.gripper is not None:
                self._gripper = C.load_factory(cfg.gripper, "gripper")(cfg.host)
        except BaseException:
            self.close()
            raise

    def _open_rtde(self, sdk: Any) -> None:
        cfg = self.config
        try:
            self._recv = sdk.RTDEReceiveInterface(cfg.host, cfg.rtde_frequency)
            self._ctrl = sdk.RTDEControlInterface(cfg.host, cfg.rtde_frequency)
        except RuntimeError as e:
            raise C.DriverError(f"URDriver: cannot open RTDE to {self.arm}: {e}; check the address, that the "
                                "arm is powered, in remote control and not held by another RTDE client") from e
        if self._recv.isEmergencyStopped() or self._recv.isProtectiveStopped():
            raise C.DriverError(f"URDriver: {self.arm} is emergency/protective stopped; clear it on the "
                                "teach pendant, then connect again")

    def close(self) -> None:
        """Stop the arm (hold), stop the ur-rtde script, disconnect; never raises."""
        with self._lock:
            if self._ctrl is not None:
                try:
                    self.hold()
                except Exception:
                    log.warning("URDriver: hold() while closing %s failed", self.arm, exc_info=True)
            for iface, calls in ((self._ctrl, ("stopScript", "disconnect")), (self._recv, ("disconnect",))):
                for name in calls if iface is not None else ():
                    try:
                        getattr(iface, name)()
                    except RuntimeError:
                        log.debug("URDriver: %s() while closing failed", name, exc_info=True)
            self._ctrl = self._recv = None
        for part in (self._gripper, self._frames):
            if part is not None:
                part.close()
        self._frames = None
        if self._gripper is not self._gripper_port:
            self._gripper = self._gripper_port

    def capabilities(self) -> Capabilities:
        cfg = self.config
        grip = ("gripper",) if self.has_gripper else ()
        if cfg.space == "joint_velocity":
            speeds = cfg.joint_speeds
            action = ActionSpec(SpaceKind.JOINT_VELOCITY, (*JOINTS, *grip), ("rad/s",) * 6 + ("1",) * len(grip),
                                (*(-s for s in speeds), *(0.0,) * len(grip)), (*speeds, *(1.0,) * len(grip)),
                                self.convention, cfg.control_hz)
        else:
            action = C.ee_delta_action(cfg.ee_steps, self.convention, cfg.control_hz)
        state = StateSpec((*JOINTS, *(f"{j}_vel" for j in JOINTS), *EE, *grip),
                          ("rad",) * 6 + ("rad/s",) * 6 + ("m",) * 3 + ("rad",) * 3 + ("1",) * len(grip))
        return Capabilities(driver="ur_rtde", cameras=self._cameras, action_space=ActionSpace(control_hz=cfg.control_hz),
                            workspace=Workspace(cfg.workspace_low, cfg.workspace_high), needs_operator_reset=True,
                            action=action, state=state)

    # ------------------------------------------------------------ SDK calls with reconnect
    def _iface(self, which: str) -> Any:
        iface = self._ctrl if which == "control" else self._recv
        if iface is None:
            raise C.DriverError(f"URDriver: {self.arm} is not connected; call connect() first")
        if iface.isConnected():
            return iface
        for _ in range(self.config.reconnect_attempts):
            if iface.reconnect():
                self.reconnects += 1
                return iface
        raise C.DriverError(f"URDriver: RTDE {which} connection to {self.arm} dropped and "
                            f"{self.config.reconnect_attempts} reconnect(s) failed; check the network "
                            "and the controller, then restart the bridge")

    def _call(self, which: str, name: str, *args: Any) -> Any:
        iface = self._iface(which)
        try:
            return getattr(iface, name)(*args)
        except RuntimeError as e:
            if iface.isConnected():
                raise C.DriverError(f"URDriver: {name} on {self.arm} failed: {e}") from e
            return getattr(self._iface(which), name)(*args)  # dropped mid-call: reconnect, once more

    def _refuse_if_stopped(self) -> None:
        if self._call("receive", "isEmergencyStopped"):
            raise C.DriverError(f"URDriver: {self.arm} is emergency stopped; release the e-stop, "
                                "restart the arm on the teach pendant, then re-arm and reset")
        if self._protective_stop_requested or self._call("receive", "isProtectiveStopped"):
            raise C.DriverError(f"URDriver: {self.arm} is in a protective stop; clear it on the teach "
                                "pendant, then re-arm and reset (an operator-confirmed reset)")

    # ------------------------------------------------------------ control
    def observe(self) -> DriverObservation:
        with self._lock:
            q = tuple(float(v) for v in self._call("receive", "getActualQ"))
            qd = tuple(float(v) for v in self._call("receive", "getActualQd"))
            tcp = tuple(float(v) for v in self._call("receive", "getActualTCPPose"))
            info = {"sent": self.last_sent.to_info() if self.last_sent else None, "reconnects": self.reconnects,
                    "protective_stop": bool(self._call("receive", "isProtectiveStopped")),
                    "emergency_stop": bool(self._call("receive", "isEmergencyStopped"))}
        grip = (C.from_closed(self._gripper.closed(), self.convention),) if self._gripper is not None else ()
        proprio = (*q, *qd, *tcp[:3], *C.rotvec_to_rpy(tcp[3:6]), *grip)
        return DriverObservation(C.read_frames(self._frames, self._cameras), proprio, None, info)

    def apply(self, action: Action) -> None:
        if self.config.space != "ee_delta":
            raise TypeError(f"URDriver: this arm speaks {self.config.space}; send apply_command")
        self.apply_command(ArmCommand(C.action_values(action, self.convention, self._gripper_sent), action.terminate))

    def apply_command(self, command: ArmCommand) -> None:
        spec = self._action
        if len(command.values) != spec.dim:
            raise ValueError(f"URDriver: {spec.label} needs {spec.dim} values, got {len(command.values)}")
        values, clipped = C.clip_vector(command.values, spec.low, spec.high, spec.names)
        with self._lock:
            self._refuse_if_stopped()
            sent = self._joint_step(values[:6]) if self.config.space == "joint_velocity" else self._ee_step(values[:6])
            gripper = self._gripper_step(values[6]) if self.has_gripper else None
            self.last_sent = C.SentCommand(sent.call, sent.values, sent.units, tuple(dict.fromkeys(
                (*clipped, *sent.driver_clipped))), gripper)

    def _joint_step(self, qd: tuple[float, ...]) -> C.SentCommand:
        q = self._call("receive", "getActualQ")
        guarded, hit = C.guard_joint_velocity(q, qd, self.config.low, self.config.high, self.period_s, JOINTS)
        ok = self._call("control", "speedJ", list(guarded), self.config.joint_acceleration, 0.0)
        self._check_ok(ok, "speedJ")
        return C.SentCommand("speedJ", guarded, "rad/s", hit)

    def _ee_step(self, delta: tuple[float, ...]) -> C.SentCommand:
        tcp = self._call("receive", "getActualTCPPose")
        rpy = C.rotvec_to_rpy(tcp[3:6])
        xyz = tuple(float(p) + d for p, d in zip(tcp[:3], delta[:3], strict=True))
        xyz, hit = C.clip_vector(xyz, self.config.workspace_low, self.config.workspace_high, EE[:3])
        target = (*xyz, *C.rpy_to_rotvec(*(C.wrap(a + d) for a, d in zip(rpy, delta[3:], strict=True))))
        cfg = self.config
        ok = self._call("control", "servoL", list(target), 0.0, 0.0, self.period_s, cfg.servo_lookahead_time,
                        cfg.servo_gain)
        self._check_ok(ok, "servoL")
        return C.SentCommand("servoL", target, "m, rotation vector rad", hit)

    def _gripper_step(self, value: float) -> float | None:
        closed = C.to_closed(value, self.convention)
        if self._gripper is None or (self._gripper_sent is not None and abs(closed - self._gripper_sent) < 1e-3):
            return None
        self._gripper.move(closed)
        self._gripper_sent = closed
        return closed

    def _check_ok(self, ok: object, call: str) -> None:
        if ok is False:
            self._refuse_if_stopped()
            raise C.DriverError(f"URDriver: {self.arm} refused {call} (is the arm in remote control and "
                                "the ur-rtde script running?); check the teach pendant's log")

    def hold(self) -> None:
        """speedStop / servoStop: decelerate to rest and keep the pose."""
        with self._lock:
            if self._ctrl is None:
                return
            call = "speedStop" if self.config.space == "joint_velocity" else "servoStop"
            ok = self._call("control", call, self.config.stop_deceleration)
            if ok is False and not (self._call("receive", "isProtectiveStopped")
                                    or self._call("receive", "isEmergencyStopped")):
                raise C.DriverError(f"URDriver: {self.arm} refused {call}: the arm may still be moving; "
                                    "use the hardware e-stop, then check the teach pendant's log")
            self.last_sent = C.SentCommand(call, (self.config.stop_deceleration,),
                                           "rad/s^2" if call == "speedStop" else "m/s^2")

    def estop(self) -> None:
        """The controller's protective stop (a person clears it on the teach pendant)."""
        with self._lock:
            self._protective_stop_requested = True
            self._call("control", "triggerProtectiveStop")
            self.last_sent = C.SentCommand("triggerProtectiveStop", (), "")

    def reset(self, scene: SceneSpec) -> ResetResult:
        """Stops the arm, starts the move home (if configured) and asks an operator to set the
        scene; on the operator-confirmed reset: ready once home is reached and no stop is on."""
        home = self.config.home_joints
        with self._lock:
            stopped = self._call("receive", "isProtectiveStopped") or self._call("receive", "isEmergencyStopped")
            if not scene.operator_confirmed:
                self.hold()
                text = C.operator_instructions(scene, self.arm)
                if stopped:
                    return ResetResult(False, f"{text} The controller is in a protective or emergency stop: "
                                              "clear it on the teach pendant first.")
                if home is not None:
                    self._check_ok(self._call("control", "moveJ", list(home), self.config.home_speed, 1.4, True),
                                   "moveJ")
                return ResetResult(False, text)
            if stopped:
                return ResetResult(False, f"{self.arm} is stopped by its controller: clear the stop on the "
                                          "teach pendant, then confirm again")
            self._protective_stop_requested = False
            if home is not None:
                q = self._call("receive", "getActualQ")
                err = max(abs(a - b) for a, b in zip(q, home, strict=True))
                if err > 0.01:
                    return ResetResult(False, f"{self.arm} has not reached its home pose yet (joint error "
                                              f"{err:.3f} rad): wait for it, then confirm again")
        return ResetResult(True)

