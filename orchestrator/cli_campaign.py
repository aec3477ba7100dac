"""`evalfleet campaign ...` and `evalfleet report`."""

from __future__ import annotations

import json
import secrets
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.cli_common import fail, open_store

campaign_app = typer.Typer(
    help="Create, inspect and steer evaluation campaigns (all through the store).",
    no_args_is_help=True,
)
console = Console()


@campaign_app.command("create")
def campaign_create(
    protocol: Annotated[str, typer.Option(help="Shipped protocol name or a YAML path.")],
    policy: Annotated[list[str], typer.Option(help="Registered policy; repeat for each.")],
    trials: Annotated[int, typer.Option(help="Trials per task and policy.", min=1)] = 3,
    seed: Annotated[int, typer.Option(help="Plan seed: same seed, same plan.")] = 0,
    name: Annotated[str | None, typer.Option(help="Campaign name (default: generated).")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first on a shared fleet.")] = 0,
    by: Annotated[str | None, typer.Option(help="Who schedules it (audit log).")] = None,
) -> None:
    """Plan a campaign (paired, interleaved, blind) and queue its trials in the store."""
    from orchestrator.store.campaigns import CampaignError, create_campaign
    from protocols.loader import ProtocolError, load_protocol, resolve_protocol_path

    try:
        loaded = load_protocol(resolve_protocol_path(protocol))
    except ProtocolError as e:
        fail(str(e))
    name = name or f"{loaded.protocol.name}-{secrets.token_hex(3)}"
    store = open_store()
    with store:
        try:
            with store.write() as s:
                c = create_campaign(
                    s,
                    name=name,
                    loaded=loaded,
                    policy_names=policy,
                    trials_per_task=trials,
                    seed=seed,
                    priority=priority,
                    created_by=by,
                )
                cid = c.id
        except (CampaignError, ValueError) as e:
            fail(str(e))
        print_campaign(store, cid)


def print_campaign(store, campaign_id: int) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.store.queries import list_campaigns, progress_by_category

    with store.read() as s:
        (c,) = list_campaigns(s, [campaign_id])
        progress = progress_by_category(s, campaign_id)
    console.print(
        f"[bold]{c.name}[/bold] (#{c.id}) {c.status}, priority {c.priority}: protocol "
        f"{c.protocol} v{c.protocol_version}, seed {c.seed}, {c.trials_per_task} trials/task"
    )
    console.print(
        "policies: " + ", ".join(f"{p} [{code}]" for p, code in zip(c.policies, c.blind_codes))
    )
    table = Table(title="trials per category")
    for col in ("category", "difficulty", "done", "planned"):
        table.add_column(col)
    for cat, diff, done, total in sorted(progress, key=lambda r: (r[0], r[1] or "")):
        table.add_row(cat, diff or "", str(done), str(total))
    table.add_row("[bold]all[/bold]", "", str(c.done), str(c.trials - c.cancelled))
    console.print(table)


@campaign_app.command("list")
def campaign_list() -> None:
    """All campaigns with status, priority and progress."""
    from orchestrator.store.queries import list_campaigns

    store = open_store()
    with store, store.read() as s:
        rows = list_campaigns(s)
    table = Table()
    for col in ("id", "name", "status", "prio", "protocol", "policies", "done/trials"):
        table.add_column(col)
    for c in rows:
        table.add_row(
            str(c.id),
            c.name,
            c.status,
            str(c.priority),
            c.protocol,
            ", ".join(c.policies),
            f"{c.done}/{c.trials - c.cancelled}",
        )
    console.print(table)


@campaign_app.command("show")
def campaign_show(campaign: Annotated[str, typer.Argument(help="Name or id.")]) -> None:
    """A campaign's plan and progress per category."""
    from orchestrator.store.campaigns import CampaignError, get_campaign

    store = open_store()
    with store:
        try:
            with store.read() as s:
                cid = get_campaign(s, campaign).id
        except CampaignError as e:
            fail(str(e))
        print_campaign(store, cid)


def _set_status(campaign: str, status: str, actor: str) -> None:
    from orchestrator.store.campaigns import CampaignError, set_campaign_status

    store = open_store()
    with store:
        try:
            with store.write() as s:
                c = set_campaign_status(s, campaign, status, actor=actor)
                console.print(f"campaign {c.name}: {status}")
        except CampaignError as e:
            fail(str(e))


@campaign_app.command("pause")
def campaign_pause(campaign: str, by: str = "cli") -> None:
    """Stop leasing new trials (episodes in flight finish)."""
    _set_status(campaign, "paused", by)


@campaign_app.command("resume")
def campaign_resume(campaign: str, by: str = "cli") -> None:
    """Continue a paused campaign where it stopped."""
    _set_status(campaign, "pending", by)


@campaign_app.command("cancel")
def campaign_cancel(campaign: str, by: str = "cli") -> None:
    """Cancel pending trials; recorded episodes stay."""
    _set_status(campaign, "cancelled", by)


@campaign_app.command("priority")
def campaign_priority(campaign: str, priority: int, by: str = "cli") -> None:
    """Re-prioritize: higher goes first on a shared fleet."""
    from orchestrator.store.campaigns import CampaignError, set_campaign_priority

    store = open_store()
    with store:
        try:
            with store.write() as s:
                c = set_campaign_priority(s, campaign, priority, actor=by)
                console.print(f"campaign {c.name}: priority {priority}")
        except CampaignError as e:
            fail(str(e))


def report_command(
    campaign: Annotated[list[str], typer.Argument(help="Campaign name(s) or id(s).")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="table | markdown | csv | json")
    ] = "table",
    test: Annotated[str, typer.Option(help="Policy comparison test: fisher | barnard.")] = "fisher",
) -> None:
    """Success per generalization category (RT-2 style), Wilson 95% CIs, policy comparison."""
    from orchestrator.reporting import build_campaign_report
    from orchestrator.store.campaigns import CampaignError
    from protocols import report as rpt

    if format not in ("table", "markdown", "csv", "json"):
        fail(f"--format {format!r}: one of table, markdown, csv, json")
    store = open_store()
    with store:
        try:
            report = build_campaign_report(store, campaign, test=test)
        except CampaignError as e:
            fail(str(e))
    if format == "table":
        console.print(rpt.render_table(report))
    elif format == "markdown":
        typer.echo(rpt.render_markdown(report))
    elif format == "csv":
        typer.echo(rpt.render_csv(report), nl=False)
    else:
        typer.echo(json.dumps(rpt.render_json(report), indent=2))
