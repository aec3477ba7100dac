"""What the Fleet page may say about an arm (pure: no store, no Streamlit, no clock).

The orchestrator writes `robots.status` and `robots.last_heartbeat` (FleetRunner): it probes an
idle online arm every HEARTBEAT_S (a dead bridge turns it offline), refreshes the heartbeat of a
busy one as long as its episode runs, and probes an offline arm with backoff. A status is only
as true as its heartbeat: when the orchestrator or the machine it runs on is gone, nothing
updates the row and the last status ("online") would stay forever. So the page shows an arm as
STALE once its heartbeat is older than STALE_AFTER_PERIODS probe periods, whatever it last said.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

HEARTBEAT_S = 5.0  # the probe period: an online arm's heartbeat is refreshed this often
STALE_AFTER_PERIODS = 3  # missed periods before a status is no longer believed

LIVE_STATUSES = frozenset({"online", "busy", "estopped"})


class ArmState(StrEnum):
    ONLINE = "online"
    BUSY = "busy"
    ESTOPPED = "estopped"
    OFFLINE = "offline"
    STALE = "stale"  # no heartbeat for a few probe periods: the last status is not believed
    UNKNOWN = "unknown"  # never heard from it, or a status this page does not know


@dataclass(frozen=True)
class ArmLiveness:
    state: ArmState
    reported: str  # what the store says (robots.status)
    heartbeat_age_s: float | None

    @property
    def text(self) -> str:
        """The status cell: the state, and for a stale arm what it last said."""
        if self.state is ArmState.STALE:
            return f"STALE (last said {self.reported})"
        return self.state.value.upper() if self.state is ArmState.ESTOPPED else self.state.value


def stale_after_s(probe_period_s: float = HEARTBEAT_S,
                  periods: int = STALE_AFTER_PERIODS) -> float:
    return probe_period_s * periods


def displayed_state(reported: str, heartbeat_age_s: float | None, *,
                    probe_period_s: float = HEARTBEAT_S,
                    periods: int = STALE_AFTER_PERIODS) -> ArmLiveness:
    """The state to show for an arm whose store row says `reported`, last heard from
    `heartbeat_age_s` seconds ago (None: never).

    - offline is shown as offline, however old: it never claims more than it knows;
    - no heartbeat at all: unknown;
    - a heartbeat older than `periods` probe periods: stale, whatever the row says;
    - otherwise the reported status, if it is one of online / busy / estopped; unknown if not.

    A negative age (the dashboard's clock behind the orchestrator's) counts as fresh.
    """
    if probe_period_s <= 0 or periods < 1:
        raise ValueError("probe_period_s must be > 0 and periods >= 1")
    status = (reported or "").strip().lower()
    if status == ArmState.OFFLINE:
        state = ArmState.OFFLINE
    elif heartbeat_age_s is None:
        state = ArmState.UNKNOWN
    elif max(0.0, heartbeat_age_s) > stale_after_s(probe_period_s, periods):
        state = ArmState.STALE
    elif status in LIVE_STATUSES:
        state = ArmState(status)
    else:
        state = ArmState.UNKNOWN
    return ArmLiveness(state, status or "nothing", heartbeat_age_s)


PAGE_REFRESH_S = 3.0  # the Fleet page's own refresh while a campaign runs (the fleet cache ttl)


def refresh_interval_s(campaign_statuses: Iterable[str],
                       every_s: float = PAGE_REFRESH_S) -> float | None:
    """How often the Fleet page refreshes itself: every `every_s` while some campaign is
    running, never otherwise (an idle page costs the store nothing)."""
    return every_s if any(s == "running" for s in campaign_statuses) else None
