"""`evalfleet campaign run`, `fleet serve|stop|status`, `operator confirm`, `demo`."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestrator.cli_common import fail, open_store

console = Console()
fleet_app = typer.Typer(help="Run the fleet: serve all active campaigns, stop and re-arm arms.",
                        no_args_is_help=True)
operator_app = typer.Typer(help="Operator actions at the arms (scene set-up).", no_args_is_help=True)


def init_ray(address: str | None, fleet: Any) -> None:
    """Ray for `campaign run` / `fleet serve`: the cluster at `address` (or RAY_ADDRESS), else
    a fresh local instance with a station resource per station of the fleet (benchmarks/
    fleet.py measures with this too)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        return
    stations = {a.station for a in fleet.arms}
    # address="local": always a fresh local instance. A bare ray.init() would join whatever
    # cluster /tmp/ray/ray_current_cluster names (left by `ray start` or a test's Cluster, maybe
    # long dead), and then refuse our num_cpus/resources.
    ray.init(
        address="local",
        num_cpus=max(2, os.cpu_count() or 2),
        include_dashboard=False,
        log_to_driver=False,
        resources={f"station:{s}": 1000.0 for s in stations},
    )


def _load_fleet(path: Path):  # type: ignore[no-untyped-def]
    from orchestrator.fleet_config import FleetConfigError, load_fleet

    try:
        return load_fleet(path)
    except FleetConfigError as e:
        fail(str(e))


def _stop_flag() -> threading.Event:
    stop = threading.Event()

    def handler(*_: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        console.print("[yellow]stopping: in-flight episodes are aborted and re-queued[/yellow]")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def run_fleet(store, fleet, *, campaign_ids, until_done: bool, address: str | None,  # type: ignore[no-untyped-def]
              title: str, total: int | None = None, lease_s: float | None = None):
    """Start Ray, run the loop with a progress display, shut down cleanly. Returns stats."""
    import ray

    from orchestrator.config import get_settings
    from orchestrator.runner import FleetRunner
    from orchestrator.runner_faults import RunStopped

    if lease_s is not None:
        fleet = fleet.model_copy(update={"lease_s": lease_s})
    init_ray(address, fleet)
    stop = _stop_flag()
    runner = FleetRunner(store, fleet, media_dir=str(get_settings().media_dir),
                         campaign_ids=campaign_ids)
    started = time.monotonic()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    try:
        runner.start()
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(title, total=total, info="")

            def tick(r) -> None:  # type: ignore[no-untyped-def]
                s = r.stats
                online = sum(a.online for a in r.arms.values())
                held = 100.0 * (1 - s.late_steps / s.steps) if s.steps else 100.0
                cats = " ".join(f"{k}:{v}" for k, v in sorted(s.done_by_category.items()))
                waiting = "".join(f"\n  {line}" for line in r.waiting.values())
                # no arm online: each arm's error (its refused hello, its bridge down)
                waiting += "".join(f"\n  offline {line}" for line in r.offline_lines())
                progress.update(  # trials a decided question left out are no longer due
                    task, completed=s.recorded,
                    total=None if total is None else max(s.recorded, total - s.not_needed),
                    info=f"arms busy {r.busy_arms()}/{online} online | rate held {held:.1f}% | "
                         f"aborted {s.aborted}\n  {cats}{waiting}",
                )

            runner.run(until_done=until_done, should_stop=stop.is_set, on_tick=tick)
    except RunStopped as e:  # the database stayed away: one paragraph, no traceback
        stopped: RunStopped | None = e
    else:
        stopped = None
    finally:
        runner.shutdown()
        ray.shutdown()
    if stopped is not None:
        fail(str(stopped), code=stopped.exit_code)  # 4: database gone; 5: no arm matches
    return runner.stats, time.monotonic() - started


def campaign_run(
    campaign: Annotated[str, typer.Argument(help="Campaign name or id.")],
    fleet: Annotated[Path, typer.Option(help="fleet.yaml naming the arms.")],
    ray_address: Annotated[str | None, typer.Option(help="Join a Ray cluster (default: local).")]
    = None,
    lease_s: Annotated[float | None, typer.Option(help="Trial lease length in seconds.")] = None,
) -> None:
    """Run one campaign on the fleet until every trial has a counted episode.

    Safe to run again after a crash: expired leases return to the queue and nothing is
    counted twice. Exits 3 when trials were given up, also when every one was and no episode
    was recorded (the reasons say why: the arm's error code and message first; `evalfleet
    campaign requeue` them), 4 when the database went away, 5 when a campaign policy matches
    no arm of the fleet (one line per policy/arm pair, before any trial is leased)."""
    from orchestrator.store.campaigns import CampaignError, get_campaign
    from orchestrator.store.lifecycle import EXIT_INCOMPLETE, incomplete_message
    from orchestrator.store.queries import list_campaigns
    from orchestrator.store.states import CampaignStatus

    cfg = _load_fleet(fleet)
    store = open_store()
    with store:
        try:
            with store.read() as s:
                c = get_campaign(s, campaign)
                (summary,) = list_campaigns(s, [c.id])
        except CampaignError as e:
            fail(str(e))
        if summary.status in (CampaignStatus.DONE, CampaignStatus.CANCELLED):
            fail(f"campaign {summary.name} is {summary.status}; nothing to run")
        if summary.status == CampaignStatus.INCOMPLETE:
            fail(f"campaign {summary.name} is incomplete (trials given up or cancelled): "
                 f"`evalfleet campaign requeue {summary.name}` re-queues them, then run it again")
        if summary.status == CampaignStatus.PAUSED:
            fail(f"campaign {summary.name} is paused: `evalfleet campaign resume {summary.name}`")
        stats, dt = run_fleet(store, cfg, campaign_ids=[c.id], until_done=True,
                              address=ray_address, title=summary.name,
                              total=summary.pending + summary.leased,
                              lease_s=lease_s)
        state = _final_state(store, c.id)
    saved = (f", {stats.not_needed} trials not needed (its declared questions were decided)"
             if stats.not_needed else "")
    console.print(f"{stats.recorded} episodes recorded, {stats.aborted} aborted in {dt:.0f} s"
                  f"{saved}; `evalfleet report {summary.name}` for the results")
    if state is not None and state.status == CampaignStatus.INCOMPLETE:
        fail(incomplete_message(state), code=EXIT_INCOMPLETE)


def _final_state(store, campaign_id: int):  # type: ignore[no-untyped-def]
    """The campaign once the run ended (None if the store cannot say: the run's own error
    was reported already)."""
    from orchestrator.store.lifecycle import campaign_state

    try:
        with store.read() as s:
            return campaign_state(s, campaign_id)
    except Exception:  # noqa: BLE001 - the exit code then stays the run's own
        return None


@fleet_app.command("serve")
def fleet_serve(
    fleet: Annotated[Path, typer.Option(help="fleet.yaml naming the arms.")],
    ray_address: Annotated[str | None, typer.Option(help="Join a Ray cluster.")] = None,
) -> None:
    """Serve every active campaign by priority (then age) until stopped (Ctrl-C).

    Staff steer it through the store: `evalfleet campaign create|pause|resume|priority|cancel`
    or the dashboard's Campaigns page."""
    cfg = _load_fleet(fleet)
    store = open_store()
    with store:
        stats, dt = run_fleet(store, cfg, campaign_ids=None, until_done=False,
                              address=ray_address, title="fleet")
    console.print(f"served {stats.recorded} episodes in {dt:.0f} s")


@fleet_app.command("stop")
def fleet_stop(
    arm: Annotated[str | None, typer.Argument(help="Arm name; all arms when omitted.")] = None,
    fleet: Annotated[Path, typer.Option(help="fleet.yaml naming the arms.")] = Path("fleet.yaml"),
    reason: Annotated[str, typer.Option(help="Recorded with the e-stop.")] = "evalfleet fleet stop",
) -> None:
    """E-stop arms now, straight through each bridge (no Ray, no database in the path).
    Latches until re-armed at the bridge. The console script runs this through a fast path
    (robots.estop) that imports almost nothing before the e-stop leaves."""
    from orchestrator.entry import fleet_stop as stop

    code = stop(arm, str(fleet), reason)
    if code:
        raise typer.Exit(code)


@fleet_app.command("rearm")
def fleet_rearm(
    arm: Annotated[str, typer.Argument(help="The e-stopped arm to re-arm.")],
    fleet: Annotated[Path, typer.Option(help="fleet.yaml naming the arms.")] = Path("fleet.yaml"),
    by: Annotated[str | None, typer.Option(help="Who re-arms it (audit log; default: you).")]
    = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
    = False,
) -> None:
    """Release an arm's latched e-stop (the bridge's `rearm` request), audited in the store.
    Make sure the cause of the e-stop is gone first: the arm takes trials again right after."""
    import getpass

    from orchestrator.store.campaigns import log_event
    from orchestrator.store.states import EventKind
    from robots.client import BridgeClient, BridgeError, CurveClientKeys

    cfg = _load_fleet(fleet)
    arm_cfg = next((a for a in cfg.arms if a.name == arm), None)
    if arm_cfg is None:
        fail(f"no arm {arm!r} in {fleet}: it names {', '.join(a.name for a in cfg.arms)}")
    try:
        actor = by or getpass.getuser()
    except (OSError, KeyError):  # no login name in this environment
        actor = "cli"
    store = open_store()  # a re-arm is audited: no store, no re-arm
    curve = (CurveClientKeys(arm_cfg.curve.client_secret, arm_cfg.curve.server_public)
             if arm_cfg.curve else None)
    with store:
        try:
            with BridgeClient(arm_cfg.endpoint, timeout_ms=arm_cfg.timeout_ms, curve=curve,
                              name=f"evalfleet-rearm-{actor}") as client:
                status = client.status()
                if not status.get("estopped"):
                    console.print(f"{arm}: not e-stopped; nothing to re-arm")
                    return
                reason = status.get("estop_reason") or "no reason given"
                if not yes and not typer.confirm(
                        f"{arm} is e-stopped ({reason}). Re-arm it? It takes trials again "
                        "right after", default=False):
                    fail(f"{arm}: not re-armed")
                summary = client.rearm()
        except BridgeError as e:
            fail(f"{arm}: re-arm failed, nothing was re-armed: {e}".splitlines()[0])
        if summary.estopped:
            fail(f"{arm}: the bridge still reports its e-stop latched after the re-arm")
        from sqlalchemy import select

        from orchestrator.store.models import Robot

        try:
            with store.write() as s:
                rid = s.scalar(select(Robot.id).where(Robot.name == arm))
                log_event(s, EventKind.ESTOP_REARMED, actor=actor, robot_id=rid, robot=arm,
                          endpoint=arm_cfg.endpoint, estop_reason=reason)
        except Exception as e:  # noqa: BLE001 - the arm is re-armed: say that it is not audited
            fail(f"{arm}: re-armed, but the audit event could not be written: "
                 f"{e.__class__.__name__}: {e}".splitlines()[0])
    console.print(f"{arm}: re-armed by {actor} (was: {reason})", highlight=False)


def log_estop_event(arm: str | None, results: dict[str, str]) -> None:
    """Audit the e-stop (best effort: the e-stop itself never depends on SQL)."""
    try:
        from orchestrator.store.campaigns import log_event
        from orchestrator.store.db import Store
        from orchestrator.store.states import EventKind

        with Store.open() as store, store.write() as s:
            log_event(s, EventKind.ESTOP_REQUESTED, actor="cli", robot=arm or "all",
                      results=results)
    except Exception:  # noqa: BLE001, S110 - no store reachable: the arms are stopped anyway
        pass


@operator_app.command("confirm")
def operator_confirm(
    arm: Annotated[str, typer.Argument(help="Arm whose scene is now set up.")],
    by: Annotated[str, typer.Option(help="Operator name (audit log).")] = "operator",
) -> None:
    """Confirm that the scene an arm asked for is set up and the workspace is clear."""
    from sqlalchemy import select

    from orchestrator.store.campaigns import log_event
    from orchestrator.store.models import Robot
    from orchestrator.store.states import EventKind

    store = open_store()
    with store, store.write() as s:
        robot = s.scalar(select(Robot).where(Robot.name == arm))
        if robot is None:
            fail(f"no arm named {arm!r} in the store")
        log_event(s, EventKind.OPERATOR_CONFIRMED, actor=by, robot_id=robot.id, robot=arm)
    console.print(f"{arm}: scene confirmed by {by}")


def register(app: typer.Typer) -> None:
    from orchestrator.cli_campaign import campaign_app
    from orchestrator.demo import demo_command

    campaign_app.command("run")(campaign_run)
    app.add_typer(fleet_app, name="fleet")
    app.add_typer(operator_app, name="operator")
    app.command("demo")(demo_command)
