"""`evalfleet campaign ...` and `evalfleet report`."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.cli_common import fail, open_store
from orchestrator.cli_questions import (
    QUESTION_HELP,
    add_questions_json,
    print_questions,
    question_lines_of,
)
from orchestrator.store.states import CampaignStatus, TrialStatus

if TYPE_CHECKING:
    from orchestrator.store.db import Store
    from protocols.report_ppi import PpiReport

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
    fleet: Annotated[Path | None, typer.Option(
        help="fleet.yaml: match the policies against these arms (asked for their declared "
             "spaces; the store's last known ones for an arm that does not answer or whose "
             "hello is refused, said in one line per arm; the campaign is created either way "
             "and `campaign run` matches again before leasing a trial).")] = None,
    audit_rate: Annotated[float | None, typer.Option(
        help="Humans label only a random audit of this share of the episodes (0 < r <= 1, "
             "same rate in every policy x category; fixed after creation): with a success "
             "detector, `report --detector` combines both (docs/statistics.md).")] = None,
    question: Annotated[list[str] | None, typer.Option(help=QUESTION_HELP)] = None,
) -> None:
    """Plan a campaign (paired, interleaved, blind) and queue its trials in the store.

    Refused when a policy matches no arm (its action space, gripper, cameras or state do not
    fit any arm's declared spaces, robots.spaces.match_pair): the arms of --fleet, or without
    it every arm whose spaces the store knows (from earlier runs); with neither, nothing is
    checked here and `campaign run` checks again before leasing any trial. An arm of --fleet
    that does not answer hello, or answers one this client refuses (bad capabilities), is
    reported in one line naming the arm and the reason, and handled the same way either way:
    matched against the spaces the store last recorded for it, if any, never refusing the
    campaign on its account."""
    from orchestrator.store.campaigns import CampaignError, create_campaign
    from protocols.loader import ProtocolError, load_protocol, resolve_protocol_path
    from protocols.questions import SpecError, parse_spec

    try:
        loaded = load_protocol(resolve_protocol_path(protocol))
        specs = [parse_spec(q) for q in question or ()]
    except (ProtocolError, SpecError) as e:
        fail(str(e))
    name = name or f"{loaded.protocol.name}-{secrets.token_hex(3)}"
    store = open_store()
    with store:
        arms = _arm_spaces(store, fleet)
        try:
            with store.write() as s:
                _refuse_unmatched(s, policy, arms)
                c = create_campaign(
                    s,
                    name=name,
                    loaded=loaded,
                    policy_names=policy,
                    trials_per_task=trials,
                    seed=seed,
                    priority=priority,
                    created_by=by,
                    audit_rate=audit_rate,
                    questions=specs,
                )
                cid = c.id
        except (CampaignError, ValueError) as e:
            fail(str(e))
        print_campaign(store, cid)


def _arm_spaces(store, fleet: Path | None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """arm name -> ArmSpaces: the --fleet arms (hello, else the store's last known spaces),
    or every arm the store knows the spaces of."""
    from orchestrator.arm_info import spaces_of
    from orchestrator.store.fleet import robot_capabilities

    names = None
    live: dict[str, Any] = {}
    if fleet is not None:
        from orchestrator.fleet_config import FleetConfigError, load_fleet

        try:
            cfg = load_fleet(fleet)
        except FleetConfigError as e:
            fail(str(e))
        names = [a.name for a in cfg.arms]
        problems = {}
        for a in cfg.arms:
            sp, problem = _hello_spaces(a)
            if sp is not None:
                live[a.name] = sp
            else:
                problems[a.name] = problem
    with store.read() as s:
        known = robot_capabilities(s, names)
    out = {n: sp for n, caps in known.items() if (sp := spaces_of(caps)) is not None}
    if fleet is not None:
        for arm, problem in problems.items():  # one line per arm not asked: why, and then what
            then = ("matched against the spaces the store last recorded for it"
                    if arm in out else "not matched here (the store knows no spaces of it); "
                    "`campaign run` matches it before leasing any trial")
            console.print(f"arm {arm}: {problem}; {then}", soft_wrap=True, markup=False,
                          highlight=False)
    return {**out, **live}


def _hello_spaces(arm) -> tuple[Any, str | None]:  # type: ignore[no-untyped-def]
    """An arm's declared spaces from its bridge's hello, or None and one line saying why not:
    the bridge does not answer, or it answers a hello this client refuses (its capabilities
    break a rule of docs/protocol.md, e.g. "bad capabilities: state: 7 names but 1 units")."""
    from robots.client import BridgeClient, BridgeError, BridgeTimeout, CurveClientKeys

    curve = (CurveClientKeys(arm.curve.client_secret, arm.curve.server_public)
             if arm.curve else None)
    try:
        with BridgeClient(arm.endpoint, timeout_ms=min(arm.timeout_ms, 2000), curve=curve,
                          name="evalfleet-campaign-create") as c:
            return c.hello().capabilities.spaces(), None
    except (BridgeTimeout, OSError) as e:
        first = (str(e).splitlines() or [""])[0]
        return None, f"no answer to hello ({first or e.__class__.__name__})"
    except BridgeError as e:
        first = (str(e).splitlines() or [""])[0]
        return None, f"hello refused: {first}"


def _refuse_unmatched(s, policy_names: list[str], arms: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    """fail() with one line per policy/arm pair when a policy matches none of `arms`."""
    from orchestrator.arm_info import unmatched_policies
    from orchestrator.store.campaigns import CampaignError, find_policy
    from orchestrator.store.fleet import policy_configs
    from policies.registry import PolicyConfigError, policy_io

    if not arms:
        return
    ios = {}
    try:
        for name in policy_names:
            row = find_policy(s, name)
            ios[row.name] = policy_io(policy_configs(s, [row.id])[row.id])
    except (CampaignError, PolicyConfigError) as e:
        fail(str(e))
    bad = unmatched_policies(ios, arms)
    if bad:
        lines = [line for ls in bad.values() for line in ls]
        fail(f"policy {', '.join(bad)} matches no arm ({', '.join(sorted(arms))}), so the "
             "campaign could not run:\n" + "\n".join(lines))


def print_campaign(store, campaign_id: int) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.store import lifecycle as lc
    from orchestrator.store.audit import audit_progress
    from orchestrator.store.queries import list_campaigns, progress_by_category

    with store.read() as s:
        (c,) = list_campaigns(s, [campaign_id])
        progress = progress_by_category(s, campaign_id)
        state = lc.campaign_state(s, campaign_id)
        by_policy = lc.status_counts_by_policy(s, campaign_id)
        audit = audit_progress(s, [campaign_id])  # [] without an audit rate
    console.print(
        f"[bold]{c.name}[/bold] (#{c.id}) {lc.progress_text(c.status, state.tally)}, priority "
        f"{c.priority}: protocol {c.protocol} v{c.protocol_version}, seed {c.seed}, "
        f"{c.trials_per_task} trials/task"
    )
    console.print(
        "policies: " + ", ".join(f"{p} [{code}]" for p, code in zip(c.policies, c.blind_codes))
    )
    for a in audit:
        console.print(f"{a.text} (humans label only this random sample)", highlight=False)
    table = Table(title="trials per category")
    for col in ("category", "difficulty", "done", "planned"):
        table.add_column(col)
    for cat, diff, done, total in sorted(progress, key=lambda r: (r[0], r[1] or "")):
        table.add_row(cat, diff or "", str(done), str(total))
    table.add_row("[bold]all[/bold]", "", str(c.done), str(c.trials - c.cancelled))
    console.print(table)
    _print_trial_statuses(state, by_policy)
    print_questions(console, question_lines_of(store, [campaign_id]), "table", blind=False)


def _print_trial_statuses(state, by_policy) -> None:  # type: ignore[no-untyped-def]
    """Every planned trial by status and policy; given-up and cancelled ones with the reason
    their last attempt aborted (the arm's own error code comes first in it)."""
    from orchestrator.store.lifecycle import TRIAL_STATUSES, incomplete_message

    table = Table(title="trials by status")
    table.add_column("policy")
    for st in (*TRIAL_STATUSES, "planned"):
        table.add_column(st.replace("_", " "), justify="right")
    for name, code, counts in by_policy:
        table.add_row(f"{name} [{code}]", *(str(counts[st]) for st in TRIAL_STATUSES),
                      str(sum(counts.values())))
    t = state.tally
    table.add_row("[bold]all[/bold]", *(str(getattr(t, st)) for st in TRIAL_STATUSES),
                  str(t.planned))
    console.print(table)
    if not state.missing:
        return
    shown = 20
    for m in state.missing[:shown]:
        console.print(
            f"  trial {m.trial_id} {m.status.replace('_', ' ')}: {m.task_key} #{m.trial_index} "
            f"{m.policy} [{m.blind_code}], {m.attempts} attempt(s); last abort: "
            f"{m.last_reason or '-'}", highlight=False, soft_wrap=True, markup=False)
    if len(state.missing) > shown:
        console.print(f"  ... and {len(state.missing) - shown} more")
    if t.open == 0:
        console.print(incomplete_message(state), highlight=False, soft_wrap=True, markup=False)


@campaign_app.command("list")
def campaign_list() -> None:
    """All campaigns with status, priority and progress."""
    from orchestrator.store.lifecycle import progress_text, trial_tallies
    from orchestrator.store.queries import list_campaigns

    store = open_store()
    with store, store.read() as s:
        rows = list_campaigns(s)
        tallies = trial_tallies(s, [c.id for c in rows])
    table = Table()
    for col in ("id", "name", "status done/planned", "prio", "protocol", "policies"):
        table.add_column(col)
    for c in rows:
        table.add_row(
            str(c.id),
            c.name,
            progress_text(c.status, tallies[c.id]),
            str(c.priority),
            c.protocol,
            ", ".join(c.policies),
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
    _set_status(campaign, CampaignStatus.PAUSED, by)


@campaign_app.command("resume")
def campaign_resume(campaign: str, by: str = "cli") -> None:
    """Continue a paused campaign where it stopped (an incomplete one: `campaign requeue`)."""
    _set_status(campaign, CampaignStatus.PENDING, by)


@campaign_app.command("cancel")
def campaign_cancel(campaign: str, by: str = "cli") -> None:
    """Cancel pending trials; recorded episodes stay."""
    _set_status(campaign, CampaignStatus.CANCELLED, by)


@campaign_app.command("requeue")
def campaign_requeue(
    campaign: Annotated[str, typer.Argument(help="Campaign name or id.")],
    trials: Annotated[str | None, typer.Option(
        help="Only these trial ids (comma-separated; `campaign show` lists them).")] = None,
    status: Annotated[list[str] | None, typer.Option(
        help="Which trials: given_up (default) and/or cancelled; repeat for both.")] = None,
    by: Annotated[str, typer.Option(help="Who re-queues them (audit log).")] = "cli",
) -> None:
    """Bring given-up (or cancelled) trials back to the queue with a fresh attempt budget and
    reopen the campaign; `campaign run` then completes it. Aborted episodes stay in the audit."""
    from orchestrator.store.campaigns import CampaignError
    from orchestrator.store.lifecycle import requeue_trials

    ids: list[int] | None = None
    if trials is not None:
        try:
            ids = [int(x) for x in trials.split(",") if x.strip()]
        except ValueError:
            fail(f"--trials {trials!r}: expected trial ids like 12,15,40")
        if not ids:
            fail("--trials: no trial id given")
    store = open_store()
    with store:
        try:
            with store.write() as s:
                res = requeue_trials(s, campaign, statuses=tuple(status or (TrialStatus.GIVEN_UP,)),
                                     trial_ids=ids, actor=by)
        except CampaignError as e:
            fail(str(e))
    n = len(res.trial_ids)
    console.print(
        f"campaign {res.name}: {n} trial{'s' if n != 1 else ''} re-queued with a fresh attempt "
        f"budget; {res.previous_status} -> {res.status}", highlight=False)
    if res.status == CampaignStatus.PAUSED:
        console.print(f"it is paused: `evalfleet campaign resume {res.name}` to run them")
    else:
        console.print(f"`evalfleet campaign run {res.name} --fleet fleet.yaml` runs them")


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
    test: Annotated[str, typer.Option(
        help="Pairwise test: mcnemar (paired, on matched blocks) | fisher | barnard (unpaired)."
    )] = "mcnemar",
    blind: Annotated[bool, typer.Option(
        "--blind", help="Show each campaign's blind codes instead of policy names.")] = False,
    detector: Annotated[str | None, typer.Option(
        help="Add this success detector's section: human-only, auto-only and "
             "prediction-powered (PPI) success rates on the campaigns' audit, and its "
             "agreement with humans (table, markdown, json).")] = None,
) -> None:
    """Success per generalization category (RT-2 style) over one or more campaigns: intervals
    clustered by task, every pair of policies compared (Holm-adjusted), Cochran's Q for 3+
    policies, planned vs counted and broken pairing. docs/statistics.md explains the numbers."""
    from orchestrator.reporting import build_campaign_report
    from orchestrator.store.campaigns import CampaignError
    from protocols import report as rpt

    if format not in ("table", "markdown", "csv", "json"):
        fail(f"--format {format!r}: one of table, markdown, csv, json")
    if test not in rpt.TEST_NAMES:
        fail(f"--test {test!r}: one of {', '.join(rpt.TEST_NAMES)}")
    if detector is not None and format == "csv":
        fail("--detector: its section has no csv form; use --format table, markdown or json")
    store = open_store()
    with store:
        try:
            report = build_campaign_report(store, campaign, test=test, blind=blind)
            ppi = _ppi_section(store, campaign, detector, blind)
            questions = question_lines_of(store, campaign)
        except CampaignError as e:
            fail(str(e))
        except ValueError as e:
            fail(f"report of {', '.join(campaign)}: {e}")
    if format == "table":
        console.print(rpt.render_table(report))
        if report.campaigns:
            console.print(rpt.render_accounts_table(report))
    elif format == "markdown":
        typer.echo(rpt.render_markdown(report))
    elif format == "csv":
        typer.echo(rpt.render_csv(report), nl=False)
    else:
        out = rpt.render_json(report)
        add_questions_json(out, questions, blind)  # the declared questions, if any
        if ppi is not None:
            from protocols.report_ppi_render import render_json as ppi_json

            out["ppi"] = ppi_json(ppi)
        typer.echo(json.dumps(out, indent=2))
    if ppi is not None and format in ("table", "markdown"):
        _print_ppi(ppi, format)
    if format in ("table", "markdown"):
        print_questions(console, questions, format, blind=blind)


def _ppi_section(store: Store, campaigns: list[str], detector: str | None,
                 blind: bool) -> PpiReport | None:
    """The --detector section (orchestrator.store.audit.build_ppi), or None without it."""
    if detector is None:
        return None
    from orchestrator.store.audit import build_ppi

    with store.read() as s:
        return build_ppi(s, campaigns, detector, blind=blind)


def _print_ppi(ppi: PpiReport, format: str) -> None:
    from protocols import report_ppi_render as render

    if format == "markdown":
        typer.echo(render.render_markdown(ppi))
        return
    for table in render.render_tables(ppi):
        console.print(table)
    for row in ppi.rows:
        for note in row.notes:
            console.print(f"{row.policy} / {row.category}: {note}", highlight=False,
                          soft_wrap=True, markup=False)
    for line in render.section_notes(ppi):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
