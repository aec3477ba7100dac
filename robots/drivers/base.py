"""RobotDriver: the one interface between the bridge and an arm (simulated, replayed or real).

The BridgeServer owns safety (clipping, watchdog, e-stop); a driver only executes what it is
given. Drivers are context managers: `with SimDriver(...) as d: ...` closes the arm.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from robots.protocol_actions import action_of
from robots.spaces import (
    EE_STATE,
    ActionSpec,
    ArmCommand,
    ArmSpaces,
    CameraSpec,
    SpaceKind,
    StateSpec,
    ee_delta_spec,
)
from robots.types import Action, ActionSpace, SceneSpec, Workspace

__all__ = ["ActionSpec", "ArmCommand", "CameraSpec", "Capabilities", "DriverObservation", "NotReady",
           "ResetResult", "RobotDriver", "StateSpec"]


class NotReady(RuntimeError):
    """observe() has nothing to show yet (a simulator before its first reset). Not a fault:
    the bridge's idle live stream skips quietly, and a client's observe is answered
    NOT_READY (protocol v2; v1: DRIVER_ERROR "not ready: ...") without holding the arm or
    logging a traceback (docs/protocol.md section 4)."""


@dataclass(frozen=True)
class Capabilities:
    driver: str  # sim | replay | <sdk name>
    cameras: tuple[CameraSpec, ...]
    action_space: ActionSpace = ActionSpace()  # noqa: RUF009 - frozen, shared safely
    workspace: Workspace = Workspace()  # noqa: RUF009 - frozen, shared safely
    needs_operator_reset: bool = False  # real arms: a person sets the scene up
    privileged_state: bool = False  # sim only: ground-truth state for the scripted oracle
    tags: tuple[str, ...] = ()  # capabilities a protocol can require (e.g. "drawer")
    # Declared spaces (protocol v2). `action` None: RT-2's ee_delta space with the limits and
    # rate of `action_space` (a version-1 arm). `state`: the named fields of `proprio`.
    action: ActionSpec | None = None
    state: StateSpec = EE_STATE

    @property
    def action_spec(self) -> ActionSpec:
        return self.action if self.action is not None else ee_delta_spec(self.action_space)

    @property
    def control_hz(self) -> float:
        return self.action_spec.control_hz

    def spaces(self) -> ArmSpaces:
        return ArmSpaces(self.action_spec, self.cameras, self.state)


@dataclass(frozen=True)
class ResetResult:
    ready: bool
    instructions: str = ""  # what an operator must do before the episode can start


@dataclass(frozen=True)
class DriverObservation:
    frames: dict[str, np.ndarray]  # camera name -> HxWx3 uint8 RGB
    proprio: tuple[float, ...]  # the state vector, in the order of Capabilities.state
    sim_success: bool | None = None
    info: dict = field(default_factory=dict)


class RobotDriver(ABC):
    """An arm. Every method returns promptly (the bridge calls them on its control thread)."""

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def reset(self, scene: SceneSpec) -> ResetResult: ...

    @abstractmethod
    def observe(self) -> DriverObservation: ...

    @abstractmethod
    def apply(self, action: Action) -> None:
        """Execute one already-clipped, finite RT-2 (ee_delta) action."""

    def apply_command(self, command: ArmCommand) -> None:
        """Execute one already-clipped, finite command in the declared action space. The
        bridge calls this; the default serves ee_delta drivers through `apply`. A driver that
        declares another space overrides it."""
        ee = self.__dict__.get("_apply_command_ee_delta")
        if ee is None:  # capabilities() builds its dataclasses: once per driver, not per step
            ee = self.__dict__["_apply_command_ee_delta"] = (
                self.capabilities().action_spec.kind is SpaceKind.EE_DELTA)
        if not ee:
            raise NotImplementedError(f"{type(self).__name__} declares a non-ee_delta space: "
                                      "override apply_command")
        self.apply(action_of(command.values, terminate=command.terminate))

    @abstractmethod
    def hold(self) -> None:
        """Protective stop: keep the current pose, stop moving."""

    def estop(self) -> None:
        """The bridge's e-stop latched: stop with the SDK's own protective / emergency stop
        where it has one (UR triggerProtectiveStop, xArm emergency_stop). Default: hold().
        Not a substitute for the hardware emergency stop."""
        self.hold()

    def privileged_state(self) -> dict | None:
        """Ground truth for the scripted oracle (sim only); None on real arms."""
        return None

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
