"""Registering a policy: validating what the user typed, and deciding whether a registration
may land (pure: no SQL, no CLI; the store and `evalfleet policy register` are thin shells).

A registered policy (name + version) is immutable: episodes count under the policy that ran
them, so a policy never changes under a campaign.

- same name + version, identical spec  -> UNCHANGED (a no-op success)
- same name + version, different spec  -> refused: register a new --version
- with force, and no episode ever ran it and no trial of it is leased -> REPLACE (audited)
- with force, but an episode ran it     -> refused, force or not
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from policies.registry import KINDS, PolicyConfig, PolicyConfigError, _kind_entry, is_class_kind

NAME_MAX, VERSION_MAX = 100, 50  # the store's column widths


class PolicyChangeRefused(ValueError):
    """A registration that would change an existing policy; the message is one line."""


class Decision(enum.Enum):
    CREATE = "create"  # a new name + version: a new row
    UNCHANGED = "unchanged"  # identical to the registered spec: nothing to write
    REPLACE = "replace"  # --force on a policy no episode has used: rewrite the row, audited


@dataclass(frozen=True)
class CanonicalSpec:
    """What makes a registration the same policy: compared field by field."""

    kind: str
    checkpoint_uri: str | None
    config_json: str  # canonical JSON of {"kind", "path", "options"}
    weights_checksum: str | None

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json)


@dataclass(frozen=True)
class PolicyUsage:
    """What already depends on a registered policy."""

    episodes: int = 0  # episodes of any status (running, recorded, aborted)
    leased_trials: int = 0  # trials an orchestrator is running right now
    campaigns: tuple[str, ...] = ()  # campaigns that list the policy

    @property
    def used(self) -> bool:
        return self.episodes > 0 or self.leased_trials > 0


def needs_path(kind: str) -> bool:
    return _kind_entry(kind)[2]


def normalize_config(kind: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """{"kind", "path", "options"}, whatever subset the caller gave (older rows stored {})."""
    cfg = dict(config or {})
    return {
        "kind": cfg.get("kind") or kind,
        "path": cfg.get("path"),
        "options": dict(cfg.get("options") or {}),
    }


def canonical_spec(
    kind: str,
    checkpoint_uri: str | None,
    config: Mapping[str, Any] | None,
    weights_checksum: str | None,
) -> CanonicalSpec:
    cfg = normalize_config(kind, config)
    return CanonicalSpec(
        kind=kind,
        checkpoint_uri=checkpoint_uri,
        config_json=json.dumps(cfg, sort_keys=True, default=str),
        weights_checksum=weights_checksum,
    )


def spec_changes(old: CanonicalSpec, new: CanonicalSpec) -> tuple[str, ...]:
    """Human-readable differences, e.g. ("kind oracle -> random", "option seed 0 -> 3")."""
    out: list[str] = []
    if old.kind != new.kind:
        out.append(f"kind {old.kind} -> {new.kind}")
    oc, nc = old.config, new.config
    if oc["path"] != nc["path"] or old.checkpoint_uri != new.checkpoint_uri:
        out.append(f"path {oc['path'] or old.checkpoint_uri} -> {nc['path'] or new.checkpoint_uri}")
    if (old.weights_checksum or "") != (new.weights_checksum or ""):
        out.append(
            f"weights {(old.weights_checksum or 'none')[:12]} -> "
            f"{(new.weights_checksum or 'none')[:12]}"
        )
    for key in sorted(set(oc["options"]) | set(nc["options"])):
        a, b = oc["options"].get(key, "(unset)"), nc["options"].get(key, "(unset)")
        if a != b:
            out.append(f"option {key} {a} -> {b}")
    if oc["kind"] != nc["kind"] and old.kind == new.kind:
        out.append(f"config kind {oc['kind']} -> {nc['kind']}")
    return tuple(out)


def decide(
    name: str,
    version: str,
    old: CanonicalSpec | None,
    new: CanonicalSpec,
    usage: PolicyUsage,
    *,
    force: bool = False,
) -> Decision:
    """May this registration land? Raises PolicyChangeRefused (one line) when it may not."""
    if old is None:
        return Decision.CREATE
    changes = spec_changes(old, new)
    if not changes:
        return Decision.UNCHANGED
    what = f"policy {name!r} version {version!r}"
    diff = ", ".join(changes)
    if usage.used:
        ran = (
            f"{usage.episodes} episode(s) ran it"
            if usage.episodes
            else f"{usage.leased_trials} trial(s) of it are running"
        )
        raise PolicyChangeRefused(
            f"{what} is immutable: {ran} ({diff}); register the change as a new --version"
            + (" (--force only replaces a policy no episode has used)" if force else "")
        )
    if not force:
        raise PolicyChangeRefused(
            f"{what} is already registered with another spec ({diff}): register a new "
            "--version, or add --force to replace it (allowed only while no episode has used it)"
        )
    return Decision.REPLACE


# -- validating what the user typed -----------------------------------------------------------


@dataclass(frozen=True)
class ValidatedPolicy:
    config: PolicyConfig  # name, kind, absolute path, typed options (only those given)
    version: str


def parse_options(items: Sequence[str]) -> dict[str, str]:
    """`-o key=value` items -> {key: value}; refuses a malformed or repeated key."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PolicyConfigError(f"-o {item!r}: expected key=value")
        if key in out:
            raise PolicyConfigError(f"option {key!r} given twice")
        out[key] = value
    return out


def _check_name(what: str, value: str, limit: int) -> None:
    if not value or value != value.strip() or any(c.isspace() for c in value) or "@" in value:
        raise PolicyConfigError(
            f"{what} {value!r}: use a non-empty name without spaces or '@' "
            "('name@version' picks a version in campaigns)"
        )
    if len(value) > limit:
        raise PolicyConfigError(f"{what} {value[:20]!r}...: at most {limit} characters")


def validate_registration(
    name: str,
    kind: str,
    *,
    version: str = "1",
    path: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> ValidatedPolicy:
    """Check a registration as typed; one-line PolicyConfigError naming the option at fault.

    Options are validated by the kind's pydantic model and kept typed (`-o seed=3` -> 3), so
    the same registration typed twice compares equal."""
    _check_name("name", name, NAME_MAX)
    _check_name("--version", version, VERSION_MAX)
    if kind not in KINDS and not is_class_kind(kind):
        raise PolicyConfigError(f"unknown kind {kind!r} (choose from {', '.join(KINDS)}, or "
                                "a policy class of your own as module.path:ClassName)")
    opts = dict(options or {})
    if needs_path(kind):
        if not path:
            raise PolicyConfigError(
                f"--kind {kind} needs --path (the local checkpoint directory)"
            )
        p = Path(path).expanduser()
        if not p.is_dir():
            raise PolicyConfigError(f"--path {path}: no such directory (kind {kind} loads "
                                    "a checkpoint directory)")
        path = str(p.resolve())
    elif path:
        raise PolicyConfigError(
            f"--kind {kind} takes no --path (only {', '.join(k for k in KINDS if needs_path(k))} "
            "loads a checkpoint)"
        )
    model = _kind_entry(kind, name)[0]()
    try:
        parsed = model(**opts)
    except ValidationError as e:
        raise PolicyConfigError(_options_error(kind, model.model_fields, e)) from None
    typed = parsed.model_dump(mode="json", include=set(opts))
    try:
        config = PolicyConfig(name=name, kind=kind, path=path, options=typed)
    except ValidationError as e:  # pragma: no cover - every field was checked above
        raise PolicyConfigError(f"policy {name!r}: {e.errors()[0]['msg']}") from None
    return ValidatedPolicy(config=config, version=version)


def _options_error(kind: str, fields: Mapping[str, Any], e: ValidationError) -> str:
    allowed = ", ".join(fields)
    parts = []
    for err in e.errors():
        key = ".".join(str(x) for x in err["loc"]) or "options"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown option {key!r} for kind {kind} (allowed: {allowed})")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"option {key!r} for kind {kind}: {msg} (got {err.get('input')!r})")
    return "; ".join(parts)
