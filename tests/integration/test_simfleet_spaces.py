"""A mixed sim fleet from fleet.yaml: an ee_delta arm and a joint_position arm with a wrist
camera, started by SimFleet, each declaring its space over the real bridge, and the scripted
oracle of each space driving its arm through the bridge client to success."""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator.fleet_config import load_fleet
from orchestrator.simfleet import SimFleet
from policies.base import PolicyInput
from policies.oracle import ScriptedOracle
from robots.client import BridgeClient
from robots.spaces import CameraRole, SpaceKind
from robots.types import SceneSpec

FLEET = """
arms:
  - name: ee-1
    endpoint: tcp://127.0.0.1:*
    sim: {cameras: [{name: front, size: 48x32}]}
  - name: ur5-1
    endpoint: tcp://127.0.0.1:*
    station: b
    sim:
      space: joint_position
      cameras: [{name: front, size: 48x32}, {name: wrist, size: 40x24}]
"""
PICK = SceneSpec(skill="pick", target="coke_can", objects=("coke_can", "apple"),
                 instruction="pick coke can", seed=11)


def test_mixed_sim_fleet_declares_and_runs_both_spaces(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    with SimFleet.from_yaml(path) as fleet:
        cfg = fleet.config()
        assert [a.name for a in cfg.arms] == ["ee-1", "ur5-1"]
        assert cfg.arms[1].station == "b" and cfg.arms[1].sim is not None
        again = tmp_path / "running.yaml"  # the running fleet's config round-trips
        again.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        assert load_fleet(again) == cfg
        for arm, space in zip(cfg.arms, (SpaceKind.EE_DELTA, SpaceKind.JOINT_POSITION), strict=True):
            with BridgeClient(arm.endpoint, timeout_ms=5000) as c:
                c.hello()
                caps = c.capabilities
                assert caps is not None and caps.action_spec.kind is space
                roles = [(s.name, s.role, s.height, s.width) for s in caps.cameras]
                expect = [("front", CameraRole.EXTERNAL, 32, 48)]
                if space is SpaceKind.JOINT_POSITION:
                    expect.append(("wrist", CameraRole.WRIST, 24, 40))
                assert roles == expect
                oracle = ScriptedOracle({"space": space.value})
                c.reset(PICK, f"ep-{arm.name}")
                obs = c.observe()
                assert len(obs.proprio) == len(caps.state.names)
                done = False
                for _ in range(40):
                    x = PolicyInput(obs.frames, obs.proprio, PICK.instruction, c.privileged(),
                                    arm.name)
                    chunk = oracle.act([x]).outputs[0].the_chunk
                    done = chunk.terminates(0)
                    res = c.act(chunk.row(0), terminate=done)
                    assert len(res.applied) == 7
                    if done:
                        break
                    assert res.observation is not None
                    obs = res.observation
                assert done
                assert c.observe().sim_success, arm.name
