"""CurveZMQ on the bridge: only allow-listed keys get anything through; bad key files refuse."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robots.bridge import BridgeConfig, BridgeConfigError, BridgeServer, CurveServerConfig
from robots.cli import keys_app
from robots.client import (
    BridgeAuthError,
    BridgeClient,
    BridgeCommandError,
    BridgeTimeout,
    CurveClientKeys,
    FrameSubscriber,
)
from robots.keys import KeyFileError
from robots.types import Action, SceneSpec
from tests.integration.fakes import REPO, BridgeProcess, FixedFrameDriver

SCENE = SceneSpec("pick", "coke_can", ("coke_can",))


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    runner = CliRunner()
    for name in ("bridge", "orchestrator", "intruder"):
        res = runner.invoke(keys_app, ["generate", name, "--dir", str(d)])
        assert res.exit_code == 0, res.output
    assert (d / "orchestrator.key_secret").stat().st_mode & 0o077 == 0
    res = runner.invoke(keys_app, ["generate", "bridge", "--dir", str(d)])
    assert res.exit_code != 0 and "already exists" in res.output  # never overwrites
    (d / "allow").mkdir()
    shutil.copy(d / "orchestrator.key", d / "allow" / "orchestrator.key")
    return d


def _client_keys(keys: Path, who: str = "orchestrator", server: str = "bridge") -> CurveClientKeys:
    return CurveClientKeys(keys / f"{who}.key_secret", keys / f"{server}.key")


@pytest.fixture(scope="module")
def secure_bridge(tmp_path_factory, keys):
    with BridgeProcess(tmp_path_factory.mktemp("b"), pub=True, stream_fps=30,
                       extra=["--keys-dir", str(keys)]) as b:
        yield b


def _requests_seen(b, keys) -> int:
    with BridgeClient(b.endpoint, 3000, curve=_client_keys(keys)) as c:
        return c.status()["counters"]["requests"] - 1


def test_allowed_key_works(secure_bridge, keys):
    with BridgeClient(secure_bridge.endpoint, 3000, curve=_client_keys(keys)) as c:
        assert c.hello().session_id == secure_bridge.session_id
        assert c.reset(SCENE, "ep").ready
        assert c.act(Action(dx=0.01)).action.dx == 0.01
        c.end_episode()


@pytest.mark.parametrize("who", ["plain", "intruder", "wrong-server-key"])
def test_no_key_or_wrong_key_gets_nothing_through(secure_bridge, keys, who):
    before = _requests_seen(secure_bridge, keys)
    curve = {"plain": None, "intruder": _client_keys(keys, "intruder"),
             "wrong-server-key": _client_keys(keys, "orchestrator", server="intruder")}[who]
    with BridgeClient(secure_bridge.endpoint, 700, curve=curve) as c:
        for call in (c.hello, c.estop, lambda: c.act(Action(dx=0.05), episode_id="ep")):
            with pytest.raises((BridgeTimeout, BridgeAuthError)) as ei:
                call()
            if who == "intruder":  # ZAP rejected the handshake, and the client says so
                assert isinstance(ei.value, BridgeAuthError) and "allow" in str(ei.value)
    after = _requests_seen(secure_bridge, keys)
    assert after == before + 1  # only _requests_seen's own status call got in
    with BridgeClient(secure_bridge.endpoint, 3000, curve=_client_keys(keys)) as c:
        st = c.status()
        assert not st["estopped"] and st["counters"]["acts_applied"] <= 1


def test_stream_needs_an_allowed_key_too(secure_bridge, keys):
    with FrameSubscriber(secure_bridge.pub_endpoint, ["front"], curve=_client_keys(keys)) as ok:
        assert ok.latest("front", 5000).image.shape == (64, 64, 3)
    with FrameSubscriber(secure_bridge.pub_endpoint, ["front"]) as plain, \
            FrameSubscriber(secure_bridge.pub_endpoint, ["front"], curve=_client_keys(keys, "intruder")) as bad:
        assert plain.poll(500) == {} and bad.poll(500) == {}


def test_every_command_is_checked_against_the_authenticated_key(keys):
    """Second line of defence: even if ZAP admitted a key, a key outside the bridge's allow set
    (read from the ZAP User-Id of each request) is refused with UNAUTHORIZED."""
    cfg = BridgeConfig(bind="tcp://127.0.0.1:*", curve=CurveServerConfig(keys / "bridge.key_secret", keys / "allow"))
    with BridgeServer(FixedFrameDriver(), cfg) as server, \
            BridgeClient(server.endpoint, 3000, curve=_client_keys(keys)) as c:
        c.hello()
        server._curve.allowed_keys = frozenset({b"x" * 40})  # revoke in the per-command check only
        with pytest.raises(BridgeCommandError) as ei:
            c.status()
        assert ei.value.code == "UNAUTHORIZED"
        assert server.counters["unauthorized"] == 1


def _serve(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robots.cli", "bridge", "serve", "--driver",
                           "tests.integration.fakes:FixedFrameDriver", "--bind", "tcp://127.0.0.1:*", *args],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_missing_or_bad_key_files_refuse_to_start(keys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt.key_secret"
    corrupt.write_text("not a certificate\n")
    unreadable = tmp_path / "unreadable.key_secret"
    shutil.copy(keys / "bridge.key_secret", unreadable)
    unreadable.chmod(0)
    cases = {
        "missing secret": (["--server-secret", str(tmp_path / "nope.key_secret"), "--allow-dir", str(keys / "allow")],
                           "does not exist"),
        "public file as secret": (["--server-secret", str(keys / "bridge.key"), "--allow-dir", str(keys / "allow")],
                                  "no secret key"),
        "corrupt secret": (["--server-secret", str(corrupt), "--allow-dir", str(keys / "allow")],
                           "not a CURVE certificate"),
        "missing allow dir": (["--server-secret", str(keys / "bridge.key_secret"), "--allow-dir",
                               str(tmp_path / "nodir")], "does not exist"),
        "empty allow dir": (["--server-secret", str(keys / "bridge.key_secret"), "--allow-dir", str(empty)],
                            "no *.key"),
        "half configured": (["--server-secret", str(keys / "bridge.key_secret")], "both"),
        "missing keys dir": (["--keys-dir", str(tmp_path / "nokeys")], "does not exist"),
    }
    import os
    if os.geteuid() != 0:  # root reads any file
        cases["unreadable secret"] = (["--server-secret", str(unreadable), "--allow-dir", str(keys / "allow")],
                                      "unreadable")
    for name, (args, why) in cases.items():
        res = _serve(args)
        assert res.returncode == 2, (name, res.returncode, res.stdout, res.stderr)
        out = res.stdout + res.stderr
        assert "serving" not in out and why in out, (name, out)


def test_in_process_refusal_and_client_key_errors(keys, tmp_path):
    cfg = BridgeConfig(bind="tcp://127.0.0.1:*", curve=CurveServerConfig(tmp_path / "x.key_secret", keys / "allow"))
    with pytest.raises(BridgeConfigError, match="refuses to start"):
        BridgeServer(FixedFrameDriver(), cfg).start()
    with pytest.raises(KeyFileError, match="does not exist"):
        BridgeClient("tcp://127.0.0.1:1", curve=CurveClientKeys(tmp_path / "c.key_secret", keys / "bridge.key"))
