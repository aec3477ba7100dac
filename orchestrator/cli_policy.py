"""`evalfleet policy register|list|show`: registered policies are immutable.

    evalfleet policy register oracle --kind oracle
    evalfleet policy register my-vla --kind vla --path /models/my-vla --version 2025-11-01
    evalfleet policy list
    evalfleet policy show my-vla --version 2025-11-01
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orchestrator.cli_common import fail, open_store

policy_app = typer.Typer(
    help="Register, list and inspect the policies campaigns evaluate. A registered name + "
    "version never changes: new weights or options need a new --version.",
    no_args_is_help=True,
)
console = Console()

USAGE_ERROR = 2  # bad input: nothing was written


@policy_app.command("register")
def policy_register(
    name: Annotated[str, typer.Argument(help="Policy name used in campaigns (--policy NAME).")],
    kind: Annotated[
        str, typer.Option(help="oracle | vision_heuristic | random | vla.", show_default=False)
    ],
    version: Annotated[
        str, typer.Option(help="Version label; changed weights or options need a new one.")
    ] = "1",
    path: Annotated[
        str | None,
        typer.Option(help="Checkpoint directory (kind vla); its sha256 is recorded now and "
                     "checked whenever a worker loads the policy."),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="key=value option of the kind, repeatable "
                     "(see docs/policies.md, e.g. -o seed=3)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace a name + version whose spec differs; allowed "
                     "only while no episode has used it. Audited."),
    ] = False,
    by: Annotated[str, typer.Option(help="Who registers (written to the audit log).")] = "cli",
) -> None:
    """Register a policy version. Re-registering the same spec is a no-op; a different spec
    under an existing name + version is refused (register a new --version)."""
    from orchestrator.store.campaigns import PolicySpec
    from orchestrator.store.policies import register
    from orchestrator.weights import checksum_path
    from policies.registration import (
        Decision,
        PolicyChangeRefused,
        parse_options,
        validate_registration,
    )
    from policies.registry import PolicyConfigError

    try:
        valid = validate_registration(
            name, kind, version=version, path=path, options=parse_options(option or [])
        )
    except PolicyConfigError as e:
        fail(f"policy register: {e}", USAGE_ERROR)
    cfg = valid.config
    try:
        checksum = checksum_path(Path(cfg.path)) if cfg.path else None
    except OSError as e:
        fail(f"policy register: cannot read --path {path}: {e}", USAGE_ERROR)
    spec = PolicySpec(
        name=cfg.name,
        kind=cfg.kind,
        version=valid.version,
        checkpoint_uri=cfg.path,
        config={"kind": cfg.kind, "path": cfg.path, "options": dict(cfg.options)},
        weights_checksum=checksum,
    )
    store = open_store()
    with store:
        try:
            with store.write() as s:
                done = register(s, spec, force=force, actor=by)
        except PolicyChangeRefused as e:
            fail(f"policy register: {e}")
    label = f"policy {name} v{version} ({kind})"
    if done.decision is Decision.UNCHANGED:
        console.print(f"{label} already registered as #{done.policy_id}, unchanged")
    elif done.decision is Decision.REPLACE:
        console.print(f"{label} #{done.policy_id} replaced (--force, audited): "
                      + ", ".join(done.changes))
    else:
        sha = f", weights sha256 {checksum[:12]}" if checksum else ""
        console.print(f"{label} registered as #{done.policy_id}{sha}")


@policy_app.command("list")
def policy_list(
    name: Annotated[str | None, typer.Argument(help="Only this policy's versions.")] = None,
) -> None:
    """Every registered policy version: kind, weights checksum, campaigns and episodes."""
    from rich.table import Table

    from orchestrator.store.policies import list_policies

    store = open_store()
    with store, store.read() as s:
        rows = list_policies(s, name)
    if not rows:
        console.print("no policy is registered" + (f" under {name!r}" if name else "")
                      + ": `evalfleet policy register NAME --kind ...`")
        return
    table = Table()
    for col in ("name", "version", "kind", "checksum", "campaigns", "episodes"):
        table.add_column(col, justify="right" if col in ("campaigns", "episodes") else "left")
    for r in rows:
        table.add_row(r.name, r.version, r.kind, (r.weights_checksum or "-")[:12],
                      str(r.campaigns), str(r.episodes))
    console.print(table)


@policy_app.command("show")
def policy_show(
    name: Annotated[str, typer.Argument(help="Policy name.")],
    version: Annotated[
        str | None, typer.Option(help="Version (default: the newest registered).")
    ] = None,
) -> None:
    """One policy version: full config, weights checksum and the campaigns that used it."""
    from orchestrator.store.policies import list_policies, policy_detail

    store = open_store()
    with store, store.read() as s:
        d = policy_detail(s, name, version)
        versions = [r.version for r in list_policies(s, name)]
    if d is None:
        if versions:
            fail(f"policy {name!r} has no version {version!r} (versions: {', '.join(versions)})")
        fail(f"policy {name!r} is not registered: `evalfleet policy list` shows the policies")
    p = d.summary
    lines = [
        (f"[bold]{p.name}[/bold] version {p.version} (#{p.id}, kind {p.kind}, "
         f"registered {p.created_at:%Y-%m-%d %H:%M})"),
        f"checkpoint: {d.checkpoint_uri or '-'}",
        f"weights sha256: {p.weights_checksum or '- (no checkpoint)'}",
        f"config: {json.dumps(d.config, sort_keys=True)}",
        f"campaigns ({len(d.campaigns)}): {', '.join(d.campaigns) or '-'}",
        f"episodes: {p.episodes}",
    ]
    if d.episode_checksums:
        lines.append("checksums the workers reported: "
                     + ", ".join(c[:12] for c in d.episode_checksums))
    if len(versions) > 1:
        lines.append(f"versions: {', '.join(versions)}")
    for ln in lines:
        console.print(ln, highlight=False, soft_wrap=True)
