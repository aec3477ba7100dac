"""The `evalfleet` console script. `evalfleet fleet stop ...` takes a fast path that reaches
the bridges before the rest of the CLI (typer, SQLAlchemy, numpy) is even imported; every
other command goes to the typer app in orchestrator.cli."""

from __future__ import annotations

import sys


def _fast_fleet_stop(argv: list[str]) -> int:
    import argparse
    from pathlib import Path

    from robots.estop import estop_all, targets_from_fleet_yaml

    ap = argparse.ArgumentParser(prog="evalfleet fleet stop", add_help=False)
    ap.add_argument("arm", nargs="?")
    ap.add_argument("--fleet", default="fleet.yaml")
    ap.add_argument("--reason", default="evalfleet fleet stop")
    args = ap.parse_args(argv)
    try:
        targets = targets_from_fleet_yaml(Path(args.fleet), args.arm)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: {args.fleet}: cannot read the fleet file: {e}", file=sys.stderr)
        return 2
    if not targets:
        print(f"error: no arm {args.arm!r} in {args.fleet}", file=sys.stderr)
        return 2
    results = estop_all(targets, args.reason)
    for name, status in results.items():
        print(f"{name}: {status}", flush=True)
    from orchestrator.cli_fleet import log_estop_event  # after the arms are stopped

    log_estop_event(args.arm, results)
    return 1 if any(s.startswith("FAILED") for s in results.values()) else 0


def main() -> None:
    argv = sys.argv[1:]
    if argv[:2] == ["fleet", "stop"] and not {"--help", "-h"} & set(argv):
        sys.exit(_fast_fleet_stop(argv[2:]))
    from orchestrator.cli import main as cli_main

    cli_main()
