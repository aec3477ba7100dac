"""The Fleet page's status rule (orchestrator.liveness): a status is only as true as its
heartbeat."""

from __future__ import annotations

import pytest

from orchestrator.liveness import (
    HEARTBEAT_S,
    PAGE_REFRESH_S,
    STALE_AFTER_PERIODS,
    ArmState,
    displayed_state,
    refresh_interval_s,
    stale_after_s,
)

LIMIT = HEARTBEAT_S * STALE_AFTER_PERIODS


@pytest.mark.parametrize("reported", ["online", "busy", "estopped"])
def test_fresh_live_status_is_shown_as_reported(reported: str) -> None:
    got = displayed_state(reported, 0.5)
    assert got.state == ArmState(reported) and got.reported == reported


@pytest.mark.parametrize("reported", ["online", "busy", "estopped", "unknown", "weird"])
def test_old_heartbeat_is_stale_whatever_the_row_says(reported: str) -> None:
    got = displayed_state(reported, LIMIT + 0.001)
    assert got.state is ArmState.STALE
    assert got.text == f"STALE (last said {reported})"


def test_a_dead_bridge_is_never_online() -> None:
    # the orchestrator wrote "online" and then died: a day later the row still says so
    assert displayed_state("online", 86_400).state is ArmState.STALE
    assert displayed_state("online", None).state is ArmState.UNKNOWN  # never heard from


def test_boundary_is_a_few_probe_periods() -> None:
    assert stale_after_s() == LIMIT
    assert displayed_state("online", LIMIT).state is ArmState.ONLINE
    assert displayed_state("online", LIMIT + 0.01).state is ArmState.STALE
    assert displayed_state("online", 2.5, probe_period_s=1.0, periods=2).state is ArmState.STALE
    assert displayed_state("online", 1.5, probe_period_s=1.0, periods=2).state is ArmState.ONLINE


def test_offline_stays_offline_however_old() -> None:
    for age in (None, 0.0, LIMIT * 100):
        assert displayed_state("offline", age).state is ArmState.OFFLINE


def test_unknown_statuses_and_clock_skew() -> None:
    assert displayed_state("unknown", 1.0).state is ArmState.UNKNOWN
    assert displayed_state("", 1.0).text == "unknown"
    assert displayed_state(" Online ", 1.0).state is ArmState.ONLINE
    assert displayed_state("online", -30.0).state is ArmState.ONLINE  # dashboard clock behind


def test_texts() -> None:
    assert displayed_state("estopped", 1.0).text == "ESTOPPED"
    assert displayed_state("busy", 1.0).text == "busy"


def test_page_refreshes_only_while_a_campaign_runs() -> None:
    assert refresh_interval_s(["done", "running", "paused"]) == PAGE_REFRESH_S
    assert refresh_interval_s(["done", "paused", "pending", "incomplete", "cancelled"]) is None
    assert refresh_interval_s([]) is None
    assert refresh_interval_s(iter(["running"]), every_s=1.5) == 1.5


def test_bad_parameters_refused() -> None:
    with pytest.raises(ValueError):
        displayed_state("online", 1.0, probe_period_s=0)
    with pytest.raises(ValueError):
        displayed_state("online", 1.0, periods=0)


def test_the_rule_is_pure() -> None:
    """Importing it loads none of the shell libraries (checked in a fresh interpreter)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = ("import json, sys, orchestrator.liveness\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules}\n"
              "    & {'ray', 'zmq', 'sqlalchemy', 'torch', 'streamlit'})))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
