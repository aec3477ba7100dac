"""Checksums of policy weights and configs, so an episode records exactly which policy ran."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policies.base import Policy


def checksum_path(path: Path, *, chunk: int = 1 << 20) -> str:
    """sha256 over a file, or over every file of a directory (relative names + contents)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        rel = f.name if path.is_file() else str(f.relative_to(path))
        h.update(rel.encode() + b"\0")
        with f.open("rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


class WeightsMismatchError(RuntimeError):
    """The checkpoint on disk is not the one registered; the message is one line."""


def verify_weights(name: str, path: str | Path | None, expected: str | None) -> str | None:
    """Check a policy's checkpoint against the checksum taken at `policy register`.

    Returns the checksum found (None when nothing was registered to compare with). Raises
    WeightsMismatchError naming the policy, the expected and the found checksum."""
    if not expected:
        return None
    if not path or not Path(path).exists():
        raise WeightsMismatchError(
            f"policy {name!r}: checkpoint {path} is missing, expected weights sha256 "
            f"{expected[:16]}: restore it or register a new --version"
        )
    found = checksum_path(Path(path))
    if found != expected:
        raise WeightsMismatchError(
            f"policy {name!r}: weights at {path} have sha256 {found[:16]}, expected "
            f"{expected[:16]} (registered): the checkpoint changed since `evalfleet policy "
            "register`; restore it or register it under a new --version"
        )
    return found


def build_verified_policy(config: dict[str, Any], expected_checksum: str | None) -> Policy:
    """What a policy worker loads: the weights are checked against the registered checksum
    first, so a changed checkpoint never runs under the old policy's name."""
    from policies.registry import build_policy, parse_policy_config

    cfg = parse_policy_config(config)
    verify_weights(cfg.name, cfg.path, expected_checksum)
    return build_policy(cfg)
