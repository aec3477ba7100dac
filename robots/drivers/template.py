"""TemplateArmDriver: where a real arm's SDK plugs into evalfleet.

Copy this file, rename the class, and fill in every method that raises NotImplementedError
with your SDK's calls. The BridgeServer hosting the driver already clips actions to the
workspace and per-step limits, refuses NaN/inf, runs the watchdog and latches e-stop; the
driver only executes what it is given, and must return promptly from every call (the bridge
calls it on its control thread at the control rate).

Action spaces (docs/protocol.md section 5): as written, the template is an RT-2 `ee_delta`
arm (end-effector deltas, `apply(Action)`). For a joint-space or absolute-pose arm, declare
`Capabilities(action=ActionSpec(SpaceKind.JOINT_POSITION, names, units, low, high, gripper,
control_hz), state=StateSpec(names, units), ...)`, give every camera its `role` (external
or wrist), return `proprio` in the order of `state`, and override `apply_command(ArmCommand)`:
the bridge hands it a finite vector already clipped to the declared low/high, plus the
terminate flag. Such an arm is served in protocol v2 only.

BEFORE THIS DRIVER MOVES A REAL ARM (checklist; every item must be true and signed off):

1. A hardware emergency stop is wired into the arm's safety circuit, within reach of the
   operator, and tested this session (press it during motion; the arm stops). The bridge's
   hold/e-stop is a protective stop on the software path, NOT an emergency stop.
2. Workspace limits are measured on this station (table height, walls, fixtures, camera
   mounts) and entered in `capabilities().workspace`, with margin; the SDK's own joint and
   Cartesian limits are configured as a second layer.
3. Speed and acceleration limits are set in the controller (not only in the per-step action
   limits): per-step deltas / control period must stay below what a person can react to.
4. The watchdog is configured (bridge `watchdog_ms`) and tested on this arm: stop sending
   commands mid-motion; the arm holds within watchdog_ms plus one control period. The SDK's
   own communication watchdog (if any) is enabled too.
5. CURVE keys are configured: the bridge has its key pair and an allow list of orchestrator
   public keys; without them anyone on the lab network can move the arm.
6. `hold()` and `close()` are verified to stop the arm from any state, and `close()` leaves
   it stopped (brakes engaged or holding position) even when the bridge exits on an error.
7. Cameras are calibrated and named as the protocol expects; frames are RGB uint8 HxWx3.
8. Resets are done by an operator (needs_operator_reset=True): nobody is in the workspace
   when the operator confirms, and the scene matches the instructions.
"""

from __future__ import annotations

from robots.drivers.base import (
    CameraSpec,
    Capabilities,
    DriverObservation,
    ResetResult,
    RobotDriver,
)
from robots.types import Action, ActionSpace, SceneSpec, Workspace


def _todo(what: str) -> NotImplementedError:
    return NotImplementedError(
        f"TemplateArmDriver.{what}: this is a template. Copy robots/drivers/template.py, "
        f"put your arm SDK's call here (see the method's docstring), and work through the "
        f"hardware checklist in the module docstring before using it on a real arm."
    )


class TemplateArmDriver(RobotDriver):
    """A real arm behind the bridge. Every SDK call is a NotImplementedError to fill in."""

    def __init__(
        self,
        host: str = "192.168.1.10",
        cameras: tuple[CameraSpec, ...] = (CameraSpec("main", 480, 640),),
        control_hz: float = 5.0,
        workspace: Workspace | None = None,
    ) -> None:
        self.host = host
        self.cameras = cameras
        self.control_hz = control_hz
        # MEASURE these on the station (checklist item 2); the default is only a placeholder.
        self.workspace = workspace or Workspace()

    def connect(self) -> None:
        """Open the SDK connection (e.g. `self.arm = sdk.Arm(self.host)`), enable the
        controller, set speed/acceleration limits and the SDK watchdog, open the cameras.
        Raise a clear error if the arm reports a fault or its e-stop is pressed."""
        raise _todo("connect")

    def capabilities(self) -> Capabilities:
        return Capabilities(
            driver="template",
            cameras=self.cameras,
            action_space=ActionSpace(control_hz=self.control_hz),
            workspace=self.workspace,
            needs_operator_reset=True,
            privileged_state=False,
            tags=(),
        )

    def reset(self, scene: SceneSpec) -> ResetResult:
        """Move the arm to its home pose (SDK call goes here, before returning), then ask the
        operator to set the scene up; the orchestrator waits for their confirmation and sends
        the reset again with `operator_confirmed` set: then the episode may start."""
        if scene.operator_confirmed:
            return ResetResult(ready=True)
        objects = ", ".join(scene.objects) or "(none)"
        distractors = ", ".join(scene.distractors) or "(none)"
        text = (
            f"Set up: {scene.skill} with target {scene.target!r}; objects: {objects}; "
            f"distractors: {distractors}; destination: {scene.destination or '-'}; "
            f"background: {scene.background}; environment: {scene.environment}. "
            "Keep clear of the workspace, then confirm."
        )
        return ResetResult(ready=False, instructions=text)

    def observe(self) -> DriverObservation:
        """Read the end-effector pose (x y z roll pitch yaw, m/rad, robot base frame) and the
        gripper opening (0 closed .. 1 open) from the SDK, grab the latest frame of every
        camera (RGB uint8 HxWx3), and return them; sim_success stays None on a real arm."""
        raise _todo("observe")

    def apply(self, action: Action) -> None:
        """Send one Cartesian delta (action.dx..dyaw, already clipped by the bridge) and the
        gripper command as a non-blocking SDK move; never block for longer than one control
        period. `action.gripper` may be NaN (a hold): then keep the gripper as it is."""
        raise _todo("apply")

    def hold(self) -> None:
        """Protective stop: the SDK's stop/hold-position call (decelerate and keep the pose).
        Must work from any state and return promptly."""
        raise _todo("hold")

    def close(self) -> None:
        """Stop the arm (as in hold), engage brakes or hold position, close the cameras and
        the SDK connection. Must not raise when connect() never succeeded."""
