"""`evalfleet demo`: the whole main job on the embedded default.

Starts N simulated arms (each its own BridgeServer process), local Ray and the SQLite store
under $EVALFLEET_HOME, creates a campaign on the shipped RT-2 protocol with the scripted
oracle, the vision heuristic and the random policy, runs it with a progress bar and prints
the per-category report. Then a success detector (the sim's predicate with a tenth of its
answers flipped: a detector right about 90% of the time) labels every episode, and the
campaign's human audit (a 20% random sample, served on the dashboard's Label page) is what
`evalfleet report NAME --detector sim-90` combines with it (docs/statistics.md).
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated

import typer
from rich.console import Console

from orchestrator.cli_common import fail, open_store

console = Console()

DEMO_POLICIES = (("oracle", "oracle"), ("vision-heuristic", "vision_heuristic"),
                 ("random", "random"))
DEMO_DETECTOR = ("sim-90", {"flip_rate": 0.1, "seed": 0})  # right ~90% of the time
DEMO_AUDIT_RATE = 0.2


def demo_command(
    arms: Annotated[int, typer.Option(help="Simulated arms (bridge processes).", min=1)] = 4,
    trials: Annotated[int, typer.Option(help="Trials per task and policy.", min=1)] = 1,
    protocol: Annotated[str, typer.Option(help="Shipped protocol name or YAML path.")]
    = "rt2_generalization",
    seed: Annotated[int, typer.Option(help="Plan seed.")] = 0,
) -> None:
    """Run a small RT-2-style campaign on simulated arms and print its report."""
    from orchestrator.cli_fleet import run_fleet
    from orchestrator.reporting import build_report_for_ids
    from orchestrator.simfleet import SimFleet, SimFleetError
    from orchestrator.store import migrate
    from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
    from policies.registration import PolicyChangeRefused
    from protocols.loader import ProtocolError, load_protocol, resolve_protocol_path
    from protocols.report import render_accounts_table, render_table

    t0 = time.monotonic()
    try:
        loaded = load_protocol(resolve_protocol_path(protocol))
    except ProtocolError as e:
        fail(str(e))
    store = open_store(check_schema=False)
    with store:
        migrate.upgrade(store.engine)
        name = f"demo-{secrets.token_hex(3)}"
        try:
            with store.write() as s:
                for pname, kind in DEMO_POLICIES:
                    register_policy(s, PolicySpec(name=pname, kind=kind,
                                                  config={"kind": kind, "options": {}}))
                c = create_campaign(s, name=name, loaded=loaded,
                                    policy_names=[p for p, _ in DEMO_POLICIES],
                                    trials_per_task=trials, seed=seed, created_by="demo",
                                    audit_rate=DEMO_AUDIT_RATE)
                cid = c.id
        except PolicyChangeRefused as e:  # the store has its own policy under a demo name
            fail(f"demo: {e}")
        n_trials = len(loaded.protocol.tasks) * trials * len(DEMO_POLICIES)
        console.print(f"store: {store.url}\ncampaign [bold]{name}[/bold]: {n_trials} trials "
                      f"({loaded.protocol.name}, {len(loaded.protocol.tasks)} tasks x "
                      f"{len(DEMO_POLICIES)} policies x {trials}) on {arms} simulated arms")
        try:
            with SimFleet(arms) as fleet:
                stats, dt = run_fleet(store, fleet.config(), campaign_ids=[cid], until_done=True,
                                      address=None, title=name, total=n_trials)
        except SimFleetError as e:
            fail(str(e))
        report = build_report_for_ids(store, [cid], title=name)
        auto, sampled = _detect(store, cid)
    console.print(render_table(report))
    if report.campaigns:
        console.print(render_accounts_table(report))
    rate = stats.steps / dt if dt else 0.0
    console.print(
        f"{stats.recorded} episodes ({stats.steps} steps, {stats.late_steps} late) in {dt:.0f} s "
        f"= {3600 * stats.recorded / dt:.0f} episodes/h, {rate:.1f} steps/s fleet-wide; "
        f"first action after {stats.first_action_s or 0:.1f} s; total {time.monotonic() - t0:.0f} s"
    )
    console.print(
        "Label and browse the episodes:  [bold]evalfleet dashboard[/bold]  (same store; "
        f"EVALFLEET_HOME={store.url.removeprefix('sqlite:///').rsplit('/', 1)[0]})\n"
        f"Report again:                  [bold]evalfleet report {name} --format markdown[/bold]"
    )
    console.print(
        f"Detector {DEMO_DETECTOR[0]} labelled {auto} episodes; humans audit {sampled} sampled "
        f"ones ({DEMO_AUDIT_RATE:.0%}, the Label page serves only those), then\n"
        f"                               [bold]evalfleet report {name} --detector "
        f"{DEMO_DETECTOR[0]}[/bold]  (PPI beside human-only and auto-only)"
    )


def _detect(store, campaign_id: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Label the demo's episodes with the demo detector; (auto labels, audit sample size)."""
    from orchestrator.detectors.build import detector_spec
    from orchestrator.detectors.run import label_campaign
    from orchestrator.store.audit import audit_progress
    from orchestrator.store.detectors import DetectorChangeRefused, register_detector

    name, options = DEMO_DETECTOR
    try:
        with store.write() as s:
            register_detector(s, detector_spec(name, "sim", options), actor="demo")
    except DetectorChangeRefused as e:  # the store has its own detector under this name
        fail(f"demo: {e}")
    auto = label_campaign(store, campaign_id, name)
    with store.read() as s:
        progress = audit_progress(s, [campaign_id])
    return auto, sum(p.sampled for p in progress)
