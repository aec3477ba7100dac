"""`evalfleet policy register|list|show|serve`: registered policies are immutable.

    evalfleet policy register oracle --kind oracle
    evalfleet policy register my-vla --kind vla --path /models/my-vla --version 2025-11-01
    evalfleet policy list
    evalfleet policy show my-vla --version 2025-11-01
    evalfleet policy serve my-vla --preset libero --port 8000   # openpi's websocket protocol

`serve` hosts a policy (a config YAML or a registered name) behind openpi's websocket policy
protocol, batching concurrent clients (policies/remote/openpi_server.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from orchestrator.cli_common import fail, open_store

if TYPE_CHECKING:  # imported when `serve` runs: the other commands stay light
    from policies.remote.openpi_server import OpenpiPolicyServer

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
        str, typer.Option(help="oracle | vision_heuristic | random | vla | openpi | "
                          "openvla_rest | module.path:ClassName (your own Policy class).",
                          show_default=False)
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
                     "(see docs/policies.md, e.g. -o seed=3); key=@file.yaml takes a "
                     "structured value from a YAML file (e.g. -o mapping=@sim.yaml)."),
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
            name, kind, version=version, path=path,
            options=_with_files(parse_options(option or [])),
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


def _with_files(options: dict[str, str]) -> dict[str, Any]:
    """`-o key=@file.yaml`: the value is the file's YAML (a mapping, a list, a number...)."""
    import yaml

    from policies.registry import PolicyConfigError

    out: dict[str, Any] = dict(options)
    for key, value in options.items():
        if not value.startswith("@"):
            continue
        f = Path(value[1:]).expanduser()
        try:
            out[key] = yaml.safe_load(f.read_text())
        except OSError as e:
            raise PolicyConfigError(f"-o {key}=@{f}: cannot read {f}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise PolicyConfigError(f"-o {key}=@{f}: not valid YAML: "
                                    f"{str(e).splitlines()[0]}") from None
    return out


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


@policy_app.command("serve")
def policy_serve(
    target: Annotated[
        str, typer.Argument(help="A policy config YAML (name, kind, path, options) or the name "
                            "of a registered policy (`evalfleet policy list`).")],
    preset: Annotated[
        str, typer.Option(help="How clients' observations map to the policy's inputs and its "
                          "chunks to replies: droid | libero | aloha | generic (see "
                          "docs/policies.md). Must carry what the policy reads and emits.",
                          show_default=False)
    ],
    version: Annotated[
        str | None, typer.Option(help="Version of a registered policy (default: the newest).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on: 127.0.0.1 serves this machine only, "
                          "0.0.0.0 every interface (then set --api-key-env).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port, printed).")] = 8000,
    mapping: Annotated[
        Path | None, typer.Option(help="YAML mapping for --preset generic, or overrides of a "
                                  "named preset (e.g. its images: which camera each key is).")
    ] = None,
    max_batch: Annotated[
        int, typer.Option(help="At most this many requests (from all connections) go through "
                          "the policy in one call.")
    ] = 32,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long a request may wait for others to join its batch; "
                            "only while another connection may still send (0: never wait).")
    ] = 5.0,
    max_message_mb: Annotated[
        float, typer.Option(help="Largest observation message accepted; a larger one closes "
                            "that connection with 1009.")
    ] = 32.0,
    api_key_env: Annotated[
        str | None, typer.Option(help="Name of an environment variable holding the API key; "
                                 "clients must then send 'Authorization: Api-Key <key>' (others "
                                 "get HTTP 401). The key itself is never a command-line argument.")
    ] = None,
    log_file: Annotated[
        Path | None, typer.Option(help="Write the server's log (connections, refused messages, "
                                  "policy errors with tracebacks) here instead of stderr.")
    ] = None,
) -> None:
    """Serve a policy over openpi's websocket protocol, batching concurrent clients.

    Any openpi client, or evalfleet's policy kind `openpi`, can then evaluate it from another
    machine or environment. GET /healthz answers 200 once the policy is loaded. Ctrl-C or
    SIGTERM stops it cleanly.

        evalfleet policy serve tiny-vla.yaml --port 8000 --preset libero
        EVALFLEET_SERVE_KEY=s3cret evalfleet policy serve my-vla --host 0.0.0.0 \\
            --api-key-env EVALFLEET_SERVE_KEY --log-file serve.log
    """
    import os

    import yaml

    from orchestrator.weights import build_verified_policy
    from policies.registry import (
        PolicyConfigError,
        load_policy_config,
        parse_policy_config,
        policy_io,
        validate_options,
    )
    from policies.remote.openpi_server import OpenpiPolicyServer, ServeOptions
    from policies.remote.presets import PresetError
    from policies.remote.presets import preset as make_preset
    from policies.remote.serve_core import preset_mismatch

    where = "policy serve"
    config: dict[str, object]
    expected: str | None = None
    try:
        if Path(target).suffix in (".yaml", ".yml") or Path(target).is_file():
            cfg = load_policy_config(target)
        else:
            config, expected = _registered_config(target, version)
            cfg = parse_policy_config(config, where=f"registered policy {target!r}")
        validate_options(cfg)
        config = cfg.model_dump()
        overrides = yaml.safe_load(mapping.read_text()) if mapping is not None else None
        if overrides is not None and not isinstance(overrides, dict):
            fail(f"{where}: --mapping {mapping} must be a YAML mapping (images, state, prompt, "
                 f"actions), not a {type(overrides).__name__}", USAGE_ERROR)
        the_preset = make_preset(preset, overrides)
        mismatch = preset_mismatch(repr(cfg.name), policy_io(cfg), the_preset.name,
                                   the_preset.io)
        if mismatch is not None:
            fail(f"{where}: {mismatch}", USAGE_ERROR)
        key = None
        if api_key_env is not None:
            key = os.environ.get(api_key_env, "").strip()
            if not key:
                fail(f"{where}: environment variable {api_key_env} is not set or empty (it "
                     "should hold the API key)", USAGE_ERROR)
        options = ServeOptions(host=host, port=port, max_batch=max_batch,
                               batch_wait_s=batch_wait_ms / 1000.0,
                               max_message_bytes=int(max_message_mb * 1024 * 1024), api_key=key)
    except (PolicyConfigError, PresetError, ValueError) as e:
        fail(f"{where}: {e}", USAGE_ERROR)
    except (OSError, yaml.YAMLError) as e:
        fail(f"{where}: cannot read --mapping {mapping}: {str(e).splitlines()[0]}", USAGE_ERROR)

    if host not in ("127.0.0.1", "localhost", "::1") and key is None:
        console.print(f"policy serve: warning: listening on {host} with no Api-Key "
                      "(--api-key-env): anyone who reaches the port can query the policy",
                      highlight=False)
    server = OpenpiPolicyServer(lambda: build_verified_policy(config, expected), the_preset,
                                options)
    with _serve_log(log_file):
        _serve_until_signal(server, str(config["name"]))


@contextmanager
def _serve_log(log_file: Path | None) -> Iterator[None]:
    """The server's log (connections, refusals, tracebacks) to `log_file` or stderr."""
    import logging

    log = logging.getLogger("evalfleet.serve")
    try:
        handler: logging.Handler = (logging.FileHandler(log_file) if log_file is not None
                                    else logging.StreamHandler())
    except OSError as e:
        fail(f"policy serve: cannot write --log-file {log_file}: {e.strerror or e}", USAGE_ERROR)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(saved[0])
        log.propagate = saved[1]


def _serve_until_signal(server: OpenpiPolicyServer, name: str) -> None:
    """Start `server`, say when it is ready, serve until SIGINT/SIGTERM, stop it cleanly."""
    import signal
    import threading

    from policies.remote.openpi_server import ServeError

    where = "policy serve"
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        console.print(f"{where}: listening on {server.url} (preset {server.preset.name}, max "
                      f"batch {server.options.max_batch}, batch wait "
                      f"{server.options.batch_wait_s * 1000:g} ms"
                      f"{', Api-Key required' if server.options.api_key else ''}); loading "
                      f"{name} ...", highlight=False)
        while not stop.is_set() and not server.wait_loaded(0.25):
            pass
        if server.load_error is not None:
            fail(f"{where}: {server.load_error}")
        if server.policy is not None and not stop.is_set():
            m = server.policy.metadata
            console.print(f"{where}: {m.name} ready (kind {m.kind}, sha256 {m.checksum[:12]}); "
                          f"GET {server.url.replace('ws://', 'http://')}/healthz; Ctrl-C stops",
                          highlight=False)
        while not stop.wait(0.5):
            if not server.running:
                fail(f"{where}: the server stopped unexpectedly (see its log)")
    except ServeError as e:
        fail(f"{where}: {e}")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(f"{where}: stopped")


def _registered_config(name: str, version: str | None) -> tuple[dict[str, object], str | None]:
    """A registered policy's config as a worker builds it, and its weights checksum."""
    from orchestrator.store.policies import policy_detail

    store = open_store()
    with store, store.read() as s:
        d = policy_detail(s, name, version)
    if d is None:
        what = f"{name!r} version {version!r}" if version else repr(name)
        fail(f"policy serve: {what} is neither a policy config file nor a registered policy "
             "(`evalfleet policy list`)", USAGE_ERROR)
    c = d.config
    config = {"name": d.summary.name, "kind": c.get("kind", d.summary.kind), "path": c.get("path"),
              "options": c.get("options") or {}}
    return config, d.summary.weights_checksum
