"""`evalfleet dashboard`: serve the dashboard with Streamlit on the orchestrator's store.

The lead mounts it in orchestrator/cli.py:  app.command("dashboard")(dashboard_command)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

APP = Path(__file__).resolve().with_name("app.py")


def streamlit_argv(port: int, address: str) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless=true", f"--server.port={port}", f"--server.address={address}",
        "--browser.gatherUsageStats=false", "--server.fileWatcherType=none",
        "--server.runOnSave=false", "--client.toolbarMode=minimal",
    ]


def dashboard_command(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
    address: Annotated[str, typer.Option(
        help="Interface to bind; 0.0.0.0 serves the lab network (put it behind auth).")
    ] = "127.0.0.1",
) -> None:
    """Serve the dashboard (label, results, campaigns, fleet, episodes) on the same store."""
    from orchestrator.config import get_settings

    settings = get_settings()
    typer.echo(f"evalfleet dashboard on http://{address}:{port} "
               f"(store {settings.resolved_database_url.split('@')[-1]})")
    try:
        rc = subprocess.call(streamlit_argv(port, address), env=os.environ.copy())
    except KeyboardInterrupt:
        rc = 0
    if rc:
        typer.echo(f"streamlit exited with status {rc}: is port {port} already in use?", err=True)
        raise typer.Exit(rc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, env: dict[str, str], log: Path, address: str = "127.0.0.1",
                 timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
    """Start `streamlit run` in the background and wait until it answers its health check."""
    fh = log.open("wb")
    proc = subprocess.Popen(streamlit_argv(port, address), env=env, stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    url = f"http://{address}:{port}/_stcore/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.25)
    stop_server(proc)
    raise RuntimeError(f"streamlit did not answer {url} within {timeout_s:.0f} s; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)

