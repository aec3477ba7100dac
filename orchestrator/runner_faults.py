"""The runner's fault helpers: what an exception from a RobotActor means (AbortCause), and the
one paragraph a run ends with when the database stays away longer than the retry window."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from orchestrator.faults import AbortCause, cause_of_refusal

EXIT_RUN_STOPPED = 4  # `campaign run` / `fleet serve` exit status when the database is gone
EXIT_NO_ARM_MATCHES = 5  # ... when a campaign policy matches no arm of the fleet


class RunStopped(RuntimeError):
    """The run cannot go on (the database is gone): str() is the paragraph for the user."""

    exit_code = EXIT_RUN_STOPPED


class NoArmMatches(RunStopped):
    """A policy with pending trials matches no arm of the fleet (robots.spaces.match_pair):
    the run stops before leasing any of its trials; str() is one line per mismatched pair."""

    exit_code = EXIT_NO_ARM_MATCHES


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def unwrap(e: BaseException) -> BaseException:
    """What an actor raised: a Ray task error's `cause` (and a wrapped one's own cause)."""
    inner = e
    for _ in range(5):
        cause = getattr(inner, "cause", None)
        if not isinstance(cause, BaseException) or cause is inner:
            break
        inner = cause
    return inner


def error_line(e: BaseException, limit: int = 300) -> str:
    """One line saying what went wrong, from what an actor raised: a Ray task error is
    unwrapped to its cause (the client's own message, e.g. "bridge at tcp://... sent bad
    capabilities (protocol v2): bad capabilities: state: 7 names but 1 units"), never Ray's
    traceback header; ANSI colour codes are stripped. A BridgeError's message says what and
    where already; anything else is prefixed with its exception class."""
    from robots.client import BridgeError

    inner = unwrap(e)
    lines = [ln.strip() for ln in _ANSI.sub("", str(inner)).splitlines() if ln.strip()]
    traceback = bool(lines) and (lines[0].startswith("ray::")
                                 or any(ln.startswith("Traceback") for ln in lines))
    # a Ray traceback whose cause did not cross: its last line is "Type: message"
    line = lines[-1] if traceback else (lines[0] if lines else "")
    named = traceback or isinstance(inner, BridgeError)
    if not named and not line.startswith(inner.__class__.__name__):
        line = f"{inner.__class__.__name__}: {line}" if line else inner.__class__.__name__
    return line[:limit]


def actor_error_reason(arm: str, phase: str, e: BaseException) -> str:
    """The abort reason for a RobotActor call that raised: a refusal of the arm keeps the
    bridge's error code and message, first (`arm ur5-1 prepare failed: DRIVER_ERROR: gripper
    stuck (bridge at tcp://... refused reset)`); anything else names its exception class."""
    from robots.client import BridgeCommandError

    inner = unwrap(e)  # what the actor raised, if it did
    detail = (_ANSI.sub("", str(inner)).splitlines() or [""])[0]
    if isinstance(inner, BridgeCommandError):
        # the code and the arm's message first (summaries shorten reasons from the end), then
        # where it came from: "DRIVER_ERROR: gripper stuck (bridge at tcp://... refused reset)"
        at = detail.find(f"{inner.code}: ")
        if at < 0:
            detail = f"{inner.code}: {detail}"
        elif at > 0:
            detail = f"{detail[at:]} ({detail[:at].rstrip(': ')})"
        return f"arm {arm} {phase} failed: {detail}"[:500]
    return f"arm {arm} {phase} failed: {inner.__class__.__name__}: {detail}"[:500]


def cause_of_actor_error(e: BaseException, *, during_reset: bool) -> AbortCause:
    """Why a RobotActor call (prepare: the scene reset; run_episode) raised."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    from robots.client import BridgeCommandError, BridgeError

    if isinstance(e, RayActorError | ActorDiedError | ActorUnavailableError):
        return AbortCause.ROBOT_ACTOR
    inner = getattr(e, "cause", None) or e  # a RayTaskError wraps what the actor raised
    if isinstance(inner, BridgeCommandError):
        return cause_of_refusal(inner.code, during_reset=during_reset)
    if isinstance(inner, BridgeError):
        return AbortCause.BRIDGE
    return AbortCause.SCENE if during_reset else AbortCause.UNKNOWN


def cause_of_fault(fault: str | None) -> AbortCause:
    """EpisodeResult.fault (an AbortCause value) back to the enum; anything else: unknown."""
    try:
        return AbortCause(fault or "unknown")
    except ValueError:
        return AbortCause.UNKNOWN


def outage_paragraph(*, url: str, window_s: float, last_error: str, in_flight: int,
                     leases_until: datetime | None, campaigns: str | None) -> str:
    """The one paragraph a run ends with when the database stayed unreachable (pure)."""
    if in_flight and leases_until is not None:
        back = (f"The {in_flight} trial(s) that were running return to the queue when their "
                f"leases expire, by {leases_until.astimezone(UTC):%H:%M:%S} UTC; the arms this "
                "run held are free again then too.")
    elif leases_until is not None:
        back = (f"No trial was running; the arms this run held are free again by "
                f"{leases_until.astimezone(UTC):%H:%M:%S} UTC.")
    else:
        back = "No trial was running."
    rerun = f"`evalfleet campaign run {campaigns}`" if campaigns else "the same command"
    return (
        f"Stopped: the database at {url} was unreachable for {window_s:.0f} s, longer than the "
        f"retry window (EVALFLEET_DB_RETRY_WINDOW_S); last error: {last_error}. Nothing was "
        f"half-written (every store write is one transaction). {back} A rerun is safe once "
        f"the database is back ({rerun}): every trial still counts exactly once."
    )
