"""On a real sim fleet: `campaign run` on a campaign with a given-up trial exits 3 with the
count and the reason, `campaign requeue` + `campaign run` completes it; `fleet rearm` releases
a latched e-stop through the bridge, audited, and fails in one line when the bridge is away."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from orchestrator.simfleet import SimFleet
from orchestrator.store import migrate
from orchestrator.store.db import Store, make_engine
from orchestrator.store.models import Campaign, Event, Trial
from robots.client import BridgeClient
from tests.integration.fleet_support import IMAGE, REPO, check_invariants, new_campaign
from tests.integration.test_campaign_lifecycle import REASON, _give_up

pytestmark = pytest.mark.timeout(240)
EVALFLEET = Path(sys.executable).parent / "evalfleet"  # the installed console script


def _evalfleet(*args: str, env: dict[str, str], timeout_s: float = 150) -> tuple[int, str]:
    """The real CLI in its own session; its process group is killed whatever happens."""
    p = subprocess.Popen([str(EVALFLEET), *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout_s)
        return p.returncode, out
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # Ray processes it may have left behind
        except ProcessLookupError:
            pass
        if p.poll() is None:
            p.wait(timeout=10)


@pytest.mark.slow
def test_run_with_a_given_up_trial_exits_3_and_requeue_completes_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    try:
        cid = new_campaign(store, "gaveup", policies=("rand-a",))  # 4 tasks x 1 policy
        with store.read() as s:
            first = s.scalar(select(Trial.id).where(Trial.campaign_id == cid)
                             .order_by(Trial.plan_order))
        _give_up(store, first)  # five aborts the trial caused, through the real queue
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        env.update(EVALFLEET_HOME=str(home), EVALFLEET_DATABASE_URL=url, COLUMNS="200")
        with SimFleet(1, image_size=IMAGE) as fleet:
            fleet_yaml = tmp_path / "fleet.yaml"
            fleet_yaml.write_text(yaml.safe_dump(fleet.config().model_dump(mode="json")))
            run = ("campaign", "run", "gaveup", "--fleet", str(fleet_yaml))
            code, out = _evalfleet(*run, env=env)
            assert code == 3, out[-3000:]
            assert "campaign gaveup incomplete: 1 of 4 trials given up" in out, out[-3000:]
            assert "NON_FINITE" in out and "evalfleet campaign requeue gaveup" in out
            assert "Traceback" not in out
            code, out = _evalfleet("campaign", "list", env=env)
            assert code == 0 and "incomplete 3/4 (1 given up)" in out, out
            code, out = _evalfleet(*run, env=env)  # nothing to run: it says what to do
            assert code == 1 and "campaign requeue gaveup" in out, out
            code, out = _evalfleet("campaign", "requeue", "gaveup", "--by", "carol", env=env)
            assert code == 0 and "1 trial re-queued" in out, out
            code, out = _evalfleet(*run, env=env)
            assert code == 0, out[-3000:]
        with store.read() as s:
            assert s.get(Campaign, cid).status == "done"
            ev = s.scalar(select(Event).where(Event.kind == "trials_requeued"))
            assert ev.actor == "carol" and ev.payload["trials"] == [first]
        audit = check_invariants(store, home / "media", [cid])
        assert audit.trials == 4 and audit.counted == 4 and audit.recorded == 4
        # the five aborted attempts of the given-up budget are kept, with their reason
        assert [(t, r) for _, t, r in audit.aborted] == [(first, REASON)] * 5
    finally:
        store.close()


def _cli(*args: str, input: str | None = None) -> tuple[int, str]:
    from orchestrator.cli import app

    res = CliRunner().invoke(app, list(args), input=input, env={"COLUMNS": "200"})
    return res.exit_code, res.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fleet_rearm_releases_the_estop_through_the_bridge_and_is_audited(
        tmp_path: Path, _isolated_home: Path) -> None:
    assert _cli("db", "upgrade")[0] == 0
    with SimFleet(1, image_size=IMAGE) as fleet:
        fleet_yaml = tmp_path / "fleet.yaml"
        fleet_yaml.write_text(yaml.safe_dump(fleet.config().model_dump(mode="json")))
        endpoint = fleet.config().arms[0].endpoint
        with BridgeClient(endpoint, timeout_ms=5000, name="test") as c:
            assert c.estop("operator pressed it").estopped
        code, out = _cli("fleet", "rearm", "sim-1", "--fleet", str(fleet_yaml), input="n\n")
        assert code == 1 and "operator pressed it" in out and "not re-armed" in out, out
        with BridgeClient(endpoint, timeout_ms=5000, name="test") as c:
            assert c.status()["estopped"]  # refused at the prompt: still latched
        code, out = _cli("fleet", "rearm", "sim-1", "--fleet", str(fleet_yaml), "--yes",
                         "--by", "alice")
        assert code == 0 and "sim-1: re-armed by alice" in out, out
        with BridgeClient(endpoint, timeout_ms=5000, name="test") as c:
            st = c.status()
        assert not st["estopped"] and st["counters"]["rearms"] == 1
        code, out = _cli("fleet", "rearm", "sim-1", "--fleet", str(fleet_yaml), "--yes")
        assert code == 0 and "not e-stopped" in out, out
        code, out = _cli("fleet", "rearm", "sim-9", "--fleet", str(fleet_yaml), "--yes")
        assert code == 1 and "no arm 'sim-9'" in out
    with Store.open() as store, store.read() as s:
        events = list(s.scalars(select(Event).where(Event.kind == "estop_rearmed")))
    assert len(events) == 1
    assert events[0].actor == "alice" and events[0].payload["robot"] == "sim-1"
    assert events[0].payload["estop_reason"] == "operator pressed it"


def test_fleet_rearm_of_an_unreachable_bridge_fails_in_one_line(
        tmp_path: Path, _isolated_home: Path) -> None:
    assert _cli("db", "upgrade")[0] == 0
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    fleet_yaml = tmp_path / "fleet.yaml"
    fleet_yaml.write_text(yaml.safe_dump(
        {"arms": [{"name": "arm-x", "endpoint": endpoint, "timeout_ms": 200}]}))
    code, out = _cli("fleet", "rearm", "arm-x", "--fleet", str(fleet_yaml), "--yes")
    assert code == 1, out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "re-arm failed" in out and endpoint in out, out
    with Store.open() as store, store.read() as s:
        assert s.scalar(select(Event.id).where(Event.kind == "estop_rearmed")) is None
