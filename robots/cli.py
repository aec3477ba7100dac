"""`evalfleet bridge serve ...` and `evalfleet keys generate ...` (typer sub-apps).

The main CLI mounts them: app.add_typer(bridge_app, name="bridge"); app.add_typer(keys_app,
name="keys"). `python -m robots.cli bridge serve ...` works on its own too.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import signal
import threading
from pathlib import Path
from typing import Optional

import typer

bridge_app = typer.Typer(help="Run the robot-side bridge for one arm.", no_args_is_help=True)
keys_app = typer.Typer(help="CurveZMQ key pairs for bridges and orchestrators.", no_args_is_help=True)


@bridge_app.callback()
def _bridge_group() -> None:
    """Run the robot-side bridge for one arm (keeps `bridge serve` a sub-command)."""


@keys_app.callback()
def _keys_group() -> None:
    """CurveZMQ key pairs for bridges and orchestrators (keeps `keys generate` a sub-command)."""


def parse_size(text: str) -> tuple[int, int]:
    """'256x256' -> (height, width); 'WxH' is read as width x height like '640x480'."""
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError as e:
        raise typer.BadParameter(f"image size {text!r}: use WIDTHxHEIGHT, e.g. 640x480") from e
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise typer.BadParameter(f"image size {text!r} out of range 16..8192")
    return h, w


def make_driver(name: str, image_size: tuple[int, int] | None = None, replay: Path | None = None,
                replay_loop: bool = False):
    """'sim' | 'replay' | 'package.module:Factory' (image_size passed if the factory takes it).
    Drivers are imported lazily: the sim's renderer is not loaded for a real arm."""
    if name == "sim":
        from dataclasses import replace

        from robots.drivers.sim import SimDriver, SimOptions

        opts = SimOptions()
        if image_size is not None:
            h, w = image_size
            opts = replace(opts, cameras=tuple(replace(c, height=h, width=w) for c in opts.cameras))
        return SimDriver(opts)
    if name == "replay":
        if replay is None:
            raise typer.BadParameter("--driver replay needs --replay DIR (a recorded episode)")
        from robots.drivers.replay import ReplayDriver

        return ReplayDriver(replay, loop=replay_loop)
    if ":" not in name:
        raise typer.BadParameter(f"driver {name!r}: use sim, replay or module:Factory")
    mod_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise typer.BadParameter(f"driver {name!r} cannot be imported: {e}") from e
    kwargs = {}
    if image_size is not None:
        try:
            if "image_size" in inspect.signature(factory).parameters:
                kwargs["image_size"] = image_size
        except (TypeError, ValueError):
            pass
    return factory(**kwargs)


@bridge_app.command("serve")
def serve(
    driver: str = typer.Option("sim", help="sim | replay | module:Factory"),
    bind: str = typer.Option("tcp://127.0.0.1:5555", help="ROUTER endpoint (tcp://host:* picks a port)"),
    pub_bind: Optional[str] = typer.Option(None, help="PUB endpoint for the live frame stream"),
    watchdog_ms: float = typer.Option(500.0, help="hold the arm after this long without a valid command"),
    max_command_age_ms: float = typer.Option(250.0, help="drop commands older than this (0: off)"),
    stream_fps: float = typer.Option(10.0, help="live stream frames per second per camera"),
    image_size: Optional[str] = typer.Option(None, help="camera size WIDTHxHEIGHT, e.g. 256x256"),
    replay: Optional[Path] = typer.Option(None, help="recorded episode dir for --driver replay"),
    replay_loop: bool = typer.Option(False, help="replay: start over after the last step"),
    keys_dir: Optional[Path] = typer.Option(None, help="dir with bridge.key_secret and allow/ (CURVE)"),
    server_secret: Optional[Path] = typer.Option(None, help="bridge secret key file (CURVE)"),
    allow_dir: Optional[Path] = typer.Option(None, help="dir of allowed client public .key files"),
    ready_file: Optional[Path] = typer.Option(None, help="write endpoints as JSON here once serving"),
    log_level: str = typer.Option("INFO"),
) -> None:
    """Serve one arm until SIGINT/SIGTERM."""
    from robots.bridge import BridgeConfig, BridgeConfigError, BridgeServer, CurveServerConfig

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if keys_dir is not None:
        server_secret = server_secret or keys_dir / "bridge.key_secret"
        allow_dir = allow_dir or keys_dir / "allow"
    if (server_secret is None) != (allow_dir is None):
        raise typer.BadParameter("CURVE needs both --server-secret and --allow-dir (or --keys-dir)")
    curve = CurveServerConfig(server_secret, allow_dir) if server_secret is not None else None
    cfg = BridgeConfig(bind=bind, pub_bind=pub_bind, watchdog_ms=watchdog_ms,
                       max_command_age_ms=max_command_age_ms, stream_fps=stream_fps, curve=curve,
                       ready_file=ready_file)
    drv = make_driver(driver, parse_size(image_size) if image_size else None, replay, replay_loop)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with BridgeServer(drv, cfg) as server:
            typer.echo(f"bridge {server.session_id} serving on {server.endpoint}"
                       + (f", stream on {server.pub_endpoint}" if server.pub_endpoint else ""))
            while not stop.wait(0.2):
                if server.wait(0):
                    raise typer.Exit(3)
    except BridgeConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e


@keys_app.command("generate")
def generate(name: str = typer.Argument(..., help="key name, e.g. orchestrator or arm1"),
             dir: Path = typer.Option(Path("keys"), "--dir", help="directory for NAME.key(_secret)")) -> None:
    """Create NAME.key (public: share it) and NAME.key_secret (private, mode 0600)."""
    from robots.keys import KeyFileError, generate_keypair

    try:
        public, secret = generate_keypair(dir, name)
    except KeyFileError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"public key: {public}\nsecret key: {secret} (keep it private)")


def _main() -> None:
    app = typer.Typer(no_args_is_help=True)
    app.add_typer(bridge_app, name="bridge")
    app.add_typer(keys_app, name="keys")
    app()


if __name__ == "__main__":
    _main()
