"""Check results and the verdict (pure: no I/O).

Every check returns one CheckResult: its stable name (what a lab greps for and what tests
assert), whether it passed, and one line of detail (the reason when it failed). A skipped
check (a motion check under `--dry-run`, a check that cannot run because an earlier one
failed) counts as passed only when nothing failed for it to depend on: the verdict fails as
soon as any check fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The checks, in the order they run and are reported.
CAPABILITIES = "capabilities"
SPACES_ACTION = "spaces.action"
SPACES_GRIPPER = "spaces.gripper"
SPACES_STATE = "spaces.state"
SPACES_CAMERAS = "spaces.cameras"
RESET = "reset"
OBSERVE_CAMERAS = "observe.cameras"
OBSERVE_STATE = "observe.state"
ACT_NAN = "act.nan_refused"
ACT_CLIP = "act.clipped"
HOLD_STOPS = "hold.stops"
ESTOP_STOPS = "estop.stops"
TIMING = "timing"

CHECK_NAMES: tuple[str, ...] = (CAPABILITIES, SPACES_ACTION, SPACES_GRIPPER, SPACES_STATE,
                                SPACES_CAMERAS, RESET, OBSERVE_CAMERAS, OBSERVE_STATE, ACT_NAN,
                                ACT_CLIP, HOLD_STOPS, ESTOP_STOPS, TIMING)

DRY_RUN = "skipped (dry run)"
_MAX_DETAIL = 240


def one_line(text: str, limit: int = _MAX_DETAIL) -> str:
    """Collapse whitespace to one line and cut it at `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str  # one line: what was seen, or why it failed
    skipped: bool = False

    @property
    def status(self) -> str:
        return "skip" if self.skipped else "pass" if self.passed else "fail"


def ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, True, one_line(detail))


def fail(name: str, detail: str) -> CheckResult:
    return CheckResult(name, False, one_line(detail))


def skip(name: str, why: str = DRY_RUN) -> CheckResult:
    return CheckResult(name, True, one_line(why), skipped=True)


def failed(results: Sequence[CheckResult]) -> tuple[CheckResult, ...]:
    return tuple(r for r in results if not r.passed)


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 when every check passed (or was skipped), 1 when any failed."""
    return 1 if failed(results) else 0


def failure_lines(results: Sequence[CheckResult]) -> tuple[str, ...]:
    """One line per failing check: `FAIL <name>: <reason>`."""
    return tuple(f"FAIL {r.name}: {r.detail}" for r in failed(results))


def summary_line(results: Sequence[CheckResult]) -> str:
    n_fail = len(failed(results))
    n_skip = sum(r.skipped for r in results)
    n_pass = len(results) - n_fail - n_skip
    verdict = "driver conforms" if n_fail == 0 else "driver does NOT conform"
    return f"{verdict}: {n_pass} passed, {n_skip} skipped, {n_fail} failed"


def results_to_json(results: Sequence[CheckResult], *, driver: str, dry_run: bool) -> dict[str, Any]:
    """The `--json FILE` document."""
    return {
        "format": "evalfleet-bridge-check/1",
        "driver": driver,
        "dry_run": dry_run,
        "passed": exit_code(results) == 0,
        "checks": [{"name": r.name, "status": r.status, "passed": r.passed, "skipped": r.skipped,
                    "detail": r.detail} for r in results],
    }
