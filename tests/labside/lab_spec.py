"""What docs/protocol.md fixes for a bridge, as tables: request fields per version (§4),
scene keys (§5.4), counters (§8.6); and the lab bridge's own settings (LabConfig)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.labside import lab_wire as w

INTERVENTIONS = ("actions_clipped", "non_finite_refused", "stale_refused", "watchdog_holds",
                 "hold_commands", "estops", "rearms", "refused_estopped",
                 "refused_not_in_episode", "unauthorized", "malformed", "driver_errors",
                 "refused_total")
MALFORMED = {"BAD_MESSAGE", "UNSUPPORTED_VERSION", "UNKNOWN_TYPE", "TOO_LARGE"}

V1: dict[str, w.Schema] = {
    "hello": {"client": w.is_str},
    "reset": {"scene": w.is_map, "episode_id": w.is_str},
    "observe": {},
    "act": {"action": w.numbers(8), "seq": w.is_uint, "sent_wall_ns": w.is_int64,
            "episode_id": w.is_str},
    "hold": {},
    "estop": {"reason": w.is_str},
    "rearm": {},
    "status": {},
    "heartbeat": {},
    "privileged": {},
    "end_episode": {"episode_id": w.is_str},
}
# §4 v2: `act` carries D numbers (length checked against the declared space) and `terminate`
V2: dict[str, w.Schema] = {
    **V1,
    "act": {"action": w.numbers(None), "terminate": w.is_bool, "seq": w.is_uint,
            "sent_wall_ns": w.is_int64, "episode_id": w.is_str},
}
# §3: the v1 requests a bridge refuses on an arm v1 cannot express
V1_SPACE_BOUND = {"hello", "reset", "observe", "act"}
# §5.4: the scene keys, their types; required ones; unknown keys are ignored
SCENE_KEYS: dict[str, Callable[[Any], bool]] = {
    "skill": w.is_str, "target": w.is_str, "objects": w.str_list,
    "destination": lambda x: x is None or w.is_str(x), "distractors": w.str_list,
    "background": w.is_str, "environment": w.is_str, "instruction": w.is_str,
    "seed": w.is_int, "station_needs": w.str_list, "operator_confirmed": w.is_bool,
}
SCENE_REQUIRED = ("skill", "target")


@dataclass(frozen=True)
class LabConfig:
    versions: tuple[int, ...] = (1,)
    endpoint: str | None = None  # default: tcp://127.0.0.1:<a free port>
    space: str = "ee_delta"  # or "joint_position" (a gantry; v2 only)
    cameras: tuple[tuple[str, str], ...] = (("front", "external"),)  # (name, role)
    refuse_reset: str | None = None  # DRIVER_ERROR with this message on every reset
    estop_after_acts: int | None = None  # latch once, right after this many applied acts
    fail_act: tuple[int, str] | None = None  # (n, msg): the driver raises msg at act n, once
    needs_operator_reset: bool = False  # reset answers ready: false until operator_confirmed
    blind_until_reset: bool = False  # observe before the first reset: NOT_READY (§4)
    # unknown fields a lab's bridge might add: "reply" (top level), "counter" (st.counters),
    # "caps" (capabilities map), "obs" (obs map)
    extras: frozenset[str] = frozenset()
    caps_typo: bool = False  # a first-try mistake: v2 state declares 1 unit for 7 names
    clock_skew_s: float = 0.0  # the robot host's wall clock is this far off the orchestrator's
    watchdog_ms: float = 2000.0
    max_command_age_ms: float = 5000.0
    control_hz: float = 10.0
