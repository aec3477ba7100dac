"""A fake of `ur-rtde` (modules rtde_control / rtde_receive): exactly the calls URDriver makes.

`FakeURArm` is the simulated controller both interfaces talk to: joints integrate speedJ
velocities with the commanded acceleration, the TCP follows by the UR5e forward kinematics
(robots/sim/kinematics.py) in speed mode, servoL moves the TCP towards its target within
the commanded time, speedStop/servoStop decelerate at `a`, triggerProtectiveStop halts at
once and latches. `drop()` cuts the RTDE connection (isConnected() False, commands raise
RuntimeError, getters return stale values as ur-rtde's receive thread does; the controller's
script stops the arm); `refuse_reconnects` makes the next reconnects fail. Every command is
recorded in `calls` as (name, args). Time comes from `clock` (monotonic by default).

Inject with `URDriver(cfg, sdk=arm.sdk())`, or `arm.modules()` into sys.modules under the
SDK's import names.
"""

from __future__ import annotations

import math
import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

from robots.drivers.arm_common import matrix_to_rotvec
from robots.sim import kinematics

HOME = kinematics.home_joints()
JOINT_SPEED_MAX = 3.14  # ur-rtde's UR_JOINT_VELOCITY_MAX
ACCEL_MAX = 40.0


def _ramp(v: float, target: float, a: float, dt: float) -> tuple[float, float]:
    """(distance travelled, new velocity) over dt, accelerating at a towards target."""
    t1 = min(dt, abs(target - v) / a) if a > 0 else 0.0
    sign = 1.0 if target >= v else -1.0
    v1 = v + sign * a * t1
    return v * t1 + 0.5 * sign * a * t1 * t1 + v1 * (dt - t1), (target if t1 < dt else v1)


class FakeURArm:
    def __init__(self, host: str = "192.168.1.10", q0: Sequence[float] = HOME,
                 clock: Callable[[], float] = time.monotonic, servo_speed: float = 0.5) -> None:
        self.host, self.clock, self.servo_speed = host, clock, servo_speed
        self.q = [float(x) for x in q0]
        self.qd = [0.0] * 6
        self.mode = "idle"  # idle | speed | servo | move | stopping
        self.qd_target = [0.0] * 6
        self.accel = 0.0
        self.tcp = self._fk()
        self.tcp_v = [0.0] * 6
        self.servo_target: list[float] | None = None
        self.servo_until = 0.0
        self.move_target: list[float] | None = None
        self.move_speed = 0.0
        self.protective_stopped = False
        self.emergency_stopped = False
        self.link_up = True
        self.refuse_reconnects = 0
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._t = clock()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ the simulated controller
    def _fk(self) -> list[float]:
        t = kinematics.fk(self.q)
        return [float(t[0, 3]), float(t[1, 3]), float(t[2, 3]), *matrix_to_rotvec(t[:3, :3])]

    def advance(self) -> None:
        now = self.clock()
        dt, self._t = max(0.0, now - self._t), now
        if dt == 0.0:
            return
        if self.mode in ("speed", "stopping", "move"):
            if self.mode == "move" and self.move_target is not None:
                self.qd_target = [max(-self.move_speed, min(self.move_speed, (t - q) / max(dt, 1e-3)))
                                  for t, q in zip(self.move_target, self.q, strict=True)]
            for i in range(6):
                dq, self.qd[i] = _ramp(self.qd[i], self.qd_target[i], self.accel, dt)
                lo, hi = kinematics.JOINT_LOW[i], kinematics.JOINT_HIGH[i]
                self.q[i] = min(max(self.q[i] + dq, lo), hi)
            if self.mode == "stopping" and not any(self.qd):
                self.mode = "idle"
            self.tcp = self._fk()
        elif self.mode in ("servo", "servo_stopping"):
            if self.mode == "servo" and now >= self.servo_until:
                self.tcp_v = [0.0] * 6
            if self.mode == "servo_stopping":
                speed = math.sqrt(sum(v * v for v in self.tcp_v[:3])) or 1.0
                scale = max(0.0, 1.0 - self.accel * dt / speed)
                self.tcp_v = [v * scale for v in self.tcp_v]
            for i in range(6):
                step = self.tcp_v[i] * dt
                if self.servo_target is not None and self.mode == "servo":
                    left = self.servo_target[i] - self.tcp[i]
                    if abs(step) >= abs(left):
                        step, self.tcp_v[i] = left, 0.0
                self.tcp[i] += step
        self.qd = [0.0 if abs(v) < 1e-12 else v for v in self.qd]

    def drop(self) -> None:
        """The network cable is pulled: the controller's script stops the arm."""
        with self._lock:
            self.advance()
            self.link_up = False
            self._stop(10.0)

    def _stop(self, a: float) -> None:
        if self.mode in ("servo", "servo_stopping"):
            self.mode, self.accel = "servo_stopping", a
        else:
            self.mode, self.qd_target, self.accel = "stopping", [0.0] * 6, a

    def _halt(self) -> None:
        self.qd, self.tcp_v, self.mode = [0.0] * 6, [0.0] * 6, "idle"

    # ------------------------------------------------------------ injection
    def sdk(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(RTDEControlInterface=self._control, RTDEReceiveInterface=self._receive)

    def modules(self) -> dict[str, types.ModuleType]:
        ctrl, recv = types.ModuleType("rtde_control"), types.ModuleType("rtde_receive")
        ctrl.RTDEControlInterface = self._control  # type: ignore[attr-defined]
        recv.RTDEReceiveInterface = self._receive  # type: ignore[attr-defined]
        return {"rtde_control": ctrl, "rtde_receive": recv}

    def _control(self, hostname: str, frequency: float = -1.0, *args: Any) -> RTDEControlInterface:
        return RTDEControlInterface(self, hostname, frequency)

    def _receive(self, hostname: str, frequency: float = -1.0, *args: Any) -> RTDEReceiveInterface:
        return RTDEReceiveInterface(self, hostname, frequency)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class _Iface:
    def __init__(self, arm: FakeURArm, hostname: str, frequency: float) -> None:
        if hostname != arm.host or not arm.link_up:
            raise RuntimeError(f"RTDE: could not connect to {hostname}:30004 (connection refused)")
        self.arm, self._connected = arm, True

    def isConnected(self) -> bool:
        return self._connected and self.arm.link_up

    def reconnect(self) -> bool:
        with self.arm._lock:
            self.arm.calls.append(("reconnect", ()))
            if self.arm.refuse_reconnects > 0:
                self.arm.refuse_reconnects -= 1
                return False
            self.arm.link_up = self._connected = True
            return True

    def disconnect(self) -> None:
        self._connected = False


class RTDEControlInterface(_Iface):
    def _cmd(self, name: str, *args: Any) -> bool:
        arm = self.arm
        if not self.isConnected():
            raise RuntimeError(f"RTDEControlInterface: {name}: the RTDE connection is lost")
        arm.advance()
        arm.calls.append((name, args))
        return not (arm.protective_stopped or arm.emergency_stopped)

    def speedJ(self, qd: Sequence[float], acceleration: float = 0.5, time: float = 0.0) -> bool:
        if len(qd) != 6 or any(abs(v) > JOINT_SPEED_MAX for v in qd) or not 0 < acceleration <= ACCEL_MAX:
            raise ValueError(f"speedJ: qd {list(qd)} / acceleration {acceleration} out of range")
        with self.arm._lock:
            if not self._cmd("speedJ", list(qd), acceleration, time):
                return False
            self.arm.mode, self.arm.qd_target, self.arm.accel = "speed", [float(v) for v in qd], acceleration
            return True

    def speedStop(self, a: float = 10.0) -> bool:
        with self.arm._lock:
            ok = self._cmd("speedStop", a)
            if self.arm.mode in ("speed", "move", "stopping"):
                self.arm._stop(a)
            return ok

    def servoL(self, pose: Sequence[float], speed: float, acceleration: float, time: float,
               lookahead_time: float, gain: float) -> bool:
        if len(pose) != 6 or not 0.03 <= lookahead_time <= 0.2 or not 100 <= gain <= 2000 or time <= 0:
            raise ValueError(f"servoL: pose {list(pose)}, time {time}, lookahead {lookahead_time}, "
                             f"gain {gain} out of range")
        arm = self.arm
        with arm._lock:
            if not self._cmd("servoL", list(pose), speed, acceleration, time, lookahead_time, gain):
                return False
            if arm.mode not in ("servo", "servo_stopping"):
                arm.tcp_v = [0.0] * 6
            arm.mode, arm.servo_target, arm.servo_until = "servo", [float(p) for p in pose], arm.clock() + time
            v = [(t - c) / time for t, c in zip(pose, arm.tcp, strict=True)]
            lin = math.sqrt(sum(x * x for x in v[:3]))
            scale = min(1.0, arm.servo_speed / lin) if lin > 0 else 1.0
            arm.tcp_v = [x * scale for x in v]
            return True

    def servoStop(self, a: float = 10.0) -> bool:
        with self.arm._lock:
            ok = self._cmd("servoStop", a)
            if self.arm.mode == "servo":
                self.arm._stop(a)
            return ok

    def stopJ(self, a: float = 2.0, asynchronous: bool = False) -> bool:
        with self.arm._lock:
            ok = self._cmd("stopJ", a, asynchronous)
            self.arm._stop(a)
            return ok

    def stopL(self, a: float = 10.0, asynchronous: bool = False) -> bool:
        with self.arm._lock:
            ok = self._cmd("stopL", a, asynchronous)
            self.arm._stop(a)
            return ok

    def moveJ(self, q: Sequence[float], speed: float = 1.05, acceleration: float = 1.4,
              asynchronous: bool = False) -> bool:
        if len(q) != 6:
            raise ValueError("moveJ: q needs 6 values")
        with self.arm._lock:
            if not self._cmd("moveJ", list(q), speed, acceleration, asynchronous):
                return False
            self.arm.mode, self.arm.move_target = "move", [float(x) for x in q]
            self.arm.move_speed, self.arm.accel = speed, acceleration
            if not asynchronous:  # the blocking call returns at the target
                self.arm.q, self.arm.qd, self.arm.mode = list(self.arm.move_target), [0.0] * 6, "idle"
                self.arm.tcp = self.arm._fk()
            return True

    def triggerProtectiveStop(self) -> bool:
        with self.arm._lock:
            self._cmd("triggerProtectiveStop")
            self.arm.protective_stopped = True
            self.arm._halt()
            return True

    def stopScript(self) -> None:
        with self.arm._lock:
            self._cmd("stopScript")
            self.arm._stop(10.0)


class RTDEReceiveInterface(_Iface):
    def _read(self) -> FakeURArm:
        with self.arm._lock:
            if self.isConnected():  # a dropped link: the receive thread's last values (stale)
                self.arm.advance()
        return self.arm

    def getActualQ(self) -> list[float]:
        return list(self._read().q)

    def getActualQd(self) -> list[float]:
        return list(self._read().qd)

    def getActualTCPPose(self) -> list[float]:
        return list(self._read().tcp)

    def isProtectiveStopped(self) -> bool:
        return self._read().protective_stopped

    def isEmergencyStopped(self) -> bool:
        return self._read().emergency_stopped

    def getSafetyMode(self) -> int:
        arm = self._read()
        return 7 if arm.emergency_stopped else 3 if arm.protective_stopped else 1

