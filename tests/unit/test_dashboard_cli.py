"""`evalfleet dashboard` (dashboard.cli.dashboard_command) without starting a server."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from dashboard import cli


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("dashboard")(cli.dashboard_command)
    app.command("other")(lambda: None)
    return app


def test_runs_streamlit_headless_with_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def fake_call(argv, env):  # type: ignore[no-untyped-def]
        seen.update(argv=argv, env=env)
        return 0

    monkeypatch.setattr(cli.subprocess, "call", fake_call)
    monkeypatch.setenv("EVALFLEET_DATABASE_URL", "sqlite:////tmp/x.db")
    out = CliRunner().invoke(_app(), ["dashboard", "--port", "8600", "--address", "0.0.0.0"])
    assert out.exit_code == 0, out.output
    argv = seen["argv"]
    assert argv[1:4] == ["-m", "streamlit", "run"] and argv[4].endswith("dashboard/app.py")
    assert {"--server.headless=true", "--server.port=8600", "--server.address=0.0.0.0"} <= set(argv)
    assert seen["env"]["EVALFLEET_DATABASE_URL"] == "sqlite:////tmp/x.db"


def test_a_failing_server_exits_nonzero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.subprocess, "call", lambda argv, env: 3)
    out = CliRunner().invoke(_app(), ["dashboard"])
    assert out.exit_code == 3 and "port 8501 already in use" in out.output
