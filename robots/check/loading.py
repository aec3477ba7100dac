"""A driver by name and `--config FILE`, for `bridge check` (and anything else that wants it).

DRIVER is what `bridge serve --driver` takes: `sim`, `replay` or `package.module:Factory`
(robots.cli.make_driver imports it). `--config FILE` is a YAML (or JSON) mapping:

- for `module:Factory`: the factory's keyword arguments, e.g. `host: 192.168.1.10`;
- for `sim`: `space` (ee_delta | joint_position), `cameras` (a list of NAME[=WIDTHxHEIGHT]),
  `image_size` (WIDTHxHEIGHT), `max_joint_speed` (rad/s), `control_hz`, `seed`;
- for `replay`: `replay` (the recorded episode directory) and `loop` (bool).

Errors are DriverLoadError: one line naming the file or driver and what to change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from robots.drivers.base import RobotDriver

SIM_KEYS = ("space", "cameras", "image_size", "max_joint_speed", "control_hz", "seed")
REPLAY_KEYS = ("replay", "loop")


class DriverLoadError(ValueError):
    """The driver or its config cannot be loaded (one line)."""


def read_config(path: Path) -> dict[str, Any]:
    """The mapping in a YAML/JSON config file (an empty file is an empty mapping)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DriverLoadError(f"driver config {path}: cannot read it: {e.strerror or e}") from e
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DriverLoadError(f"driver config {path}: not valid YAML/JSON: {first}") from e
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise DriverLoadError(f"driver config {path}: must be a mapping of option names to values, "
                              f"got {type(data).__name__}")
    return data


def _unknown(name: str, config: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    if extra := sorted(set(config) - set(allowed)):
        raise DriverLoadError(f"driver {name}: unknown config key(s) {extra}; it takes {list(allowed)}")


def load_driver(name: str, config: Mapping[str, Any] | None = None) -> RobotDriver:
    """Build the driver `name` with `config` (see the module docstring)."""
    drv = _build(name, config)
    if not isinstance(drv, RobotDriver):
        raise DriverLoadError(f"driver {name}: the factory returned {type(drv).__name__}, not a "
                              "robots.drivers.base.RobotDriver")
    return drv


def _build(name: str, config: Mapping[str, Any] | None) -> Any:
    import typer

    from robots.cli import make_driver, parse_size

    cfg = dict(config or {})
    try:
        if name == "sim":
            _unknown(name, cfg, SIM_KEYS)
            cams = cfg.get("cameras")
            if cams is not None and not (isinstance(cams, list) and all(isinstance(c, str) for c in cams)):
                raise DriverLoadError("driver sim: `cameras` is a list of NAME[=WIDTHxHEIGHT], "
                                      "e.g. [main, wrist=128x128]")
            size = parse_size(str(cfg["image_size"])) if "image_size" in cfg else None
            drv = make_driver("sim", size, space=cfg.get("space"), cameras=cams,
                              max_joint_speed=cfg.get("max_joint_speed"))
            extra = {k: cfg[k] for k in ("control_hz", "seed") if k in cfg}
            if extra:
                from robots.drivers.sim import SimDriver

                assert isinstance(drv, SimDriver)
                drv = SimDriver(replace(drv.options, **extra))
            return drv
        if name == "replay":
            _unknown(name, cfg, REPLAY_KEYS)
            path = cfg.get("replay")
            return make_driver("replay", None, Path(path) if path else None, bool(cfg.get("loop", False)))
        if ":" not in name:
            raise DriverLoadError(f"driver {name!r}: use sim, replay or package.module:Factory")
        if not cfg:  # exactly what `bridge serve --driver module:Factory` builds
            try:
                return make_driver(name)
            except typer.BadParameter:
                raise
            except Exception as e:
                raise DriverLoadError(f"driver {name}: the factory raised {type(e).__name__}: {e}") from e
        factory = _factory(name)
        try:
            return factory(**cfg)
        except TypeError as e:
            raise DriverLoadError(f"driver {name}: the config does not fit the factory: {e}") from e
        except Exception as e:
            raise DriverLoadError(f"driver {name}: the factory raised {type(e).__name__}: {e}") from e
    except typer.BadParameter as e:
        raise DriverLoadError(e.message) from e
    except DriverLoadError:
        raise
    except ValueError as e:  # SimOptions: an unknown camera or space, a size out of range
        raise DriverLoadError(f"driver {name}: {e}") from e


def _factory(name: str) -> Any:
    import importlib

    mod_name, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise DriverLoadError(f"driver {name!r} cannot be imported: {e}") from e
