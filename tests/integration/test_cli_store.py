"""The store-facing CLI: db upgrade, protocol validate, policy register, campaign create,
report in every format; bad input gets one line and never reaches the database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.store.db import Store
from orchestrator.store.models import Campaign, Protocol, Trial

BAD = sorted((Path(__file__).parents[1] / "data" / "bad_protocols").glob("*.yaml"))
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


@pytest.fixture
def cli_store(_isolated_home: Path) -> Path:
    code, out = cli("db", "upgrade")
    assert code == 0, out
    assert cli("policy", "register", "alpha", "--kind", "random")[0] == 0
    assert cli("policy", "register", "beta", "--kind", "random")[0] == 0
    return _isolated_home


def _counts() -> tuple[int, int, int]:
    with Store.open() as store, store.read() as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(m)) for m in (Protocol, Campaign, Trial)
        )


def test_commands_refuse_a_store_without_schema() -> None:
    code, out = cli("campaign", "list")
    assert code == 1
    assert "evalfleet db upgrade" in out


@pytest.mark.parametrize("bad", BAD, ids=[p.stem for p in BAD])
def test_bad_protocol_one_line_and_nothing_in_db(cli_store: Path, bad: Path) -> None:
    code, out = cli("protocol", "validate", str(bad))
    assert code == 1
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, out
    assert bad.name in out
    code, out = cli("campaign", "create", "--protocol", str(bad), "--policy", "alpha",
                    "--policy", "beta", "--trials", "2")
    assert code == 1
    assert bad.name in out and "Traceback" not in out
    assert _counts() == (0, 0, 0)


def test_unknown_policy_leaves_nothing_behind(cli_store: Path) -> None:
    code, out = cli("campaign", "create", "--protocol", "smoke", "--policy", "alpha",
                    "--policy", "nope", "--trials", "2")
    assert code == 1 and "nope" in out and "policy register" in out
    assert _counts() == (0, 0, 0)


def test_campaign_create_list_show_and_report_formats(cli_store: Path) -> None:
    code, out = cli("campaign", "create", "--protocol", "smoke", "--policy", "alpha",
                    "--policy", "beta", "--trials", "3", "--seed", "4", "--name", "c1")
    assert code == 0, out
    assert _counts() == (1, 1, 5 * 2 * 3)
    assert "c1" in cli("campaign", "list")[1]
    assert "unseen_objects" in cli("campaign", "show", "c1")[1]
    for fmt in ("table", "markdown", "csv"):
        code, out = cli("report", "c1", "--format", fmt)
        assert code == 0 and "seen" in out, out
    code, out = cli("report", "c1", "--format", "json")
    data = json.loads(out)
    assert [p["name"] for p in data["policies"]] == ["alpha", "beta"]
    code, out = cli("report", "missing")
    assert code == 1 and "campaign list" in out


def test_campaign_steering_is_audited(cli_store: Path) -> None:
    assert cli("campaign", "create", "--protocol", "smoke", "--policy", "alpha",
               "--trials", "1", "--name", "c2")[0] == 0
    assert cli("campaign", "pause", "c2")[0] == 0
    assert cli("campaign", "priority", "c2", "7")[0] == 0
    assert cli("campaign", "resume", "c2")[0] == 0
    assert cli("campaign", "cancel", "c2")[0] == 0
    code, out = cli("campaign", "resume", "c2")
    assert code == 1 and "cancelled" in out
    with Store.open() as store, store.read() as s:
        c = s.scalar(select(Campaign).where(Campaign.name == "c2"))
        assert c.status == "cancelled" and c.priority == 7
        assert s.scalar(select(func.count()).select_from(Trial).where(
            Trial.campaign_id == c.id, Trial.status != "cancelled")) == 0
