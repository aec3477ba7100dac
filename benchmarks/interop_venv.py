"""Separate virtual environments with PyPI's openpi packages, for interop tests and benchmarks.

evalfleet speaks openpi's websocket protocol itself and never depends on `openpi-client`
(it pins numpy < 2) or `openpi-server`. To show that it interoperates with the real
packages, tests/integration/test_openpi_interop.py and benchmarks/remote_policy.py run them
in environments of their own, outside the repository (nothing here is committed):

- `openpi`: `python3.11 -m venv`, then `pip install openpi-client openpi-server` with their
  own dependencies (numpy 1.x): the packages exactly as a lab installs them (plus
  typing_extensions, which openpi-client 0.1.2 imports without declaring it);
- `bench`: a venv that sees evalfleet's environment (a .pth naming evalfleet's site-packages
  and the repository) with `openpi-client openpi-server` installed `--no-deps` on top, so
  openpi's own WebsocketPolicyServer can host an evalfleet model (the tiny VLA) for the
  side-by-side benchmark.

Each is built once under the cache directory ($EVALFLEET_INTEROP_CACHE, default
~/.cache/evalfleet/interop) and reused; a failed pip install raises `InteropUnavailable`
whose text is one line and whose `detail` is pip's own error output.

    .venv/bin/python benchmarks/interop_venv.py [--which openpi|bench|both]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("openpi-client", "openpi-server")
# openpi-client 0.1.2 imports typing_extensions (websocket_client_policy.py) without
# declaring it: installed explicitly, or `import openpi_client.websocket_client_policy` fails
UNDECLARED = ("typing_extensions",)
CACHE_ENV = "EVALFLEET_INTEROP_CACHE"
MARKER = "evalfleet-interop.json"


class InteropUnavailable(RuntimeError):
    """The environment could not be created; `detail` holds the command's own error text."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "evalfleet" / "interop")


def _python311() -> str:
    if sys.version_info[:2] == (3, 11):
        return sys.executable  # `-m venv` uses its base interpreter
    found = shutil.which("python3.11")
    if found is None:
        raise InteropUnavailable("interop venv: no python3.11 on PATH")
    return found


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One builder at a time (a test and a benchmark may ask together)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: list[str], what: str, timeout_s: float) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise InteropUnavailable(f"{what}: no result within {timeout_s:g} s",
                                 str(e.stderr or "")[-4000:]) from e
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip()
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("WARNING")]
        last = next((ln for ln in reversed(lines) if ln.startswith("ERROR")),
                    lines[-1] if lines else f"exit status {p.returncode}")
        raise InteropUnavailable(f"{what} failed: {last.strip()[:300]}", err[-4000:])
    return p.stdout


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _ready(venv: Path) -> bool:
    return (venv / MARKER).is_file() and _venv_python(venv).exists()


def _create(venv: Path, timeout_s: float) -> Path:
    if venv.exists():
        shutil.rmtree(venv)  # a half-built one from an earlier failure
    _run([_python311(), "-m", "venv", str(venv)], f"python3.11 -m venv {venv}", timeout_s)
    return _venv_python(venv)


def _pip_install(py: Path, args: list[str], venv: Path, timeout_s: float) -> None:
    _run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *args],
         f"pip install {' '.join(args)} (in {venv})", timeout_s)


def _finish(venv: Path, py: Path, timeout_s: float) -> None:
    out = _run([str(py), "-m", "pip", "list", "--format=json"], "pip list", timeout_s)
    keep = {*PACKAGES, *UNDECLARED, "numpy", "websockets", "msgpack"}
    versions = {p["name"]: p["version"] for p in json.loads(out) if p["name"] in keep}
    (venv / MARKER).write_text(json.dumps({"packages": versions}, indent=1))


def openpi_venv(cache: Path | None = None, *, timeout_s: float = 600.0) -> Path:
    """The python of a venv with PyPI's openpi-client and openpi-server and their own
    dependencies (built on first use)."""
    venv = (cache or cache_dir()) / "openpi-venv"
    with _locked(venv.parent):
        if not _ready(venv):
            py = _create(venv, timeout_s)
            _pip_install(py, [*PACKAGES, *UNDECLARED], venv, timeout_s)
            _finish(venv, py, timeout_s)
    return _venv_python(venv)


def bench_venv(cache: Path | None = None, *, timeout_s: float = 600.0) -> Path:
    """The python of a venv that imports evalfleet (its environment and this repository)
    and PyPI's openpi-client and openpi-server (installed without their dependencies:
    evalfleet's numpy 2 serves them)."""
    venv = (cache or cache_dir()) / "bench-venv"
    with _locked(venv.parent):
        if not _ready(venv):
            py = _create(venv, timeout_s)
            where_code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
            purelib = _run([str(py), "-c", where_code], "locate the venv's site-packages",
                           timeout_s).strip()
            ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
            (Path(purelib) / "evalfleet-env.pth").write_text("\n".join([*ours, str(REPO)]) + "\n")
            _pip_install(py, ["--no-deps", *PACKAGES], venv, timeout_s)
            _finish(venv, py, timeout_s)
    return _venv_python(venv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--which", choices=("openpi", "bench", "both"), default="both")
    ap.add_argument("--cache", type=Path, default=None,
                    help=f"where the venvs live (default ${CACHE_ENV} or ~/.cache/evalfleet/interop)")
    args = ap.parse_args()
    try:
        if args.which in ("openpi", "both"):
            print(f"openpi venv: {openpi_venv(args.cache)}")
        if args.which in ("bench", "both"):
            print(f"bench venv: {bench_venv(args.cache)}")
    except InteropUnavailable as e:
        print(f"interop venv: {e}", file=sys.stderr)
        if e.detail:
            print(e.detail, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
