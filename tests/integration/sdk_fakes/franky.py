"""A fake of `franky` (franky-control 2.x) as FrankaDriver uses it.

`new()` returns a module-like namespace with the names the driver calls (Robot, Gripper,
JointMotion, JointVelocityMotion, JointStopMotion, JointVelocityStopMotion, Duration,
RealtimeConfig, the exception classes) bound to one simulated arm, `ns.arm`:

- joints move towards a JointMotion target at `speed` rad/s, or at a JointVelocityMotion's
  velocity until its duration runs out (franky then stops the arm itself); the state is
  integrated from time.monotonic() whenever it is read;
- a stop motion or Robot.stop() stops the joints at once (the real arm decelerates in a few ms);
- `move(..., asynchronous=True)` raises a pending motion error (`arm.pending_error`) the way
  franky re-raises an asynchronous motion's exception on the next move;
- `arm.network_down` makes every call raise NetworkException (a pulled cable);
- every call is logged in `arm.log` as (name, args).
Units as franky's: rad, rad/s, m; quaternions [x, y, z, w].
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

NEUTRAL = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)


class NetworkException(Exception):
    pass


class ControlException(Exception):
    pass


class CommandException(Exception):
    pass


class InvalidOperationException(Exception):
    pass


class RealtimeConfig:
    Enforce = "Enforce"
    Ignore = "Ignore"


class Duration:
    def __init__(self, ms: int = 0) -> None:
        self.ms = int(ms)


class JointMotion:
    def __init__(self, target: Any, relative_dynamics_factor: float = 1.0) -> None:
        self.target = np.asarray(target, dtype=np.float64).reshape(7)
        self.relative_dynamics_factor = relative_dynamics_factor


class JointVelocityMotion:
    def __init__(self, target: Any, duration: Duration | None = None,
                 relative_dynamics_factor: float = 1.0) -> None:
        self.target = np.asarray(target, dtype=np.float64).reshape(7)
        self.duration = duration if duration is not None else Duration(1000)


class JointStopMotion:
    pass


class JointVelocityStopMotion:
    pass


@dataclass
class FakeArm:
    q: np.ndarray = field(default_factory=lambda: np.array(NEUTRAL))
    speed: float = 1.0  # rad/s towards a JointMotion target
    mode: tuple | None = None  # ("position", target) | ("velocity", v, until)
    t: float = field(default_factory=time.monotonic)
    has_errors: bool = False
    pending_error: Exception | None = None
    network_down: bool = False
    refuse_connect: bool = False
    rdf: float = 1.0
    width: float = 0.08
    max_width: float = 0.08
    object_width: float = 0.0  # what a grasp closes on
    gripper_busy: bool = False
    robots: int = 0
    log: list[tuple[str, tuple]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self) -> None:
        now = time.monotonic()
        dt, self.t = now - self.t, now
        if self.mode is None:
            return
        if self.mode[0] == "position":
            d = self.mode[1] - self.q
            self.q = self.q + np.clip(d, -self.speed * dt, self.speed * dt)
            if np.all(np.abs(self.mode[1] - self.q) < 1e-12):
                self.mode = None
        else:
            _, v, until = self.mode
            run = max(0.0, min(now, until) - (now - dt))
            self.q = self.q + v * run
            if now >= until:
                self.mode = None

    def check(self) -> None:
        if self.network_down:
            raise NetworkException("libfranka: UDP receive: Timeout")

    def calls(self, name: str) -> list[tuple]:
        return [a for n, a in self.log if n == name]


class BoolFuture:
    def __init__(self, arm: FakeArm) -> None:
        self.arm = arm

    def wait(self, timeout: float | None = None) -> bool:
        return not self.arm.gripper_busy

    def get(self) -> bool:
        return True


class Affine:
    def __init__(self, translation: np.ndarray, quaternion: np.ndarray) -> None:
        self.translation, self.quaternion = translation, quaternion


def _fk(q: np.ndarray) -> Affine:
    """A toy forward kinematics: smooth in q, so a still arm has a still pose."""
    x = 0.3 + 0.2 * math.cos(q[0]) * math.cos(q[1])
    y = 0.2 * math.sin(q[0])
    z = 0.5 + 0.1 * math.sin(q[3] + 2.356)
    yaw = q[0] + q[6] - 0.785
    return Affine(np.array([x, y, z]), np.array([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)]))


def new() -> SimpleNamespace:
    arm = FakeArm()

    class Robot:
        def __init__(self, fci_hostname: str, realtime_config: Any = RealtimeConfig.Enforce,
                     **_: Any) -> None:
            with arm.lock:
                arm.log.append(("Robot", (fci_hostname, realtime_config)))
                if arm.refuse_connect or arm.network_down:
                    raise NetworkException(f"libfranka: Connection to {fci_hostname} timed out")
                arm.robots += 1

        def recover_from_errors(self) -> bool:
            with arm.lock:
                arm.check()
                arm.log.append(("recover_from_errors", ()))
                arm.has_errors = False
                return True

        @property
        def has_errors(self) -> bool:
            arm.check()
            return arm.has_errors

        @property
        def relative_dynamics_factor(self) -> float:
            return arm.rdf

        @relative_dynamics_factor.setter
        def relative_dynamics_factor(self, v: float) -> None:
            arm.log.append(("relative_dynamics_factor", (v,)))
            arm.rdf = float(v)

        def move(self, motion: Any, asynchronous: bool = False) -> None:
            with arm.lock:
                arm.check()
                arm.advance()
                arm.log.append(("move", (motion, asynchronous)))
                if arm.pending_error is not None:
                    e, arm.pending_error = arm.pending_error, None
                    arm.mode = None
                    raise e
                if isinstance(motion, JointMotion):
                    arm.mode = ("position", motion.target.copy())
                elif isinstance(motion, JointVelocityMotion):
                    arm.mode = ("velocity", motion.target.copy(), arm.t + motion.duration.ms / 1000)
                elif isinstance(motion, JointStopMotion | JointVelocityStopMotion):
                    arm.mode = None
                else:
                    raise InvalidOperationException(f"fake franky: unsupported motion {motion!r}")
                if not asynchronous:
                    self._finish()

        def _finish(self) -> None:
            if arm.mode is not None and arm.mode[0] == "position":
                arm.q = arm.mode[1].copy()
            arm.mode = None

        def join_motion(self, timeout: float | None = None) -> bool:
            with arm.lock:
                arm.check()
                arm.log.append(("join_motion", (timeout,)))
                self._finish()
                return True

        def stop(self) -> None:
            with arm.lock:
                arm.check()
                arm.log.append(("stop", ()))
                arm.advance()
                arm.mode = None

        @property
        def is_in_control(self) -> bool:
            with arm.lock:
                arm.check()
                arm.advance()
                return arm.mode is not None

        @property
        def current_joint_positions(self) -> np.ndarray:
            with arm.lock:
                arm.check()
                arm.advance()
                return arm.q.copy()

        @property
        def current_joint_state(self) -> SimpleNamespace:
            q = self.current_joint_positions
            return SimpleNamespace(position=q, velocity=np.zeros(7))

        @property
        def current_cartesian_state(self) -> SimpleNamespace:
            pose = _fk(self.current_joint_positions)
            return SimpleNamespace(pose=SimpleNamespace(end_effector_pose=pose))

    class Gripper:
        def __init__(self, fci_hostname: str) -> None:
            arm.check()
            arm.log.append(("Gripper", (fci_hostname,)))

        @property
        def max_width(self) -> float:
            return arm.max_width

        @property
        def width(self) -> float:
            arm.check()
            return arm.width

        def move_async(self, width: float, speed: float) -> BoolFuture:
            arm.check()
            arm.log.append(("gripper.move_async", (width, speed)))
            arm.width = min(max(float(width), 0.0), arm.max_width)
            return BoolFuture(arm)

        def grasp_async(self, width: float, speed: float, force: float, epsilon_inner: float = 0.005,
                        epsilon_outer: float = 0.005) -> BoolFuture:
            arm.check()
            arm.log.append(("gripper.grasp_async", (width, speed, force, epsilon_inner, epsilon_outer)))
            arm.width = arm.object_width
            return BoolFuture(arm)

        def stop(self) -> bool:
            arm.log.append(("gripper.stop", ()))
            return True

    return SimpleNamespace(
        arm=arm, Robot=Robot, Gripper=Gripper, JointMotion=JointMotion,
        JointVelocityMotion=JointVelocityMotion, JointStopMotion=JointStopMotion,
        JointVelocityStopMotion=JointVelocityStopMotion, Duration=Duration,
        RealtimeConfig=RealtimeConfig, NetworkException=NetworkException,
        ControlException=ControlException, CommandException=CommandException,
        InvalidOperationException=InvalidOperationException)
