"""evalfleet's tools that talk to an arm without Ray, against the lab's own robot side:
`fleet stop` / `fleet rearm` (e-stop straight through the bridge) on a bridge speaking only
v1 or only v2, and `campaign create --fleet` matching policies against the lab arm's
declared spaces (a mismatched pair refused in one line naming both sides)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.config import get_settings
from orchestrator.store.campaigns import PolicySpec, register_policy
from tests.labside.conftest import LAB_PROTOCOL, lab_fleet
from tests.labside.lab_bridge import LabBridge

pytestmark = pytest.mark.timeout(60)

TWO_CAMERAS = (("front", "external"), ("wrist", "wrist"))


def _fleet_yaml(bridge: LabBridge, tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(lab_fleet(bridge).model_dump(mode="json")))
    return path


@pytest.mark.parametrize("versions", [(1,), (2,)],
                         ids=["v1-only", "v2-only"])
def test_fleet_stop_and_rearm_work_on_a_lab_bridge(
        sqlite_store, lab: Callable[..., LabBridge], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, versions: tuple[int, ...]) -> None:
    """§3: "an estop tool that speaks v1 works on every bridge" - and a bridge that speaks
    only v2 is allowed (§3: "a bridge that speaks versions S"): the e-stop must reach it."""
    from orchestrator.cli import app

    monkeypatch.setenv("EVALFLEET_DATABASE_URL", str(sqlite_store.engine.url))  # rearm audits
    get_settings.cache_clear()
    bridge = lab(versions=versions)
    fleet = _fleet_yaml(bridge, tmp_path)
    res = CliRunner().invoke(app, ["fleet", "stop", "lab-1", "--fleet", str(fleet),
                                   "--reason", "lab test"])
    assert res.exit_code == 0, res.output
    assert bridge.estopped and "lab test" in bridge.estop_reason, bridge.log
    res = CliRunner().invoke(app, ["fleet", "rearm", "lab-1", "--fleet", str(fleet), "--yes"])
    assert res.exit_code == 0, res.output
    assert not bridge.estopped


def _register(store, *policies: tuple[str, dict]) -> None:  # type: ignore[no-untyped-def]
    with store.write() as s:
        for name, options in policies:
            register_policy(s, PolicySpec(name=name, kind="random",
                                          config={"kind": "random", "options": options}))


def _create(store, fleet: Path, policy: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from orchestrator.cli import app

    monkeypatch.setenv("EVALFLEET_DATABASE_URL", str(store.engine.url))
    get_settings.cache_clear()
    return CliRunner().invoke(app, ["campaign", "create", "--protocol", str(LAB_PROTOCOL),
                                    "--policy", policy, "--trials", "1", "--name",
                                    f"lab-{policy}", "--fleet", str(fleet)])


def test_campaign_create_accepts_a_policy_the_v2_lab_arm_takes(
        sqlite_store, lab: Callable[..., LabBridge], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bridge = lab(versions=(2,), cameras=TWO_CAMERAS)
    _register(sqlite_store, ("rand-ee", {}))
    res = _create(sqlite_store, _fleet_yaml(bridge, tmp_path), "rand-ee", monkeypatch)
    assert res.exit_code == 0, res.output
    assert [h["type"] for h in bridge.log if h["type"] != "hello"] == []  # asked, not driven


@pytest.mark.parametrize("policy,options,emits", [
    ("rand-ee", {}, "ee_delta[7]"),
    ("rand-joint", {"space": "joint_position"}, "joint_position[7]"),
])
def test_campaign_create_refuses_a_policy_the_lab_gantry_cannot_take(
        sqlite_store, lab: Callable[..., LabBridge], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, policy: str, options: dict, emits: str) -> None:
    """The lab's gantry declares joint_position[4] (x/y/z axes + gripper): neither an RT-2
    policy nor a 7-number joint policy fits; refused before anything is queued, in one line
    naming both sides."""
    bridge = lab(versions=(2,), space="joint_position")
    _register(sqlite_store, (policy, options))
    res = _create(sqlite_store, _fleet_yaml(bridge, tmp_path), policy, monkeypatch)
    assert res.exit_code != 0, res.output
    line = f"policy {policy} emits {emits}; arm lab-1 accepts joint_position[4]"
    assert line in res.output.splitlines()[1:] or line in [ln.strip() for ln in
                                                          res.output.splitlines()], res.output
    assert [h["type"] for h in bridge.log if h["type"] != "hello"] == []


def test_campaign_create_refuses_a_camera_policy_the_lab_arm_cannot_feed(
        sqlite_store, lab: Callable[..., LabBridge], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bridge = lab(versions=(2,))  # one external camera, named "front"
    with sqlite_store.write() as s:
        register_policy(s, PolicySpec(name="vis", kind="vision_heuristic",
                                      config={"kind": "vision_heuristic", "options": {}}))
    res = _create(sqlite_store, _fleet_yaml(bridge, tmp_path), "vis", monkeypatch)
    assert res.exit_code != 0, res.output
    assert "vis" in res.output and "lab-1" in res.output and "main" in res.output, res.output


def test_campaign_create_says_what_is_wrong_with_the_lab_arms_hello(
        sqlite_store, lab: Callable[..., LabBridge], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bridge = lab(versions=(2,), caps_typo=True)
    _register(sqlite_store, ("rand-ee", {}))
    res = _create(sqlite_store, _fleet_yaml(bridge, tmp_path), "rand-ee", monkeypatch)
    assert "lab-1" in res.output and "7 names but 1 units" in res.output, res.output
