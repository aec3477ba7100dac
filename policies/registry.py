"""Naming a policy in a campaign: a small config (name, kind, path, options) -> a Policy.

    name: tiny-vla
    kind: vla            # oracle | vision_heuristic | random | vla | module.path:ClassName
    path: ./checkpoints/tiny-vla
    options: {constrained: true, device: cpu}

Every kind validates its options with a pydantic model that forbids unknown keys, so a typo
fails at config time with one line saying which policy, which option and what is allowed.

**A lab's own policy class** is a kind too: `kind: my_lab.policies:MyPolicy` imports
`MyPolicy` (a `policies.base.Policy` subclass) wherever the policy is built (the policy
worker, `policy serve`). The class says what it needs (docs/policies.md, "Your own policy
class"): `Options` (a pydantic model; without it, no options), `requires_path` (whether
`path` is a checkpoint directory it loads), the classmethod `declared_io(options) ->
PolicyIO` (what it emits and reads, matched against the arms before any trial is leased) and
a constructor `cls(options, name=..., path=...)` (`path` only when `requires_path`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from policies.base import Policy
from robots.spaces import RT2_IO, PolicyIO


class PolicyConfigError(ValueError):
    """A policy config that cannot be built; the message is one line saying what to fix."""


def _kinds() -> dict[str, tuple[Callable[[], type[BaseModel]], Callable[..., Policy], bool]]:
    """kind -> (options model, builder(config, options) -> Policy, needs a path)."""

    def oracle_opts():
        from policies.oracle import OracleOptions

        return OracleOptions

    def oracle(cfg, opts):
        from policies.oracle import ScriptedOracle

        return ScriptedOracle(opts, name=cfg.name)

    def vision_opts():
        from policies.vision import VisionOptions

        return VisionOptions

    def vision(cfg, opts):
        from policies.vision import VisionHeuristic

        return VisionHeuristic(opts, name=cfg.name)

    def random_opts():
        from policies.baselines import RandomOptions

        return RandomOptions

    def random(cfg, opts):
        from policies.baselines import RandomPolicy

        return RandomPolicy(opts, name=cfg.name)

    def vla_opts():
        from policies.vla import VLAOptions

        return VLAOptions

    def vla(cfg, opts):
        from policies.vla import VLAPolicy

        return VLAPolicy(cfg.path, opts, name=cfg.name)

    def openvla_rest_opts():
        from policies.remote.openvla_rest import OpenVLARestOptions

        return OpenVLARestOptions

    def openvla_rest(cfg, opts):
        from policies.remote.openvla_rest import OpenVLARestPolicy

        return OpenVLARestPolicy(opts, name=cfg.name)

    def openpi_opts():
        from policies.remote.openpi_policy import OpenpiOptions

        return OpenpiOptions

    def openpi(cfg, opts):
        from policies.remote.openpi_policy import OpenpiPolicy

        return OpenpiPolicy(opts, name=cfg.name)

    return {
        "oracle": (oracle_opts, oracle, False),
        "vision_heuristic": (vision_opts, vision, False),
        "random": (random_opts, random, False),
        "vla": (vla_opts, vla, True),
        "openpi": (openpi_opts, openpi, False),
        "openvla_rest": (openvla_rest_opts, openvla_rest, False),
    }


KINDS: tuple[str, ...] = ("oracle", "vision_heuristic", "random", "vla", "openpi", "openvla_rest")
CLASS_KIND = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")  # module.path:Class


class _NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_class_kind(kind: str) -> bool:
    return bool(CLASS_KIND.match(kind))


def policy_class(kind: str, name: str = "?") -> type[Policy]:
    """The Policy subclass a `module.path:ClassName` kind names (imported here)."""
    module_name, _, class_name = kind.partition(":")
    where = f"policy {name!r} (kind {kind})"
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the config's to fix
        raise PolicyConfigError(f"{where}: cannot import {module_name}: "
                                f"{e.__class__.__name__}: {e}; is it installed where the "
                                "policy runs?") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise PolicyConfigError(f"{where}: {module_name} has no Policy subclass named "
                                f"{class_name}")
    if not callable(getattr(cls, "declared_io", None)):
        raise PolicyConfigError(f"{where}: {class_name} must define the classmethod "
                                "declared_io(options) -> PolicyIO (what it emits and reads)")
    return cls


def _kind_entry(kind: str, name: str = "?") -> tuple[
        Callable[[], type[BaseModel]], Callable[..., Policy], bool]:
    """(options model, builder(config, options) -> Policy, needs a path) of any kind."""
    if not is_class_kind(kind):
        return _kinds()[kind]
    cls = policy_class(kind, name)
    opts_model: type[BaseModel] = getattr(cls, "Options", None) or _NoOptions
    needs = bool(getattr(cls, "requires_path", False))

    def build(cfg: PolicyConfig, opts: BaseModel) -> Policy:
        kwargs: dict[str, Any] = {"name": cfg.name}
        if needs:
            kwargs["path"] = cfg.path
        return cls(opts, **kwargs)  # type: ignore[call-arg]

    return (lambda: opts_model), build, needs


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    kind: str
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in KINDS and not is_class_kind(v):
            raise ValueError(f"unknown policy kind {v!r}; expected one of {list(KINDS)} "
                             "or a class as module.path:ClassName")
        return v


def _one_line(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_policy_config(data: dict, where: str = "policy config") -> PolicyConfig:
    if not isinstance(data, dict):
        raise PolicyConfigError(
            f"{where}: expected a mapping with name/kind/path/options, got {type(data).__name__}"
        )
    try:
        return PolicyConfig(**data)
    except ValidationError as e:
        raise PolicyConfigError(f"{where}: {_one_line(e)}") from None


def validate_options(config: PolicyConfig) -> BaseModel:
    opts_model, _, needs_path = _kind_entry(config.kind, config.name)
    model = opts_model()
    if needs_path and not config.path:
        raise PolicyConfigError(
            f"policy {config.name!r} (kind {config.kind}): 'path' is required "
            "(the local checkpoint directory)"
        )
    if needs_path and not Path(config.path).is_dir():
        raise PolicyConfigError(
            f"policy {config.name!r} (kind {config.kind}): path {config.path} "
            "does not exist or is not a directory"
        )
    try:
        return model(**config.options)
    except ValidationError as e:
        allowed = ", ".join(model.model_fields)
        raise PolicyConfigError(
            f"policy {config.name!r} (kind {config.kind}): bad options: "
            f"{_one_line(e)} (allowed: {allowed})"
        ) from None


# kinds whose `space` option picks the space they emit (policies/oracle.py, baselines.py)
SPACE_KINDS: tuple[str, ...] = ("oracle", "random")  # their `space` option


def policy_io(config: PolicyConfig | dict) -> PolicyIO:
    """What a registered policy emits and reads (robots.spaces.PolicyIO), from its config
    alone: no model is loaded, so `campaign create` and `campaign run` can match it against
    the arms before any trial is leased. RT-2 kinds (vla, vision_heuristic) emit RT-2's
    ee_delta[7]; oracle and random emit what their `space` option says (default ee_delta;
    joint_position: 6 joint angles + gripper, 0 closed .. 1 open). `camera_names`: the
    camera a vision_heuristic reads (option `camera`, default `main`) or a vla whose `camera`
    option is set (unset: the first frame, no name); the arm must declare it."""
    cfg = config if isinstance(config, PolicyConfig) else parse_policy_config(config)
    if is_class_kind(cfg.kind):
        io = policy_class(cfg.kind, cfg.name).declared_io(validate_options(cfg))  # type: ignore[attr-defined]
        if not isinstance(io, PolicyIO):
            raise PolicyConfigError(f"policy {cfg.name!r} (kind {cfg.kind}): declared_io "
                                    f"returned {type(io).__name__}, not a PolicyIO")
        return io
    if cfg.kind == "openvla_rest":  # ee_delta[7], gripper 0 close .. 1 open (OpenVLA's)
        from policies.remote.openvla_rest import OpenVLARestPolicy

        return OpenVLARestPolicy.declared_io(validate_options(cfg))  # type: ignore[arg-type]
    if cfg.kind == "openpi":  # what its preset (or mapping) sends and reads; no connection
        from policies.remote.openpi_policy import OpenpiPolicy

        return OpenpiPolicy.declared_io(validate_options(cfg))  # type: ignore[arg-type]
    if cfg.kind not in SPACE_KINDS:
        return replace(RT2_IO, camera_names=_camera_names(cfg))
    from policies.oracle import space_io

    space = str(cfg.options.get("space", "ee_delta"))
    if space not in SPACES:
        raise PolicyConfigError(
            f"policy {cfg.name!r} (kind {cfg.kind}): option space {space!r}: one of "
            f"{', '.join(SPACES)}")
    return space_io(space)


SPACES: tuple[str, ...] = ("ee_delta", "joint_position")

#: kinds that read one camera by name: kind -> the default of their `camera` option
#: (policies/vision.py VisionOptions, policies/vla.py VLAOptions; None or "": the first frame
#: of each input, no name). A unit test keeps this table equal to the option models' defaults
#: (not imported here: policies.vla imports torch). oracle, random and chunked read none.
CAMERA_OPTION_DEFAULTS: dict[str, str | None] = {"vision_heuristic": "main", "vla": None}


def _camera_names(cfg: PolicyConfig) -> tuple[str, ...]:
    """The cameras a policy reads by name (robots.spaces.PolicyIO.camera_names)."""
    if cfg.kind not in CAMERA_OPTION_DEFAULTS:
        return ()
    camera = cfg.options.get("camera", CAMERA_OPTION_DEFAULTS[cfg.kind])
    if camera is None or camera == "":  # both mean the first frame (policies.base.check_frame)
        return ()
    if not isinstance(camera, str):
        raise PolicyConfigError(
            f"policy {cfg.name!r} (kind {cfg.kind}): option camera {camera!r}: the name of one of "
            "the arm's cameras (a string)")
    return (camera,)


def build_policy(config: PolicyConfig | dict) -> Policy:
    """Validate a config and construct its policy (loads weights for model kinds)."""
    cfg = config if isinstance(config, PolicyConfig) else parse_policy_config(config)
    opts = validate_options(cfg)
    _, build, _ = _kind_entry(cfg.kind, cfg.name)
    return build(cfg, opts)


def load_policy_config(path: str | Path) -> PolicyConfig:
    """One policy config from a YAML file; a relative `path:` is resolved against the file."""
    p = Path(path)
    if not p.is_file():
        raise PolicyConfigError(f"policy config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise PolicyConfigError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
    cfg = parse_policy_config(data, where=str(p))
    if cfg.path and not Path(cfg.path).is_absolute():
        cfg = cfg.model_copy(update={"path": str((p.parent / cfg.path).resolve())})
    return cfg
