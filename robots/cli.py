"""`evalfleet bridge serve ...`, `evalfleet bridge check ...` and `evalfleet keys generate ...`
(typer sub-apps).

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
from typing import Annotated

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


def parse_camera(text: str, default: tuple[int, int] | None = None) -> tuple[str, int, int]:
    """'wrist' or 'wrist=128x96' (WIDTHxHEIGHT) -> (name, height, width); no size: `default`
    (height, width), else 256x256."""
    name, _, size = text.partition("=")
    if not name.strip():
        raise typer.BadParameter(f"camera {text!r}: use NAME or NAME=WIDTHxHEIGHT, e.g. wrist=128x128")
    h, w = parse_size(size) if size else (default or (256, 256))
    return name.strip(), h, w


def make_driver(name: str, image_size: tuple[int, int] | None = None, replay: Path | None = None,
                replay_loop: bool = False, *, space: str | None = None,
                cameras: list[str] | None = None, max_joint_speed: float | None = None):
    """'sim' | 'replay' | 'package.module:Factory' (image_size passed if the factory takes it).
    Drivers are imported lazily: the sim's renderer is not loaded for a real arm. `space`,
    `cameras` ('NAME[=WxH]') and `max_joint_speed` are the sim's options."""
    if name != "sim" and (space or cameras or max_joint_speed is not None):
        raise typer.BadParameter("--space, --camera and --max-joint-speed are options of "
                                 "--driver sim only")
    if name == "sim":
        from dataclasses import replace

        from robots.drivers.base import CameraSpec
        from robots.drivers.sim import SimDriver, SimOptions

        opts = SimOptions()
        if image_size is not None:
            h, w = image_size
            opts = replace(opts, cameras=tuple(replace(c, height=h, width=w) for c in opts.cameras))
        if cameras:
            specs = [parse_camera(c, image_size) for c in cameras]
            opts = replace(opts, cameras=tuple(CameraSpec(n, h, w) for n, h, w in specs))
        if space:
            opts = replace(opts, space=space)  # type: ignore[arg-type]
        if max_joint_speed is not None:
            opts = replace(opts, max_joint_speed=max_joint_speed)
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
    driver: Annotated[str, typer.Option(help="sim | replay | module:Factory")] = "sim",
    bind: Annotated[str, typer.Option(help="ROUTER endpoint (tcp://host:* picks a port)")] = "tcp://127.0.0.1:5555",
    pub_bind: Annotated[str | None, typer.Option(help="PUB endpoint for the live frame stream")] = None,
    watchdog_ms: Annotated[float, typer.Option(help="hold the arm after this long without a valid command")] = 500.0,
    max_command_age_ms: Annotated[float, typer.Option(help="drop commands older than this (0: off)")] = 250.0,
    stream_fps: Annotated[float, typer.Option(help="live stream frames per second per camera")] = 10.0,
    image_size: Annotated[str | None, typer.Option(help="camera size WIDTHxHEIGHT, e.g. 256x256")] = None,
    replay: Annotated[Path | None, typer.Option(help="recorded episode dir for --driver replay")] = None,
    replay_loop: Annotated[bool, typer.Option(help="replay: start over after the last step")] = False,
    keys_dir: Annotated[Path | None, typer.Option(help="dir with bridge.key_secret and allow/ (CURVE)")] = None,
    server_secret: Annotated[Path | None, typer.Option(help="bridge secret key file (CURVE)")] = None,
    allow_dir: Annotated[Path | None, typer.Option(help="dir of allowed client public .key files")] = None,
    ready_file: Annotated[Path | None, typer.Option(help="write endpoints as JSON here once serving")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG | INFO | WARNING | ERROR")] = "INFO",
    space: Annotated[str | None, typer.Option(help="sim: ee_delta (default) | joint_position")] = None,
    camera: Annotated[list[str] | None, typer.Option(
        help="sim: a camera NAME[=WIDTHxHEIGHT] (main/front, wrist); repeat for several")] = None,
    max_joint_speed: Annotated[float | None, typer.Option(
        help="sim joint_position: max joint speed, rad/s")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="YAML/JSON mapping: the driver factory's keyword arguments, as "
                         "`bridge check --config` takes it")] = None,
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
    if config is not None:  # the same driver `bridge check --config` checked
        from robots.check.loading import DriverLoadError, load_driver, read_config

        if image_size or replay or space or camera or max_joint_speed is not None:
            raise typer.BadParameter("--config replaces --image-size, --replay, --space, --camera "
                                     "and --max-joint-speed: put them in the config file")
        try:
            drv = load_driver(driver, read_config(config))
        except DriverLoadError as e:
            raise typer.BadParameter(str(e)) from e
    else:
        try:
            drv = make_driver(driver, parse_size(image_size) if image_size else None, replay,
                              replay_loop, space=space, cameras=camera,
                              max_joint_speed=max_joint_speed)
        except ValueError as e:  # SimOptions: an unknown camera or space, a size out of range
            raise typer.BadParameter(str(e)) from e
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


@bridge_app.command("check")
def check(
    driver: Annotated[str, typer.Argument(help="the driver, as `bridge serve --driver` takes it: "
                                               "sim | replay | package.module:Factory")],
    config: Annotated[Path | None, typer.Option(
        "--config", help="YAML/JSON mapping: the factory's keyword arguments (sim: space, cameras, "
                         "image_size, control_hz, max_joint_speed, seed)")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="send no motion: commands are recorded, never forwarded to the driver; "
                          "hold/e-stop checks are skipped")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the results here as JSON")] = None,
) -> None:
    """Check a driver against the bridge's contract BEFORE serving it; exit 1 names what fails.

    Run it with the arm in a safe state and the hardware e-stop within reach: first with
    --dry-run (no motion), then without (small motions: a few cm or a few degrees). It checks
    the declared spaces, that observe() returns what the capabilities promise, that
    out-of-limit actions reach the driver clipped and NaN never does, that hold and e-stop
    stop the arm within one control period (from the driver's own feedback), that reset()
    either readies the arm or gives operator instructions, and observe/act timings.
    reset() is called in both modes (it may move your arm to its home pose, as in serve).
    Exit 0: every check passed; 1: a check failed (each named on a FAIL line); 2: the driver
    or config cannot be loaded. Then serve it: `evalfleet bridge serve --driver DRIVER
    --config FILE`. See docs/drivers.md.
    """
    import json

    from rich.console import Console

    from robots.check.loading import DriverLoadError, load_driver, read_config
    from robots.check.report import print_report
    from robots.check.results import exit_code, results_to_json
    from robots.check.runner import CheckOptions, run_checks

    try:
        drv = load_driver(driver, read_config(config) if config is not None else None)
    except DriverLoadError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    results = run_checks(drv, CheckOptions(dry_run=dry_run))
    print_report(Console(), results, driver=driver, dry_run=dry_run)
    if json_out is not None:
        doc = results_to_json(results, driver=driver, dry_run=dry_run)
        try:
            json_out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            typer.echo(f"error: --json {json_out}: cannot write it: {e.strerror or e}", err=True)
            raise typer.Exit(2) from e
    raise typer.Exit(exit_code(results))


@keys_app.command("generate")
def generate(
    name: Annotated[str, typer.Argument(help="key name, e.g. orchestrator or bridge")],
    dir: Annotated[Path, typer.Option("--dir", help="directory for NAME.key and NAME.key_secret")] = Path("keys"),
) -> None:
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
