"""SO101Driver against a fake `scservo_sdk` (tests/integration/sdk_fakes/scservo_sdk.py) and
fake cameras: `bridge check` passes; ticks <-> radians, the gripper convention, the
calibrated limits and the per-step cap, hold as goal = present position (torque kept), the
safe torque-on order, retries, and reopening an unplugged port."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from robots.check import results as R
from robots.check.loading import load_driver
from robots.check.runner import CheckOptions, run_checks
from robots.cli import bridge_app
from robots.drivers.arm_common import DriverError
from robots.drivers.so101 import (
    JointCalibration,
    SO101Driver,
    decode_position,
    rad_to_ticks,
    ticks_to_rad,
)
from robots.spaces import ArmCommand, GripperConvention, SpaceKind
from robots.types import SceneSpec
from tests.integration.sdk_fakes import scservo_sdk as fake_scs
from tests.integration.sdk_fakes.cameras import Device, new_cv2

CAMERAS = [{"kind": "opencv", "name": "front", "device": 0, "width": 64, "height": 48},
           {"kind": "opencv", "name": "wrist", "device": 1, "width": 64, "height": 48, "role": "wrist"}]
QUARTER = math.pi / 2  # 1024 ticks


@pytest.fixture(autouse=True)
def cameras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", new_cv2({0: Device(), 1: Device()}))


def make(**over: Any) -> tuple[SO101Driver, SimpleNamespace]:
    sdk = fake_scs.new()
    cfg: dict[str, Any] = {"port": "/dev/ttyACM0", "cameras": CAMERAS, **over}
    return SO101Driver(sdk=sdk, **cfg), sdk  # type: ignore[arg-type]


def here(drv: SO101Driver) -> tuple[float, ...]:
    return tuple(drv.observe().proprio)


@pytest.mark.parametrize("hold_mode", ["hold_position", "torque_off"])
def test_bridge_check_passes_against_the_fake(hold_mode: str) -> None:
    drv, _sdk = make(hold_mode=hold_mode)
    results = run_checks(drv)
    assert [(r.name, r.detail) for r in results if not r.passed or r.skipped] == []
    assert {r.name: r for r in results}[R.RESET].detail.startswith("case: asks the operator")
    assert drv.port is None and not drv.rig.is_open


def test_dry_run_through_the_cli_loading_path(monkeypatch: pytest.MonkeyPatch) -> None:
    sdk = fake_scs.new()
    monkeypatch.setitem(sys.modules, "scservo_sdk", sdk)
    drv = load_driver("robots.drivers.so101:SO101Driver", {"port": "/dev/ttyACM0", "cameras": CAMERAS})
    assert R.exit_code(run_checks(drv, CheckOptions(dry_run=True))) == 0
    # connect, the dry hold/e-stop, the final hold and close: every goal is where the arm is
    assert sdk.bus.goal_writes and all(w == {i: 2048 for i in range(1, 7)} for w in sdk.bus.goal_writes)


def test_cli_bridge_check_with_a_yaml_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "scservo_sdk", fake_scs.new())
    cfg = tmp_path / "so101.yaml"
    cfg.write_text(yaml.safe_dump({"port": "/dev/ttyACM0", "control_hz": 50, "cameras": CAMERAS}))
    out = tmp_path / "check.json"
    res = CliRunner().invoke(bridge_app, ["check", "robots.drivers.so101:SO101Driver", "--config",
                                          str(cfg), "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["passed"] and {c["status"] for c in doc["checks"]} == {"pass"}


def test_units_ticks_radians_and_gripper() -> None:
    cal = JointCalibration(id=1, offset=2048, sign=-1)
    assert ticks_to_rad(2048 + 1024, cal) == pytest.approx(-QUARTER)
    assert rad_to_ticks(-QUARTER, cal) == 3072
    assert decode_position(0x8005) == -5 and decode_position(4095) == 4095
    drv, sdk = make(joints={"shoulder_pan": {"id": 1}, "shoulder_lift": {"id": 2, "sign": -1},
                            "elbow_flex": {"id": 3, "offset": 1000, "min_ticks": 100, "max_ticks": 3000},
                            "wrist_flex": {"id": 4}, "wrist_roll": {"id": 5}},
                    gripper={"id": 6, "closed_ticks": 2000, "open_ticks": 3000})
    s = sdk.bus.servos
    s[1].present, s[2].present, s[3].present, s[6].present = 2048 + 512, 2048 + 512, 1000, 2750
    with drv:
        q = here(drv)
        assert q[0] == pytest.approx(math.pi / 4) and q[1] == pytest.approx(-math.pi / 4)
        assert q[2] == pytest.approx(0.0) and q[5] == pytest.approx(0.75)  # open_is_1
        spec = drv.capabilities().action_spec
        assert spec.kind is SpaceKind.JOINT_POSITION and spec.gripper is GripperConvention.OPEN_IS_1
        assert spec.low[2] == pytest.approx(ticks_to_rad(120, JointCalibration(id=3, offset=1000, min_ticks=100, max_ticks=3000)))
        assert spec.low[1] == pytest.approx(-QUARTER + 20 * 2 * math.pi / 4096)  # sign -1: range flips
    closed, sdk2 = make(gripper_convention="closed_is_1")
    sdk2.bus.servos[6].present = 3072
    with closed:
        assert here(closed)[5] == pytest.approx(0.0)  # fully open reads 0 when closed is 1


def test_goals_are_limited_to_the_calibrated_range_and_one_step() -> None:
    drv, sdk = make(control_hz=30.0, max_joint_speed=1.5)
    with drv:
        q = here(drv)
        drv.apply_command(ArmCommand((q[0] + 1.0, q[1] - 0.01, *q[2:5], 1.0)))
        goals = sdk.bus.goal_writes[-1]
        step = 1.5 / 30 / (2 * math.pi / 4096)  # 32.6 ticks
        assert goals[1] == 2048 + math.floor(step)
        assert goals[2] == rad_to_ticks(q[1] - 0.01, JointCalibration(id=2))
        assert goals[6] == 3072  # open_is_1: 1.0 is the open tick
        sent = drv.observe().info["sent"]
        assert sent["driver_clipped"] == ["shoulder_pan"] and sent["units"] == "ticks"
        sdk.bus.servos[4].present = 3070  # near wrist_flex's calibrated max 3072
        drv.apply_command(ArmCommand((*here(drv)[:3], 3.0, here(drv)[4], 0.5)))
        assert sdk.bus.goal_writes[-1][4] == 3072 - 20  # the range less margin_ticks
        assert sdk.bus.goal_writes[-1][6] == 2560


def test_torque_comes_on_only_after_the_goal_is_the_present_position() -> None:
    drv, sdk = make()
    for s in sdk.bus.servos.values():
        s.present, s.goal = 2100.0, 100  # a stale goal far away
    with drv:
        assert sdk.bus.goal_writes[0] == {i: 2100 for i in range(1, 7)}
        assert [w for w in sdk.bus.byte_writes if w[1] == 40] == [(i, 40, 1) for i in range(1, 7)]
        assert here(drv)[0] == pytest.approx(ticks_to_rad(2100, JointCalibration(id=1)))


def test_hold_writes_the_present_position_and_keeps_torque() -> None:
    drv, sdk = make()
    sdk.bus.speed = 20.0  # ticks/s: slow enough to be mid-motion when held
    with drv:
        q = here(drv)
        drv.apply_command(ArmCommand((q[0] + 0.04, *q[1:])))
        drv.hold()
        held = sdk.bus.goal_writes[-1]
        assert held[1] == round(sdk.bus.servos[1].present) and held[1] < 2048 + 26
        assert all(s.torque for s in sdk.bus.servos.values())
        assert drv.observe().info["holding"] is True


def test_torque_off_mode_drops_torque_and_the_next_command_restores_it_safely() -> None:
    drv, sdk = make(hold_mode="torque_off")
    with drv:
        drv.hold()
        assert not any(s.torque for s in sdk.bus.servos.values())
        sdk.bus.servos[2].present = 2300.0  # the arm sagged while limp
        q = here(drv)
        drv.apply_command(ArmCommand(q))
        assert all(s.torque for s in sdk.bus.servos.values())
        assert sdk.bus.goal_writes[-2][2] == 2300  # goal = present before torque on


def test_retries_and_unanswered_servos() -> None:
    drv, sdk = make(retries=2)
    with drv:
        sdk.bus.timeouts = 2
        here(drv)  # two timeouts, third try answers
        sdk.bus.timeouts = 3
        with pytest.raises(DriverError, match=r"reading positions failed .*no status packet.* after 3 tries"):
            drv.observe()
        sdk.bus.silent = {3}
        with pytest.raises(DriverError, match="servo 3 did not answer"):
            drv.observe()


def test_reopens_an_unplugged_port() -> None:
    drv, sdk = make()
    with drv:
        sdk.bus.unplugged = True
        with pytest.raises(DriverError, match=r"reopening the port on the next call"):
            drv.observe()
        assert drv.port is None
        drv.hold()  # nothing connected: returns quietly
        with pytest.raises(DriverError, match=r"cannot open /dev/ttyACM0"):
            drv.observe()
        sdk.bus.unplugged = False
        for s in sdk.bus.servos.values():
            s.torque = False  # power-cycled with the cable
        assert len(here(drv)) == 6
        assert drv.reconnects == 1 and sdk.bus.opened == 2
        assert all(s.torque for s in sdk.bus.servos.values())


def test_reset_asks_the_operator() -> None:
    drv, _ = make()
    scene = SceneSpec("pick", "cube", ("cube",))
    with drv:
        first = drv.reset(scene)
        assert not first.ready and first.instructions.startswith("so101: set up pick")
        assert drv.reset(SceneSpec.from_dict({**scene.to_dict(), "operator_confirmed": True})).ready


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="servo ids must be unique"):
        make(gripper={"id": 1})
    with pytest.raises(ValidationError, match="calibrate exactly"):
        make(joints={"shoulder_pan": {"id": 1}})
    with pytest.raises(ValidationError, match="min_ticks 3000 must be below max_ticks 100"):
        JointCalibration(id=1, min_ticks=3000, max_ticks=100)


@pytest.mark.skipif(importlib.util.find_spec("scservo_sdk") is None, reason="extra `so101` not installed")
def test_so101_extra_imports() -> None:
    import scservo_sdk  # type: ignore[import-not-found]

    for name in ("PortHandler", "PacketHandler", "GroupSyncRead", "GroupSyncWrite", "COMM_SUCCESS"):
        assert hasattr(scservo_sdk, name), name
