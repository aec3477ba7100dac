"""SO101Driver: an SO-100 / SO-101 arm (six Feetech STS3215 servos on one serial bus) through
`feetech-servo-sdk` (`pip install 'evalfleet[so101]'`, import name `scservo_sdk`).

The bus: `PortHandler(port)` + `setBaudRate(1_000_000)`, `PacketHandler(0)` (STS/SMS servos
are little-endian: protocol_end 0), one `GroupSyncRead` of Present_Position (register 56,
2 bytes) for all six servos per observe, one `GroupSyncWrite` of Goal_Position (register 42,
2 bytes) per command, and `write1ByteTxRx` of Torque_Enable (register 40) at connect.

Units: an STS3215 turn is 4096 ticks. Each servo has a calibration (the `joints` and
`gripper` entries of the config, measured once per arm): its bus `id`, the tick at the
joint's zero (`offset`), the direction (`sign`), and the range of motion measured on this arm
(`min_ticks` .. `max_ticks`, the arm's own limits). Joint angle (rad) = sign * (ticks -
offset) * 2*pi / 4096. The gripper is the opening between `closed_ticks` and `open_ticks`,
0..1 in the declared convention (`open_is_1` by default, LeRobot's; `closed_is_1` for
openpi-style policies). Present_Position is sign-magnitude (bit 15).

Space: `joint_position[6]`: shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_roll
(rad, within each joint's calibrated range less `margin_ticks`) + gripper. The driver also
clips every goal to the calibrated tick range, and moves each joint at most
`max_joint_speed / control_hz` rad from its present position per command. State: the same
six values, read back from the servos.

Hold, watchdog and e-stop (the bridge calls `hold()` for all three) write each servo's
present position as its goal: the arm stops where it is and keeps holding it. Torque is NOT
dropped: with torque off an SO-101 falls under gravity (shoulder_lift and elbow_flex
collapse onto the table, taking whatever is under the gripper, a hand included). Dropping
torque is the hardware e-stop's job (a switch on the servo supply), with the arm parked low.
`hold_mode: torque_off` exists for arms mounted so that they cannot fall (it is not the
default, and docs/drivers.md says why); the next command turns torque back on. At connect
the goal is set to the present position before torque is enabled (and so again after a
torque_off hold), so the arm never jumps to a stale goal.

Reconnect: a failed bus transfer is retried (`retries`); a serial-port error (USB unplugged)
closes the port, and the next call reopens it and re-enables torque the same safe way.
`observe().info["sent"]` is what the driver really wrote (goal ticks, the dimensions it
clipped beyond the bridge). Not yet run on real hardware (docs/drivers.md).
"""

from __future__ import annotations

import importlib
import logging
import math
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from robots.drivers.arm_common import DriverError, SentCommand, operator_instructions
from robots.drivers.base import Capabilities, DriverObservation, ResetResult, RobotDriver
from robots.drivers.cameras import CameraConfig, CameraRig
from robots.spaces import ActionSpec, ArmCommand, GripperConvention, SpaceKind, StateSpec
from robots.types import Action, ActionSpace, SceneSpec

log = logging.getLogger(__name__)

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
NAMES = (*ARM_JOINTS, "gripper")
TICKS_PER_TURN = 4096
RAD_PER_TICK = 2 * math.pi / TICKS_PER_TURN
ADDR_TORQUE_ENABLE = 40
ADDR_GOAL_POSITION = 42
ADDR_PRESENT_POSITION = 56
STATE = StateSpec(NAMES, ("rad",) * 5 + ("1",))


class JointCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: int = Field(ge=0, le=252)
    offset: int = Field(default=2048, ge=0, le=4095)  # ticks at the joint's zero
    sign: Literal[1, -1] = 1
    min_ticks: int = Field(default=1024, ge=0, le=4095)
    max_ticks: int = Field(default=3072, ge=0, le=4095)

    @model_validator(mode="after")
    def _range(self) -> JointCalibration:
        if not self.min_ticks < self.max_ticks:
            raise ValueError(f"servo {self.id}: min_ticks {self.min_ticks} must be below max_ticks "
                             f"{self.max_ticks}")
        return self


class GripperCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: int = Field(default=6, ge=0, le=252)
    closed_ticks: int = Field(default=2048, ge=0, le=4095)
    open_ticks: int = Field(default=3072, ge=0, le=4095)

    @model_validator(mode="after")
    def _range(self) -> GripperCalibration:
        if self.closed_ticks == self.open_ticks:
            raise ValueError("gripper: closed_ticks and open_ticks must differ")
        return self


def _default_joints() -> dict[str, JointCalibration]:
    return {n: JointCalibration(id=i + 1) for i, n in enumerate(ARM_JOINTS)}


class SO101Config(BaseModel):
    """The `--config` mapping of `robots.drivers.so101:SO101Driver`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    port: str = Field(min_length=1)  # e.g. /dev/ttyACM0
    baudrate: int = Field(default=1_000_000, gt=0)
    joints: dict[str, JointCalibration] = Field(default_factory=_default_joints)
    gripper: GripperCalibration = GripperCalibration()
    gripper_convention: Literal["open_is_1", "closed_is_1"] = "open_is_1"
    control_hz: float = Field(default=30.0, gt=0, le=200)
    max_joint_speed: float = Field(default=1.5, gt=0, le=6)  # rad/s: per-command step cap
    margin_ticks: int = Field(default=20, ge=0, le=200)  # kept clear of each calibrated limit
    hold_mode: Literal["hold_position", "torque_off"] = "hold_position"
    retries: int = Field(default=2, ge=0, le=10)
    cameras: tuple[CameraConfig, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _joints(self) -> SO101Config:
        if set(self.joints) != set(ARM_JOINTS):
            raise ValueError(f"joints: calibrate exactly {list(ARM_JOINTS)}, got {sorted(self.joints)}")
        ids = [self.joints[n].id for n in ARM_JOINTS] + [self.gripper.id]
        if len(set(ids)) != len(ids):
            raise ValueError(f"servo ids must be unique: {ids}")
        for n in ARM_JOINTS:
            j = self.joints[n]
            if j.max_ticks - j.min_ticks <= 2 * self.margin_ticks:
                raise ValueError(f"{n}: range {j.min_ticks}..{j.max_ticks} is not wider than twice "
                                 f"margin_ticks {self.margin_ticks}")
        return self


# ------------------------------------------------------------------ units (pure)
def decode_position(raw: int) -> int:
    """Present_Position is sign-magnitude: bit 15 is the sign."""
    return -(raw & 0x7FFF) if raw & 0x8000 else raw & 0x7FFF


def ticks_to_rad(ticks: float, cal: JointCalibration) -> float:
    return cal.sign * (ticks - cal.offset) * RAD_PER_TICK


def rad_to_ticks(rad: float, cal: JointCalibration) -> int:
    return round(cal.offset + cal.sign * rad / RAD_PER_TICK)


def joint_range_rad(cal: JointCalibration, margin: int) -> tuple[float, float]:
    a = ticks_to_rad(cal.min_ticks + margin, cal)
    b = ticks_to_rad(cal.max_ticks - margin, cal)
    return min(a, b), max(a, b)


def gripper_value(ticks: float, cal: GripperCalibration, conv: GripperConvention) -> float:
    opening = (ticks - cal.closed_ticks) / (cal.open_ticks - cal.closed_ticks)
    opening = min(max(opening, 0.0), 1.0)
    return opening if conv is GripperConvention.OPEN_IS_1 else 1.0 - opening


def gripper_ticks(value: float, cal: GripperCalibration, conv: GripperConvention) -> int:
    v = min(max(float(value), 0.0), 1.0)
    opening = v if conv is GripperConvention.OPEN_IS_1 else 1.0 - v
    return round(cal.closed_ticks + opening * (cal.open_ticks - cal.closed_ticks))


def goal_bytes(ticks: int) -> list[int]:
    """A Goal_Position value as the two little-endian bytes a sync write carries."""
    return [ticks & 0xFF, (ticks >> 8) & 0xFF]


def action_spec(cfg: SO101Config) -> ActionSpec:
    ranges = [joint_range_rad(cfg.joints[n], cfg.margin_ticks) for n in ARM_JOINTS]
    return ActionSpec(SpaceKind.JOINT_POSITION, NAMES, ("rad",) * 5 + ("1",),
                      (*(r[0] for r in ranges), 0.0), (*(r[1] for r in ranges), 1.0),
                      GripperConvention(cfg.gripper_convention), cfg.control_hz)


def goal_ticks(cfg: SO101Config, present: dict[int, int],
               values: tuple[float, ...]) -> tuple[dict[int, int], tuple[str, ...]]:
    """Goal ticks per servo id for one command (rad + gripper), limited to the calibrated
    range and to one step from the present position; the names the driver clipped."""
    conv = GripperConvention(cfg.gripper_convention)
    step = cfg.max_joint_speed / cfg.control_hz / RAD_PER_TICK
    goals: dict[int, int] = {}
    hit: list[str] = []
    for name, v in zip(ARM_JOINTS, values[:5], strict=True):
        cal = cfg.joints[name]
        want = rad_to_ticks(v, cal)
        lo, hi = cal.min_ticks + cfg.margin_ticks, cal.max_ticks - cfg.margin_ticks
        t = min(max(want, lo), hi)
        now = present[cal.id]
        t = int(min(max(t, math.ceil(now - step)), math.floor(now + step)))
        if abs(t - want) > 0:
            hit.append(name)
        goals[cal.id] = t
    g = cfg.gripper
    lo, hi = sorted((g.closed_ticks, g.open_ticks))
    goals[g.id] = min(max(gripper_ticks(values[5], g, conv), lo), hi)
    return goals, tuple(hit)


# ------------------------------------------------------------------ the driver (shell)
class SO101Driver(RobotDriver):
    """An SO-100/SO-101 arm + cameras. `sdk`: the `scservo_sdk` module (tests pass a fake)."""

    def __init__(self, config: SO101Config | None = None, *, sdk: ModuleType | None = None,
                 **options: Any) -> None:
        self.config = config if config is not None else SO101Config(**options)
        self._sdk_given = sdk
        self.sdk: Any = None
        self.port: Any = None
        self.packet: Any = None
        self.rig = CameraRig(self.config.cameras)
        self.spec = action_spec(self.config)
        self.ids = tuple(self.config.joints[n].id for n in ARM_JOINTS) + (self.config.gripper.id,)
        self._sent: SentCommand | None = None
        self._holding = False
        self._torque_off = False
        self.reconnects = 0

    # ---- bus
    def _import(self) -> Any:
        if self._sdk_given is not None:
            return self._sdk_given
        try:
            return importlib.import_module("scservo_sdk")
        except ImportError as e:
            raise DriverError(f"so101: scservo_sdk is not installed ({e}); pip install "
                              "'evalfleet[so101]' (feetech-servo-sdk)") from e

    def _open_bus(self) -> None:
        sdk, c = self.sdk, self.config
        try:
            port = sdk.PortHandler(c.port)
            if not port.openPort() or not port.setBaudRate(c.baudrate):
                raise DriverError(f"so101: cannot open {c.port} at {c.baudrate} baud; check the "
                                  "cable and that the user is in the dialout group")
        except DriverError:
            raise
        except Exception as e:
            raise DriverError(f"so101: cannot open {c.port} ({type(e).__name__}: {e}); check the "
                              "cable and that the user is in the dialout group") from e
        self.port, self.packet = port, sdk.PacketHandler(0)
        try:
            self._torque_on()
        except Exception:
            self._drop_bus()
            raise

    def _torque_on(self) -> None:
        present = self._read_present()
        self._write_goals(present)  # the goal is where the arm is, before torque comes on
        for sid in self.ids:
            self._write_byte(sid, ADDR_TORQUE_ENABLE, 1)
        self._torque_off = False

    def _drop_bus(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            try:
                port.closePort()
            except Exception:
                log.warning("so101: closing %s failed", self.config.port, exc_info=True)

    def _live(self) -> None:
        if self.port is None:
            if self.sdk is None:
                raise DriverError("so101: not connected; call connect() first")
            self._open_bus()
            self.reconnects += 1
            log.warning("so101: reopened %s", self.config.port)

    def _bus(self, what: str, fn: Any) -> Any:
        """Run one bus transfer; an OS/serial error drops the port (reopened on the next call)."""
        try:
            return fn()
        except DriverError:
            raise
        except Exception as e:
            self._drop_bus()
            raise DriverError(f"so101: {what} on {self.config.port} failed ({type(e).__name__}: "
                              f"{e}); reopening the port on the next call") from e

    def _read_present(self) -> dict[int, int]:
        sdk = self.sdk
        reader = sdk.GroupSyncRead(self.port, self.packet, ADDR_PRESENT_POSITION, 2)
        for sid in self.ids:
            reader.addParam(sid)
        result = None
        for _ in range(self.config.retries + 1):
            result = self._bus("reading positions", reader.txRxPacket)
            if result == sdk.COMM_SUCCESS:
                break
        if result != sdk.COMM_SUCCESS:
            raise DriverError(f"so101: reading positions failed ({self.packet.getTxRxResult(result)}) "
                              f"after {self.config.retries + 1} tries; check servo power and ids {self.ids}")
        out: dict[int, int] = {}
        for sid in self.ids:
            if not reader.isAvailable(sid, ADDR_PRESENT_POSITION, 2):
                raise DriverError(f"so101: servo {sid} did not answer; check its cable and id")
            out[sid] = decode_position(int(reader.getData(sid, ADDR_PRESENT_POSITION, 2)))
        return out

    def _write_goals(self, goals: dict[int, int]) -> None:
        sdk = self.sdk
        writer = sdk.GroupSyncWrite(self.port, self.packet, ADDR_GOAL_POSITION, 2)
        for sid, t in goals.items():
            writer.addParam(sid, goal_bytes(int(min(max(t, 0), TICKS_PER_TURN - 1))))
        result = self._bus("writing goals", writer.txPacket)
        if result != sdk.COMM_SUCCESS:
            raise DriverError(f"so101: writing goals failed ({self.packet.getTxRxResult(result)}); "
                              "check servo power")

    def _write_byte(self, sid: int, addr: int, value: int) -> None:
        result, err = self._bus("writing a register",
                                lambda: self.packet.write1ByteTxRx(self.port, sid, addr, value))
        if result != self.sdk.COMM_SUCCESS:
            raise DriverError(f"so101: servo {sid} register {addr} <- {value} failed "
                              f"({self.packet.getTxRxResult(result)})")
        if err:
            log.warning("so101: servo %d reports %s", sid, self.packet.getRxPacketError(err))

    # ---- lifecycle
    def connect(self) -> None:
        self.sdk = self._import()
        self._open_bus()
        try:
            self.rig.open()
        except Exception:
            self._drop_bus()
            raise

    def close(self) -> None:
        try:
            if self.port is not None:
                self.hold()
        except Exception:
            log.warning("so101: hold on close failed", exc_info=True)
        finally:
            self._drop_bus()
            self.rig.close()

    def capabilities(self) -> Capabilities:
        return Capabilities(driver="feetech", cameras=self.rig.specs,
                            action_space=ActionSpace(control_hz=self.config.control_hz),
                            needs_operator_reset=True, action=self.spec, state=STATE)

    def reset(self, scene: SceneSpec) -> ResetResult:
        self._live()
        if not scene.operator_confirmed:
            return ResetResult(False, operator_instructions(scene, "so101"))
        self._holding = False
        return ResetResult(True)

    # ---- observe / act / hold
    def _state(self, present: dict[int, int]) -> tuple[float, ...]:
        c = self.config
        joints = [ticks_to_rad(present[c.joints[n].id], c.joints[n]) for n in ARM_JOINTS]
        g = gripper_value(present[c.gripper.id], c.gripper, GripperConvention(c.gripper_convention))
        return (*joints, g)

    def observe(self) -> DriverObservation:
        self._live()
        present = self._read_present()
        return DriverObservation(frames=self.rig.read(), proprio=self._state(present),
                                 info={"holding": self._holding, "present_ticks": dict(present),
                                       "sent": self._sent.to_info() if self._sent else None})

    def apply(self, action: Action) -> None:
        raise TypeError("SO101Driver speaks joint_position; the bridge sends apply_command(ArmCommand)")

    def apply_command(self, command: ArmCommand) -> None:
        if len(command.values) != 6:
            raise ValueError(f"so101 {self.spec.label}: command has {len(command.values)} values")
        self._live()
        if self._torque_off:  # after a torque_off hold: on again, the safe way
            self._torque_on()
        present = self._read_present()
        goals, hit = goal_ticks(self.config, present, command.values)
        self._write_goals(goals)
        self._holding = False
        g = self.config.gripper
        closed = 1.0 - gripper_value(goals[g.id], g, GripperConvention.OPEN_IS_1)
        self._sent = SentCommand("GroupSyncWrite Goal_Position", tuple(float(goals[s]) for s in self.ids),
                                 "ticks", hit, closed)

    def hold(self) -> None:
        """Hold where the arm is (goal = present position); torque_off mode: torque off."""
        self._holding = True
        if self.port is None:
            return  # not connected: the servos keep their last goal (or are unpowered)
        if self.config.hold_mode == "torque_off":
            for sid in self.ids:
                self._write_byte(sid, ADDR_TORQUE_ENABLE, 0)
            self._torque_off = True
            self._sent = SentCommand("Torque_Enable=0", (), "", (), None)
            return
        present = self._read_present()
        self._write_goals(present)
        self._sent = SentCommand("GroupSyncWrite Goal_Position (hold)",
                                 tuple(float(present[s]) for s in self.ids), "ticks", (), None)
