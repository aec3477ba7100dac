"""Naming a policy in a campaign: a small config (name, kind, path, options) -> a Policy.

    name: tiny-vla
    kind: vla            # oracle | vision_heuristic | random | vla
    path: ./checkpoints/tiny-vla
    options: {constrained: true, device: cpu}

Every kind validates its options with a pydantic model that forbids unknown keys, so a typo
fails at config time with one line saying which policy, which option and what is allowed.
"""

from __future__ import annotations

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

    def chunked_opts():  # test/benchmark policy: timed ee_delta chunks, no model
        from policies.testing import ChunkedOptions

        return ChunkedOptions

    def chunked(cfg, opts):
        from policies.testing import ChunkedPolicy

        return ChunkedPolicy(opts, name=cfg.name)

    return {
        "oracle": (oracle_opts, oracle, False),
        "vision_heuristic": (vision_opts, vision, False),
        "random": (random_opts, random, False),
        "vla": (vla_opts, vla, True),
        "chunked": (chunked_opts, chunked, False),
    }


KINDS: tuple[str, ...] = ("oracle", "vision_heuristic", "random", "vla")
# accepted in configs (tests, benchmarks) but not offered by `policy register`
TEST_KINDS: tuple[str, ...] = ("chunked",)


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    kind: str
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in KINDS and v not in TEST_KINDS:
            raise ValueError(f"unknown policy kind {v!r}; expected one of {list(KINDS)}")
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
    opts_model, _, needs_path = _kinds()[config.kind]
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
SPACE_KINDS: tuple[str, ...] = ("oracle", "random", "chunked")  # their `space` option


def policy_io(config: PolicyConfig | dict) -> PolicyIO:
    """What a registered policy emits and reads (robots.spaces.PolicyIO), from its config
    alone: no model is loaded, so `campaign create` and `campaign run` can match it against
    the arms before any trial is leased. RT-2 kinds (vla, vision_heuristic) emit RT-2's
    ee_delta[7]; oracle and random emit what their `space` option says (default ee_delta;
    joint_position: 6 joint angles + gripper, 0 closed .. 1 open). `camera_names`: the
    camera a vision_heuristic reads (option `camera`, default `main`) or a vla whose `camera`
    option is set (unset: the first frame, no name); the arm must declare it."""
    cfg = config if isinstance(config, PolicyConfig) else parse_policy_config(config)
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
    _, build, _ = _kinds()[cfg.kind]
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
