"""A fake of `xarm-python-sdk` (`xarm.wrapper.XArmAPI`): exactly the calls XArmDriver makes.

`FakeXArm` is the simulated controller: in servo mode (mode 1, state 0) set_servo_angle_j
moves the joints towards the target at `joint_speed`, set_servo_cartesian moves the TCP
(mm, rad) towards its target at `tcp_speed`; position mode (mode 0) takes set_servo_angle
(the home move); set_state(4) stops at once and clears the targets; the gripper moves
towards its target (0 closed .. 850 open) at `gripper_rate` per second. Joints and TCP
integrate separately (no xArm kinematics here). Units follow the SDK: degrees unless
`is_radian` (per call, else the instance default), mm for positions.

Return codes as the SDK documents them: 0 ok, -1 not connected (`drop()`), 1 uncleared
controller errors (`fault(code)`), 9 state not ready to move (stopped, or wrong mode), 12
parameter error; getters return (-1, 'xArm is not connect') when disconnected.
`refuse_reconnects` makes the next connect() attempts fail. Every call is
recorded in `calls` as (name, args, kwargs).

Inject with `XArmDriver(cfg, sdk=arm.sdk())`, or `arm.modules()` into sys.modules.
"""

from __future__ import annotations

import math
import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

_D = math.pi / 180.0
NOT_CONNECTED = "xArm is not connect"  # what the SDK's getters return beside code -1


class FakeXArm:
    def __init__(self, host: str = "192.168.1.200", dof: int = 7, clock: Callable[[], float] = time.monotonic,
                 joint_speed: float = math.pi, tcp_speed: float = 500.0, gripper_rate: float = 5000.0) -> None:
        self.host, self.dof, self.clock = host, dof, clock
        self.joint_speed, self.tcp_speed, self.gripper_rate = joint_speed, tcp_speed, gripper_rate
        self.q = [0.0, -0.3, 0.0, 0.6, 0.0, 0.9, 0.0][:dof]
        self.q_target: list[float] | None = None
        self.joint_speed_now = joint_speed
        self.tcp = [300.0, 0.0, 250.0, math.pi, 0.0, 0.0]  # mm, rad
        self.tcp_target: list[float] | None = None
        self.gripper = 850.0
        self.gripper_target = 850.0
        self.mode, self.state = 0, 4
        self.enabled = False
        self.gripper_enabled = False
        self.error_code = self.warn_code = 0
        self.link_up = True
        self.refuse_reconnects = 0
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._t = clock()
        self._lock = threading.RLock()

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def advance(self) -> None:
        now = self.clock()
        dt, self._t = max(0.0, now - self._t), now
        if self.state == 0 and self.q_target is not None:
            step = self.joint_speed_now * dt
            self.q = [q + max(-step, min(step, t - q)) for q, t in zip(self.q, self.q_target, strict=True)]
        if self.state == 0 and self.tcp_target is not None:
            lin = [t - c for t, c in zip(self.tcp_target[:3], self.tcp[:3], strict=True)]
            dist = math.sqrt(sum(x * x for x in lin))
            frac = 1.0 if dist <= self.tcp_speed * dt else self.tcp_speed * dt / dist
            self.tcp = [c + (t - c) * frac for c, t in zip(self.tcp, self.tcp_target, strict=True)]
        g = self.gripper_rate * dt
        self.gripper += max(-g, min(g, self.gripper_target - self.gripper))

    def fault(self, error_code: int) -> None:
        """The controller reports an error (e.g. 31: collision caused abnormal current): it stops."""
        with self._lock:
            self.advance()
            self.error_code, self.state = error_code, 4
            self.q_target = self.tcp_target = None

    def drop(self) -> None:
        with self._lock:
            self.advance()
            self.link_up = False
            self.state, self.q_target, self.tcp_target = 4, None, None  # the controller stops

    def sdk(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(XArmAPI=self._api)

    def modules(self) -> dict[str, types.ModuleType]:
        pkg, wrapper = types.ModuleType("xarm"), types.ModuleType("xarm.wrapper")
        wrapper.XArmAPI = self._api  # type: ignore[attr-defined]
        pkg.wrapper = wrapper  # type: ignore[attr-defined]
        pkg.__path__ = []  # type: ignore[attr-defined]
        return {"xarm": pkg, "xarm.wrapper": wrapper}

    def _api(self, port: str | None = None, is_radian: bool = False, do_not_open: bool = False,
             **kwargs: Any) -> XArmAPI:
        return XArmAPI(self, port, is_radian, do_not_open)


class XArmAPI:
    def __init__(self, arm: FakeXArm, port: str | None, is_radian: bool, do_not_open: bool) -> None:
        self._fake, self._port, self._default_radian = arm, port, is_radian
        self._connected = False
        if not do_not_open:
            self.connect()

    # ------------------------------------------------------------ plumbing
    def _rec(self, name: str, *args: Any, **kwargs: Any) -> bool:
        """Record the call; False when not connected (the SDK's code -1)."""
        with self._fake._lock:
            self._fake.calls.append((name, args, kwargs))
            if not self.connected:
                return False
            self._fake.advance()
            return True

    def _rad(self, is_radian: bool | None) -> bool:
        return self._default_radian if is_radian is None else is_radian

    def _out(self, values: Sequence[float], is_radian: bool | None) -> list[float]:
        return [float(v) if self._rad(is_radian) else float(v) / _D for v in values]

    def _in(self, values: Sequence[float], is_radian: bool | None) -> list[float]:
        return [float(v) if self._rad(is_radian) else float(v) * _D for v in values]

    def _motion(self, mode: int) -> int:
        arm = self._fake
        if arm.error_code:
            return 1
        if not arm.enabled or arm.state != 0 or arm.mode != mode:
            return 9
        return 0

    # ------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        return self._connected and self._fake.link_up

    @property
    def error_code(self) -> int:
        return self._fake.error_code

    @property
    def warn_code(self) -> int:
        return self._fake.warn_code

    @property
    def state(self) -> int:
        return self._fake.state

    @property
    def mode(self) -> int:
        return self._fake.mode

    def connect(self, port: str | None = None, baudrate: int | None = None, timeout: float | None = None) -> None:
        arm = self._fake
        with arm._lock:
            arm.calls.append(("connect", (), {}))
            if (port or self._port) != arm.host:
                raise Exception(f"connect {port or self._port} failed")  # noqa: TRY002 - as the SDK does
            if arm.refuse_reconnects > 0:
                arm.refuse_reconnects -= 1
                return
            arm.link_up = self._connected = True

    def disconnect(self) -> None:
        self._rec("disconnect")
        self._connected = False

    # ------------------------------------------------------------ state
    def motion_enable(self, enable: bool = True, servo_id: int | None = None) -> int:
        if not self._rec("motion_enable", enable=enable):
            return -1
        self._fake.enabled = bool(enable)
        self._fake.state = 0 if enable else 4
        return 0

    def set_mode(self, mode: int = 0) -> int:
        if not self._rec("set_mode", mode):
            return -1
        self._fake.mode = int(mode)
        return 0

    def set_state(self, state: int = 0) -> int:
        if not self._rec("set_state", state):
            return -1
        arm = self._fake
        if state == 0 and arm.error_code:
            return 1
        arm.state = int(state)
        if state == 4:
            arm.q_target = arm.tcp_target = None
        return 1 if arm.error_code else 0  # the code reports uncleared errors, the stop still applies

    def clean_error(self) -> int:
        if not self._rec("clean_error"):
            return -1
        self._fake.error_code = 0
        return 0

    def clean_warn(self) -> int:
        if not self._rec("clean_warn"):
            return -1
        self._fake.warn_code = 0
        return 0

    def get_err_warn_code(self, show: bool = False, lang: str = "en") -> tuple[int, Any]:
        if not self._rec("get_err_warn_code"):
            return -1, NOT_CONNECTED
        return 0, [self._fake.error_code, self._fake.warn_code]

    def emergency_stop(self) -> None:
        """set_state(4) until the state reads 4 (SDK 1.18); returns None."""
        if not self._rec("emergency_stop"):
            return
        arm = self._fake
        arm.q_target = arm.tcp_target = None
        arm.state = 4

    # ------------------------------------------------------------ motion
    def set_servo_angle_j(self, angles: Sequence[float], speed: float | None = None, mvacc: float | None = None,
                          mvtime: float | None = None, is_radian: bool | None = None, **kwargs: Any) -> int:
        if not self._rec("set_servo_angle_j", list(angles), is_radian=is_radian):
            return -1
        if len(angles) < self._fake.dof:
            return 12
        code = self._motion(1)
        if code == 0:
            self._fake.q_target = self._in(angles[: self._fake.dof], is_radian)
            self._fake.joint_speed_now = self._fake.joint_speed
        return code

    def set_servo_cartesian(self, mvpose: Sequence[float], speed: float | None = None, mvacc: float | None = None,
                            mvtime: float = 0, is_radian: bool | None = None, is_tool_coord: bool = False,
                            **kwargs: Any) -> int:
        if not self._rec("set_servo_cartesian", list(mvpose), is_radian=is_radian):
            return -1
        if len(mvpose) != 6:
            return 12
        code = self._motion(1)
        if code == 0:
            self._fake.tcp_target = [*map(float, mvpose[:3]), *self._in(mvpose[3:], is_radian)]
        return code

    def set_servo_angle(self, servo_id: int | None = None, angle: Sequence[float] | None = None,
                        speed: float | None = None, mvacc: float | None = None, mvtime: float | None = None,
                        relative: bool = False, is_radian: bool | None = None, wait: bool = False,
                        timeout: float | None = None, **kwargs: Any) -> int:
        if not self._rec("set_servo_angle", angle=list(angle or []), speed=speed, is_radian=is_radian, wait=wait):
            return -1
        code = self._motion(0)
        if code == 0 and angle is not None:
            arm = self._fake
            arm.q_target = self._in(angle, is_radian)
            arm.joint_speed_now = self._in([speed], is_radian)[0] if speed else arm.joint_speed
        return code

    def get_servo_angle(self, servo_id: int | None = None, is_radian: bool | None = None,
                        is_real: bool = False) -> tuple[int, Any]:
        """Seven angles whatever the arm (the SDK's list; an xArm6 pads with 0)."""
        if not self._rec("get_servo_angle"):
            return -1, NOT_CONNECTED
        q = [*self._fake.q, *[0.0] * (7 - self._fake.dof)]
        return 0, self._out(q, is_radian)

    def get_position(self, is_radian: bool | None = None) -> tuple[int, Any]:
        if not self._rec("get_position"):
            return -1, NOT_CONNECTED
        tcp = self._fake.tcp
        return 0, [*tcp[:3], *self._out(tcp[3:], is_radian)]

    # ------------------------------------------------------------ gripper
    def set_gripper_enable(self, enable: bool, **kwargs: Any) -> int:
        if not self._rec("set_gripper_enable", enable):
            return -1
        self._fake.gripper_enabled = bool(enable)
        return 0

    def set_gripper_mode(self, mode: int, **kwargs: Any) -> int:
        return 0 if self._rec("set_gripper_mode", mode) else -1

    def set_gripper_position(self, pos: float, wait: bool = False, speed: float | None = None,
                             auto_enable: bool = False, timeout: float | None = None, **kwargs: Any) -> int:
        if not self._rec("set_gripper_position", pos, wait=wait, speed=speed):
            return -1
        if not self._fake.gripper_enabled:
            return 9
        if not -10 <= pos <= 850:
            return 12
        self._fake.gripper_target = float(pos)
        return 0

    def get_gripper_position(self, **kwargs: Any) -> tuple[int, Any]:
        if not self._rec("get_gripper_position"):
            return -1, NOT_CONNECTED
        return 0, self._fake.gripper
