"""Checksums of policy weights and configs, so an episode records exactly which policy ran."""

from __future__ import annotations

import hashlib
from pathlib import Path


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
