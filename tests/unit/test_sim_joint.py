"""The sim arm in joint space (SimDriver space=joint_position), its wrist camera, the scripted
oracle and the random baseline in both spaces, and the per-arm sim options of a fleet."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.fleet_config import FleetConfig, SimArm
from policies.base import PolicyInput
from policies.baselines import RandomPolicy
from policies.oracle import ScriptedOracle, options_config
from robots.drivers.base import CameraSpec
from robots.drivers.sim import JOINT_STATE, SimDriver, SimOptions
from robots.sim import kinematics as k
from robots.sim.world import WORKSPACE
from robots.spaces import (
    EE_STATE,
    RT2_IO,
    ArmCommand,
    CameraRole,
    GripperConvention,
    PolicyIO,
    SpaceKind,
)
from robots.types import Action, SceneSpec

PICK = SceneSpec(skill="pick", target="coke_can", objects=("coke_can", "apple"),
                 distractors=("sponge",), instruction="pick coke can", seed=5)
SMALL = (CameraSpec("main", 32, 32),)


def joint_driver(**kw: object) -> SimDriver:
    d = SimDriver(SimOptions(cameras=SMALL, space=SpaceKind.JOINT_POSITION, **kw))  # type: ignore[arg-type]
    d.connect()
    return d


def test_joint_capabilities_declare_the_space_state_and_cameras() -> None:
    d = SimDriver(SimOptions(cameras=(CameraSpec("front", 32, 48), CameraSpec("wrist", 24, 32)),
                             space="joint_position", control_hz=10.0))  # type: ignore[arg-type]
    caps = d.capabilities()
    spec = caps.action_spec
    assert spec.kind is SpaceKind.JOINT_POSITION and spec.label == "joint_position[7]"
    assert spec.names == ("j1", "j2", "j3", "j4", "j5", "j6", "gripper")
    assert spec.units == ("rad",) * 6 + ("1",)
    assert spec.low == (*k.JOINT_LOW, 0.0) and spec.high == (*k.JOINT_HIGH, 1.0)
    assert spec.gripper is GripperConvention.OPEN_IS_1 and caps.control_hz == 10.0
    assert caps.state == JOINT_STATE
    assert caps.state.names[:7] == spec.names and caps.state.names[7:] == EE_STATE.names[:6]
    assert [(c.name, c.role) for c in caps.cameras] == [("front", CameraRole.EXTERNAL),
                                                          ("wrist", CameraRole.WRIST)]


def test_ee_delta_stays_the_default_and_unchanged() -> None:
    d = SimDriver(SimOptions(cameras=SMALL))
    caps = d.capabilities()
    assert caps.action is None and caps.action_spec.kind is SpaceKind.EE_DELTA
    assert caps.state == EE_STATE
    with d:
        d.reset(PICK)
        d.apply(Action(dx=0.01))
        assert len(d.observe().proprio) == 7
        assert "joints" not in d.privileged_state()  # type: ignore[operator]


def test_bad_sim_space_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="ee_delta.*joint_position"):
        SimOptions(space="joint_velocity")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ee_delta.*joint_position"):
        SimOptions(space="warp")  # type: ignore[arg-type]


def test_joint_state_starts_at_home_and_proprio_follows_the_declared_order() -> None:
    d = joint_driver()
    d.reset(PICK)
    obs = d.observe()
    q = d.joints
    assert q == k.home_joints()
    assert obs.proprio[:6] == q and obs.proprio[6] == 1.0
    assert obs.proprio[7:] == pytest.approx(k.ee_pose(q), abs=1e-6)
    assert d.privileged_state()["joints"] == list(q)  # type: ignore[index]


def test_joint_speed_is_clipped_per_step() -> None:
    d = joint_driver(control_hz=5.0, max_joint_speed=1.0)
    d.reset(PICK)
    q0 = d.joints
    assert q0 is not None
    target = (q0[0] - 0.05, *q0[1:5], q0[5] + 1.0, 1.0)  # j6 turns the gripper in place
    d.apply_command(ArmCommand(target))
    q1 = d.joints
    assert q1 is not None
    assert q1[5] == pytest.approx(q0[5] + 0.2)  # 1 rad/s at 5 Hz
    assert q1[0] == pytest.approx(q0[0] - 0.05)  # within the limit: reached
    assert d.state.ee == pytest.approx(k.ee_pose(q1), abs=1e-6)  # type: ignore[union-attr]
    for _ in range(4):
        d.apply_command(ArmCommand(target))
    assert d.joints == pytest.approx(target[:6])
    # the tool's z points down, so +1 rad on j6 is -1 rad of yaw; j1's -0.05 adds its own
    assert d.state.ee[5] == pytest.approx(k.ee_pose(q0)[5] - 1.05, abs=1e-6)  # type: ignore[union-attr]


def test_world_moves_as_with_the_equivalent_ee_delta() -> None:
    rng = np.random.default_rng(0)
    ee_arm = SimDriver(SimOptions(cameras=SMALL))
    ee_arm.connect()
    j_arm = joint_driver()
    ee_arm.reset(PICK)
    j_arm.reset(PICK)
    can = ee_arm.state.obj("coke_can").pos  # type: ignore[union-attr]
    # go over the can, down, grasp, lift: the same ee motions both ways
    plan = [(can[0] - 0.0, can[1], 0.25), (can[0], can[1], can[2])]
    steps: list[tuple[float, float, float, float]] = []
    for goal in plan:
        for _ in range(12):
            steps.append((*goal, 1.0))
    steps += [(can[0], can[1], can[2], 0.0)] * 2 + [(can[0], can[1], 0.3, 0.0)] * 6
    for gx, gy, gz, g in steps:
        ee = ee_arm.state.ee  # type: ignore[union-attr]
        d = np.clip(np.array([gx, gy, gz]) - ee[:3], -0.05, 0.05) + rng.normal(0, 1e-4, 3)
        ee_arm.apply(Action(dx=d[0], dy=d[1], dz=d[2], gripper=g))
        target = k.ik(ee_arm.state.ee, j_arm.joints).q  # type: ignore[union-attr, arg-type]
        j_arm.apply_command(ArmCommand((*target, g)))
    a, b = ee_arm.state, j_arm.state
    assert a is not None and b is not None
    assert a.grasped == b.grasped == "coke_can"
    assert b.ee == pytest.approx(a.ee, abs=1e-5)
    for oa, ob in zip(a.objects, b.objects, strict=True):
        assert ob.pos == pytest.approx(oa.pos, abs=1e-5) and ob.upright == oa.upright
    assert ee_arm.observe().sim_success and j_arm.observe().sim_success


def test_joints_follow_the_world_when_it_stops_the_ee() -> None:
    d = joint_driver(max_joint_speed=3.0)
    d.reset(PICK)
    below = k.ik((0.0, 0.0, -0.04, 0.0, 0.0, 0.0), d.joints).q  # type: ignore[arg-type]
    for _ in range(5):
        d.apply_command(ArmCommand((*below, 1.0)))
    ee = d.state.ee  # type: ignore[union-attr]
    assert ee[2] == WORKSPACE.low[2]  # the table stops the gripper
    assert k.ee_pose(d.joints)[:3] == pytest.approx(ee[:3], abs=1e-4)  # type: ignore[arg-type]


def test_a_joint_arm_refuses_ee_actions_and_wrong_lengths() -> None:
    d = joint_driver()
    d.reset(PICK)
    with pytest.raises(TypeError, match="joint_position"):
        d.apply(Action(dx=0.01))
    with pytest.raises(ValueError, match="7"):
        d.apply_command(ArmCommand((0.0,) * 8))


def test_nan_joint_target_keeps_the_joint() -> None:
    d = joint_driver()
    d.reset(PICK)
    q0 = d.joints
    assert q0 is not None
    d.apply_command(ArmCommand((math.nan, *q0[1:], math.nan)))
    assert d.joints == pytest.approx(q0) and d.state.gripper == 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize("space", ["ee_delta", "joint_position"])
def test_wrist_camera_frame_and_role(space: str) -> None:
    cams = (CameraSpec("main", 40, 48), CameraSpec("wrist", 24, 32))
    d = SimDriver(SimOptions(cameras=cams, space=space))  # type: ignore[arg-type]
    with d:
        d.reset(PICK)
        roles = {c.name: c.role for c in d.capabilities().cameras}
        assert roles == {"main": CameraRole.EXTERNAL, "wrist": CameraRole.WRIST}
        f0 = d.observe().frames
        assert f0["wrist"].shape == (24, 32, 3) and f0["wrist"].dtype == np.uint8
        assert f0["main"].shape == (40, 48, 3)
        if space == "ee_delta":
            d.apply(Action(dx=0.05, dy=0.05, dz=-0.05))
        else:
            q = k.ik((0.05, 0.05, 0.2, 0, 0, 0), d.joints).q  # type: ignore[arg-type]
            d.apply_command(ArmCommand((*q, 1.0)))
        assert not np.array_equal(d.observe().frames["wrist"], f0["wrist"])  # it moved


def run_oracle(space: str, scene: SceneSpec, max_steps: int = 40) -> tuple[bool, int]:
    drv = SimDriver(SimOptions(cameras=SMALL, space=space))  # type: ignore[arg-type]
    pol = ScriptedOracle({"space": space})
    with drv:
        drv.reset(scene)
        spec = drv.capabilities().action_spec
        for t in range(1, max_steps + 1):
            x = PolicyInput({}, (), scene.instruction, drv.privileged_state(), "arm-1")
            chunk = pol.act([x]).outputs[0].the_chunk
            assert chunk.dim == spec.dim
            values, _ = spec.clip(chunk.row(0))
            drv.apply_command(ArmCommand(values, chunk.terminates(0)))
            if chunk.terminates(0):
                break
        return bool(drv.observe().sim_success), t


def test_oracle_succeeds_on_pick_in_both_spaces_alike() -> None:
    ok_ee, n_ee = run_oracle("ee_delta", PICK)
    ok_j, n_j = run_oracle("joint_position", PICK)
    assert ok_ee and ok_j and n_j == n_ee


def test_oracle_joint_space_declares_its_io_and_needs_joints() -> None:
    pol = ScriptedOracle({"space": "joint_position"})
    assert pol.metadata.io == PolicyIO(SpaceKind.JOINT_POSITION, 7, GripperConvention.OPEN_IS_1,
                                       (CameraRole.EXTERNAL,), ())
    assert pol.metadata.config["options"]["space"] == "joint_position"
    ee = ScriptedOracle()
    assert ee.metadata.io == RT2_IO
    assert "space" not in ee.metadata.config["options"]  # ee_delta checksums unchanged
    d = SimDriver(SimOptions(cameras=SMALL))
    with d:
        d.reset(PICK)
        x = PolicyInput({}, (), PICK.instruction, d.privileged_state(), "ee-arm")
        with pytest.raises(ValueError, match="no 'joints'.*space: joint_position"):
            pol.act([x])


def test_checksum_config_leaves_the_default_space_out() -> None:
    from policies.oracle import OracleOptions

    assert options_config("oracle", "1", OracleOptions()) == {
        "kind": "oracle", "version": "1",
        "options": {"noise": 0.0, "seed": 0, "tolerance": 0.006, "max_retries": 4}}


def test_random_policy_in_joint_space() -> None:
    pol = RandomPolicy({"space": "joint_position", "seed": 3})
    assert pol.metadata.io.emits is SpaceKind.JOINT_POSITION and pol.metadata.io.action_dim == 7
    x = PolicyInput({}, (), "do it", None, "a")
    chunks = [pol.act([x]).outputs[0].the_chunk for _ in range(20)]
    d = joint_driver()
    d.reset(PICK)
    spec = d.capabilities().action_spec
    for c in chunks:
        assert c.horizon == 1 and c.dim == 7
        assert spec.clip(c.row(0))[1] == ()  # always inside the declared limits
        d.apply_command(ArmCommand(c.row(0)))
    again = RandomPolicy({"space": "joint_position", "seed": 3})
    assert again.act([x]).outputs[0].the_chunk == chunks[0]
    assert RandomPolicy().metadata.io == RT2_IO


def test_fleet_yaml_describes_a_mixed_sim_fleet() -> None:
    cfg = FleetConfig.model_validate({"arms": [
        {"name": "ee-1", "endpoint": "tcp://127.0.0.1:*", "sim": {}},
        {"name": "ur5-1", "endpoint": "tcp://127.0.0.1:*",
         "sim": {"space": "joint_position",
                 "cameras": ["front", {"name": "wrist", "size": "128x96"}],
                 "max_joint_speed": 1.0}},
        {"name": "real", "endpoint": "tcp://10.0.0.1:5555"},
    ]})
    ee, ur5, real = cfg.arms
    assert ee.sim == SimArm() and real.sim is None
    assert ur5.sim is not None and ur5.sim.bridge_args() == (
        "--space", "joint_position", "--camera", "front=256x256", "--camera", "wrist=128x96",
        "--max-joint-speed", "1.0")
    with pytest.raises(ValueError, match="each camera once"):
        SimArm.model_validate({"cameras": ["main", "front"]})
    with pytest.raises(ValueError):
        SimArm.model_validate({"space": "joint_velocity"})
    with pytest.raises(ValueError):
        SimArm.model_validate({"cameras": [{"name": "top"}]})


def test_bridge_cli_builds_the_sim_driver_from_its_options() -> None:
    import typer

    from robots.cli import make_driver

    d = make_driver("sim", (64, 64), space="joint_position",
                    cameras=["front", "wrist=48x32"], max_joint_speed=2.0)
    assert d.options.space is SpaceKind.JOINT_POSITION and d.options.max_joint_speed == 2.0
    assert [(c.name, c.height, c.width, c.role) for c in d.options.cameras] == [
        ("front", 64, 64, CameraRole.EXTERNAL), ("wrist", 32, 48, CameraRole.WRIST)]
    assert make_driver("sim").options == SimOptions()
    with pytest.raises(typer.BadParameter, match="driver sim only"):
        make_driver("replay", space="joint_position")


def test_joint_arm_frames_are_deterministic_and_draw_the_arm_links() -> None:
    def frames(space: str) -> dict[str, np.ndarray]:
        cams = (CameraSpec("main", 64, 64), CameraSpec("wrist", 32, 32))
        with SimDriver(SimOptions(cameras=cams, space=space)) as d:  # type: ignore[arg-type]
            d.reset(PICK)
            return d.observe().frames

    a, b, ee = frames("joint_position"), frames("joint_position"), frames("ee_delta")
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert np.array_equal(a["wrist"], ee["wrist"])  # the same pose: the same wrist view
    assert not np.array_equal(a["main"], ee["main"])  # the UR5e's links, not a plain arm


@pytest.mark.parametrize("kind", ["oracle", "random"])
@pytest.mark.parametrize("space", ["ee_delta", "joint_position"])
def test_metadata_io_agrees_with_the_registry(kind: str, space: str) -> None:
    from policies import registry

    policy_io = getattr(registry, "policy_io", None)
    if policy_io is None:
        pytest.skip("policies.registry.policy_io not there yet")
    cfg = {"name": "p", "kind": kind, "options": {"space": space}}
    assert registry.build_policy(cfg).metadata.io == policy_io(cfg)
