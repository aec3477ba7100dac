"""The `evalfleet` console script. `evalfleet fleet stop ...` takes a fast path that reaches
the bridges before the rest of the CLI (typer, SQLAlchemy, numpy) is even imported; every
other command goes to the typer app in orchestrator.cli."""

from __future__ import annotations

import sys


def fleet_stop(arm: str | None, fleet: str, reason: str) -> int:
    """E-stop the fleet file's arms (or one) in parallel; print one line per arm, then audit
    the e-stop in the store. Returns the exit code. Shared by the fast path and typer."""
    from pathlib import Path

    from robots.estop import estop_all, targets_from_fleet_yaml

    try:
        targets = targets_from_fleet_yaml(Path(fleet), arm)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: {fleet}: cannot read the fleet file: {e}", file=sys.stderr)
        return 2
    if not targets:
        print(f"error: no arm {arm!r} in {fleet}", file=sys.stderr)
        return 2
    results = estop_all(targets, reason)
    for name, status in results.items():
        print(f"{name}: {status}", flush=True)
    from orchestrator.cli_fleet import log_estop_event  # after the arms are stopped

    log_estop_event(arm, results)
    return 1 if any(s.startswith("FAILED") for s in results.values()) else 0


def _fast_fleet_stop(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="evalfleet fleet stop", add_help=False)
    ap.add_argument("arm", nargs="?")
    ap.add_argument("--fleet", default="fleet.yaml")
    ap.add_argument("--reason", default="evalfleet fleet stop")
    args = ap.parse_args(argv)
    return fleet_stop(args.arm, args.fleet, args.reason)


def main() -> None:
    argv = sys.argv[1:]
    if argv[:2] == ["fleet", "stop"] and not {"--help", "-h"} & set(argv):
        sys.exit(_fast_fleet_stop(argv[2:]))
    from orchestrator.cli import main as cli_main

    cli_main()
