"""`evalfleet`: the command line for lab staff and analysts.

Typical session:

    evalfleet db upgrade
    evalfleet protocol validate protocols/rt2_generalization.yaml
    evalfleet policy register oracle --kind oracle
    evalfleet campaign create --protocol rt2_generalization --policy oracle --policy random --trials 3
    evalfleet campaign run my-campaign --fleet fleet.yaml
    evalfleet report my-campaign --format markdown
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orchestrator.cli_campaign import campaign_app, report_command
from orchestrator.cli_common import fail, open_store
from orchestrator.cli_detect import detect_command, detector_app
from orchestrator.cli_export import export_command
from orchestrator.cli_policy import policy_app

app = typer.Typer(
    name="evalfleet",
    help="Hardware-in-the-loop evaluation of robot policies on a fleet of arms, RT-2 style.\n\n"
    "Data lives under $EVALFLEET_HOME (default ~/.local/share/evalfleet); set "
    "EVALFLEET_DATABASE_URL=postgresql://... to use a lab's PostgreSQL instead of SQLite.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Create and migrate the results database (Alembic).", no_args_is_help=True)
protocol_app = typer.Typer(help="Validate and inspect evaluation protocols.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(protocol_app, name="protocol")
app.add_typer(policy_app, name="policy")
app.add_typer(campaign_app, name="campaign")
app.add_typer(detector_app, name="detector")
app.command("report")(report_command)
app.command("export")(export_command)
app.command("detect")(detect_command)

console = Console()


def _mount_optional() -> None:
    """Sub-apps of other packages; mounted when present."""
    try:
        from robots.cli import bridge_app, keys_app
    except ImportError:
        return
    app.add_typer(bridge_app, name="bridge")
    app.add_typer(keys_app, name="keys")


def _mount_orchestration() -> None:
    try:
        from orchestrator.cli_fleet import register
    except ImportError:
        return
    register(app)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision (default: the newest).")] = "head",
) -> None:
    """Create the schema or bring it up to date. Safe to run again."""
    from orchestrator.store import migrate

    store = open_store(check_schema=False)
    with store:
        before = migrate.current_revision(store.engine)
        migrate.upgrade(store.engine, revision)
        after = migrate.current_revision(store.engine)
    console.print(f"database {store.url}: {before or 'empty'} -> [bold]{after}[/bold]")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; 'base' drops everything.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: downgrading drops data.")] = False,
) -> None:
    """Step the schema back (drops tables/columns: confirm with --yes)."""
    from orchestrator.store import migrate

    if not yes:
        fail("downgrade drops data: add --yes if you mean it")
    store = open_store(check_schema=False)
    with store:
        migrate.downgrade(store.engine, revision)
        console.print(f"database {store.url} now at {migrate.current_revision(store.engine)}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database and the one this code expects."""
    from orchestrator.store import migrate

    store = open_store(check_schema=False)
    with store:
        console.print(
            f"{store.url}: at {migrate.current_revision(store.engine)}, "
            f"code expects {migrate.head_revision()}"
        )


@protocol_app.command("validate")
def protocol_validate(
    files: Annotated[list[Path], typer.Argument(help="Protocol YAML files.", exists=False)],
) -> None:
    """Check protocol files; one line per problem naming file, task and field."""
    from protocols.loader import ProtocolError, iter_problems, load_protocol

    bad = 0
    for f in files:
        try:
            loaded = load_protocol(f)
        except ProtocolError as e:
            bad += 1
            for line in iter_problems(e):
                console.print(f"[red]error[/red] {line}", highlight=False, soft_wrap=True)
            continue
        p = loaded.protocol
        console.print(
            f"[green]ok[/green] {f}: {p.name} v{p.version}, {len(p.tasks)} tasks, "
            f"sha256 {loaded.checksum[:12]}"
        )
    if bad:
        raise typer.Exit(1)


@protocol_app.command("show")
def protocol_show(name: Annotated[str, typer.Argument(help="Shipped name or path.")]) -> None:
    """List a protocol's tasks with their split, category and difficulty."""
    from rich.table import Table

    from protocols.loader import ProtocolError, load_protocol, resolve_protocol_path

    try:
        loaded = load_protocol(resolve_protocol_path(name))
    except ProtocolError as e:
        fail(str(e))
    table = Table(title=f"{loaded.protocol.name} v{loaded.protocol.version}")
    for col in ("key", "skill", "category", "difficulty", "instruction"):
        table.add_column(col)
    for t in loaded.protocol.tasks:
        table.add_row(t.key, str(t.skill), str(t.category), str(t.difficulty or ""), t.instruction)
    console.print(table)


def _mount_dashboard() -> None:
    try:
        from dashboard.cli import dashboard_command
    except ImportError:
        return
    app.command("dashboard")(dashboard_command)


_mount_optional()
_mount_orchestration()
_mount_dashboard()


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
