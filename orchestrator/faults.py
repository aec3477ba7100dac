"""Why an episode aborted, and what that means for its trial, its arm and the run (pure).

The give-up counter of a trial (5 aborted attempts, then the trial is given up) counts only
aborts the trial itself caused: its policy or its scene. Infrastructure faults (the bridge,
an e-stop, another client on the arm, the RobotActor, a policy worker restart, media storage,
the database, the orchestrator stopping) never count against a trial: the trial is re-queued
as it was, and the fault takes the arm out of scheduling (probed with backoff) or ends the run.

Shells (orchestrator.episode, orchestrator.actors.robot, orchestrator.runner) turn exceptions
and bridge replies into an AbortCause; everything after that is decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AbortCause(StrEnum):
    # attributable to the trial: counted towards its give-up
    POLICY = "policy"  # the policy raised, failed to load/reset, or sent an invalid action
    SCENE = "scene"  # the arm could not set up this trial's scene (reset refused by the driver)
    UNKNOWN = "unknown"  # nobody could be blamed: counted, so a systematic bug gives up
    # infrastructure: never counted
    BRIDGE = "bridge"  # bridge unreachable, timed out, restarted, or failed mid-episode
    ESTOP = "estop"  # the arm's e-stop latched
    OTHER_CLIENT = "other_client"  # another client reset or drove the arm (episode taken over)
    ROBOT_ACTOR = "robot_actor"  # the RobotActor died or hung (episode timed out)
    WORKER = "worker"  # the policy worker died or restarted (Ray restarts it)
    MEDIA = "media"  # an episode's media could not be written (folder unwritable, disk full)
    ARM_LEASE_LOST = "arm_lease_lost"  # another orchestrator holds the arm now
    LEASE_EXPIRED = "lease_expired"  # the orchestrator holding the trial stopped or lost contact
    SHUTDOWN = "shutdown"  # the orchestrator was stopped (Ctrl-C, SIGTERM, end of a run)


class ArmFate(StrEnum):
    KEEP = "keep"  # the arm takes the next trial
    OFFLINE = "offline"  # offline, probed with backoff before it gets more work
    MEDIA_CHECK = "media_check"  # held out until its media folder is writable again


@dataclass(frozen=True)
class AbortDisposition:
    counts_against_trial: bool
    arm: ArmFate


TRIAL_CAUSES = frozenset({AbortCause.POLICY, AbortCause.SCENE, AbortCause.UNKNOWN})

_ARM: dict[AbortCause, ArmFate] = {
    AbortCause.BRIDGE: ArmFate.OFFLINE,
    AbortCause.ESTOP: ArmFate.OFFLINE,
    AbortCause.OTHER_CLIENT: ArmFate.OFFLINE,
    AbortCause.ROBOT_ACTOR: ArmFate.OFFLINE,
    AbortCause.MEDIA: ArmFate.MEDIA_CHECK,
}


def counts_against_trial(cause: AbortCause) -> bool:
    """Whether an abort with this cause uses up one of the trial's attempts."""
    return cause in TRIAL_CAUSES


def disposition(cause: AbortCause) -> AbortDisposition:
    return AbortDisposition(counts_against_trial(cause), _ARM.get(cause, ArmFate.KEEP))


def should_give_up(counted_aborts: int, max_attempts: int) -> bool:
    """After `counted_aborts` aborts attributable to the trial (this one included)."""
    return counted_aborts >= max_attempts


# The bridge's refusals (robots.protocol.ErrorCode values), by where they happened.
_RESET_CODES: dict[str, AbortCause] = {
    "ESTOPPED": AbortCause.ESTOP,
    "UNAUTHORIZED": AbortCause.BRIDGE,
    "INTERNAL": AbortCause.BRIDGE,
    "UNSUPPORTED_VERSION": AbortCause.BRIDGE,
    "UNKNOWN_TYPE": AbortCause.BRIDGE,
    "STALE_COMMAND": AbortCause.OTHER_CLIENT,
    "NOT_IN_EPISODE": AbortCause.OTHER_CLIENT,
    # the driver refused or failed this scene: the trial's own
    "DRIVER_ERROR": AbortCause.SCENE,
    "BAD_MESSAGE": AbortCause.SCENE,
    "TOO_LARGE": AbortCause.SCENE,
    "NOT_SUPPORTED": AbortCause.SCENE,
}
_EPISODE_CODES: dict[str, AbortCause] = {
    "ESTOPPED": AbortCause.ESTOP,
    "UNAUTHORIZED": AbortCause.BRIDGE,
    "INTERNAL": AbortCause.BRIDGE,
    "UNSUPPORTED_VERSION": AbortCause.BRIDGE,
    "UNKNOWN_TYPE": AbortCause.BRIDGE,
    "BAD_MESSAGE": AbortCause.BRIDGE,
    "TOO_LARGE": AbortCause.BRIDGE,
    "DRIVER_ERROR": AbortCause.BRIDGE,  # the arm's driver raised mid-episode (the arm held)
    # someone else reset the arm or sent newer commands: our episode is no longer the arm's
    "NOT_IN_EPISODE": AbortCause.OTHER_CLIENT,
    "STALE_COMMAND": AbortCause.OTHER_CLIENT,
    # the policy's action was unacceptable, or it asked for what this arm cannot give
    "NON_FINITE": AbortCause.POLICY,
    "NOT_SUPPORTED": AbortCause.POLICY,
}


def cause_of_refusal(code: str, *, during_reset: bool) -> AbortCause:
    """The cause of a bridge refusal with protocol error `code` (at reset or mid-episode).
    Unknown codes are the bridge's problem, not the trial's."""
    table = _RESET_CODES if during_reset else _EPISODE_CODES
    return table.get(code, AbortCause.BRIDGE)
