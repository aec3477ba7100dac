"""The runner's typed seams and the policy/arm match before leasing (no Ray started, no store):
policy_io from a registered config, the arm's spaces kept in the robots row, the one-line
mismatches, an arm's refusal keeping its code across Ray, and the scheduling filter."""

from __future__ import annotations

import pickle
from dataclasses import replace
from typing import Any

import pytest
import ray.cloudpickle

from orchestrator.arm_info import (
    ArmInfo,
    PrepareResult,
    spaces_json,
    spaces_of,
    unmatched_policies,
)
from orchestrator.faults import AbortCause
from orchestrator.fleet_config import ArmConfig
from orchestrator.runner_arms import Arm, ArmsMixin, policy_tag
from orchestrator.runner_faults import (
    EXIT_NO_ARM_MATCHES,
    EXIT_RUN_STOPPED,
    NoArmMatches,
    RunStopped,
    actor_error_reason,
    cause_of_actor_error,
)
from orchestrator.scheduler import ArmState, TrialCandidate, assign
from policies.registry import PolicyConfigError, policy_io
from robots.client import BridgeCommandError
from robots.spaces import (
    RT2_ACTION,
    RT2_IO,
    ActionSpec,
    Adapter,
    ArmSpaces,
    CameraRole,
    CameraSpec,
    GripperConvention,
    SpaceKind,
    StateSpec,
)

JOINTS = tuple(f"joint_{i}" for i in range(1, 7))
JOINT_ACTION = ActionSpec(SpaceKind.JOINT_POSITION, (*JOINTS, "gripper"), ("rad",) * 6 + ("1",),
                          (-6.28,) * 6 + (0.0,), (6.28,) * 6 + (1.0,),
                          GripperConvention.OPEN_IS_1, 15.0)
CAMS = (CameraSpec("front", 96, 96), CameraSpec("wrist", 64, 64, role=CameraRole.WRIST))
EE_ARM = ArmSpaces(RT2_ACTION, (CameraSpec("front", 96, 96),))
JOINT_ARM = ArmSpaces(JOINT_ACTION, CAMS, StateSpec((*JOINTS, "gripper"), ("rad",) * 6 + ("1",)))


def test_policy_io_reads_the_config_without_loading_a_model() -> None:
    assert policy_io({"name": "v", "kind": "vla", "path": "/nowhere"}) == RT2_IO
    assert policy_io({"name": "h", "kind": "vision_heuristic"}) == replace(RT2_IO, camera_names=("main",))
    assert policy_io({"name": "o", "kind": "oracle"}) == RT2_IO
    io = policy_io({"name": "o", "kind": "oracle", "options": {"space": "joint_position"}})
    assert (io.emits, io.action_dim, io.gripper) == (SpaceKind.JOINT_POSITION, 7,
                                                     GripperConvention.OPEN_IS_1)
    assert policy_io({"name": "r", "kind": "random", "options": {"space": "joint_position"}}) == io
    with pytest.raises(PolicyConfigError, match="option space 'joint_velocity'"):
        policy_io({"name": "r", "kind": "random", "options": {"space": "joint_velocity"}})


def test_declared_spaces_round_trip_through_the_robots_row() -> None:
    for sp in (EE_ARM, JOINT_ARM):
        assert spaces_of({"spaces": spaces_json(sp)}) == sp
        info = ArmInfo(estopped=False, session_id="s", driver="sim", spaces=sp, version=2)
        row = info.to_json()
        assert spaces_of(row) == sp
        assert row["cameras"] == [c.name for c in sp.cameras]  # what the Fleet page reads
    assert spaces_of({}) is None and spaces_of({"spaces": {"action": {}}}) is None


def test_unmatched_policies_name_both_sides_in_one_line() -> None:
    joint = policy_io({"name": "j", "kind": "oracle", "options": {"space": "joint_position"}})
    bad = unmatched_policies({"rt2": RT2_IO, "j": joint}, {"ur5-1": JOINT_ARM})
    assert bad == {"rt2": ["policy rt2 emits ee_delta[7]; arm ur5-1 accepts joint_position[7]"]}
    assert unmatched_policies({"rt2": RT2_IO}, {"ur5-1": JOINT_ARM, "sim-1": EE_ARM}) == {}
    assert unmatched_policies({"rt2": RT2_IO}, {}) == {}  # nothing known: nothing refused


def test_an_arm_refusal_keeps_its_code_and_message_across_ray() -> None:
    e = BridgeCommandError("bridge at tcp://x refused reset: DRIVER_ERROR: gripper stuck",
                           "tcp://x", "DRIVER_ERROR")
    for codec in (pickle, ray.cloudpickle):  # what Ray does with an actor's exception
        back = codec.loads(codec.dumps(e))
        assert (type(back), str(back), back.code) == (BridgeCommandError, str(e), "DRIVER_ERROR")
    reason = actor_error_reason("ur5-1", "prepare", e)
    assert reason == ("arm ur5-1 prepare failed: DRIVER_ERROR: gripper stuck "
                      "(bridge at tcp://x refused reset)")
    assert cause_of_actor_error(e, during_reset=True) is AbortCause.SCENE
    refused = BridgeCommandError("latched", "tcp://x", "ESTOPPED")
    assert actor_error_reason("a", "prepare", refused) == "arm a prepare failed: ESTOPPED: latched"
    assert cause_of_actor_error(refused, during_reset=True) is AbortCause.ESTOP
    other = actor_error_reason("a", "run", ValueError("boom\nmore"))
    assert other == "arm a run failed: ValueError: boom"


def test_typed_results_are_frozen() -> None:
    r = PrepareResult(ready=False, instructions="place the can")
    with pytest.raises(AttributeError):
        r.ready = True  # type: ignore[misc]
    assert issubclass(NoArmMatches, RunStopped)
    assert (RunStopped.exit_code, NoArmMatches.exit_code) == (EXIT_RUN_STOPPED,
                                                              EXIT_NO_ARM_MATCHES)


class _Runner(ArmsMixin):
    """The matching half of FleetRunner over a fake store: audit writes are collected."""

    def __init__(self, arms: dict[str, ArmSpaces | None], ios: dict[int, tuple[str, Any]]):
        self.arms = {}
        for i, (name, sp) in enumerate(arms.items()):
            arm = Arm(cfg=ArmConfig(name=name, endpoint=f"tcp://127.0.0.1:{5000 + i}"),
                      robot_id=i + 1, online=True, held=True)
            if sp is not None:
                arm.info = ArmInfo(estopped=False, session_id="s", driver="sim", spaces=sp)
            self.arms[name] = arm
        self._policy_io = dict(ios)
        self._reported = set()
        self._policies_seen = set()
        self.writes: list[Any] = []

    def _db(self, fn: Any) -> Any:
        self.writes.append(fn)


def _cand(tid: int, pid: int) -> TrialCandidate:
    return TrialCandidate(trial_id=tid, campaign_id=1, campaign_priority=0, campaign_created_ns=0,
                          plan_order=tid, task_key=f"t{tid}", station_needs=(),
                          scene_key=f"s{tid}", policy_name=f"p{pid}", policy_id=pid)


def _states(r: _Runner) -> list[ArmState]:
    return [ArmState(name=a.cfg.name, station="default", capabilities=r._arm_tags(a),
                     online=True, busy=False, scene_key=None) for a in r.arms.values()]


def test_a_policy_is_leased_only_to_arms_it_matches(caplog: pytest.LogCaptureFixture) -> None:
    joint = policy_io({"name": "j", "kind": "oracle", "options": {"space": "joint_position"}})
    r = _Runner({"sim-1": EE_ARM, "ur5-1": JOINT_ARM}, {1: ("rt2", RT2_IO), 2: ("jp", joint)})
    cands = [_cand(1, 1), _cand(2, 2)]
    first = r._filter_by_match(cands)  # policies seen for the first time: no arm has their tag
    assert assign(first, _states(r)) == []
    r._match_arms()
    assert r.arms["sim-1"].matches == {1: ()} and r.arms["ur5-1"].matches == {2: ()}
    assert r._arm_tags(r.arms["sim-1"]) == {policy_tag(1)}
    plan = {a.trial_id: a.arm for a in assign(r._filter_by_match(cands), _states(r))}
    assert plan == {1: "sim-1", 2: "ur5-1"}
    lines = [rec.getMessage() for rec in caplog.records]
    assert "policy rt2 emits ee_delta[7]; arm ur5-1 accepts joint_position[7]" in lines
    assert "policy jp emits joint_position[7]; arm sim-1 accepts ee_delta[7]" in lines
    n = len(r.writes)
    r._match_arms()  # reported once per pair
    assert len(r.writes) == n == 2


def test_the_adapters_of_a_pair_are_kept_for_the_episode_spec() -> None:
    closed = ArmSpaces(ActionSpec(RT2_ACTION.kind, RT2_ACTION.names, RT2_ACTION.units,
                                  RT2_ACTION.low, RT2_ACTION.high,
                                  GripperConvention.CLOSED_IS_1), EE_ARM.cameras)
    r = _Runner({"droid-1": closed}, {1: ("rt2", RT2_IO)})
    r._filter_by_match([_cand(1, 1)])
    r._match_arms()
    assert r.arms["droid-1"].matches == {1: (Adapter.FLIP_GRIPPER,)}


def test_a_policy_no_arm_matches_stops_the_run_once_every_arm_declared() -> None:
    r = _Runner({"ur5-1": JOINT_ARM, "ur5-2": None}, {1: ("rt2", RT2_IO)})
    r._filter_by_match([_cand(1, 1)])
    r._match_arms()  # ur5-2 has not answered yet: it might match
    assert r._first_hellos_pending()  # and nothing is leased until it answers (or fails)
    r.arms["ur5-2"].failures = 1
    assert not r._first_hellos_pending()
    r.arms["ur5-2"].info = r.arms["ur5-1"].info
    with pytest.raises(NoArmMatches) as e:
        r._match_arms()
    assert str(e.value).splitlines() == [
        "policy rt2 matches no arm of the fleet, so none of its trials can run:",
        "policy rt2 emits ee_delta[7]; arm ur5-1 accepts joint_position[7]",
        "policy rt2 emits ee_delta[7]; arm ur5-2 accepts joint_position[7]",
    ]
    assert not any(a.matches for a in r.arms.values())


def test_the_runner_holds_no_sql() -> None:
    """Its reads and writes are orchestrator.store functions (called through its retrying
    wrapper); no runner module imports SQLAlchemy or the ORM models."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "orchestrator"
    for path in sorted(root.glob("runner*.py")):
        tree = ast.parse(path.read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in mods if m and (m.startswith("sqlalchemy")
                                               or m == "orchestrator.store.models")}, path.name
        assert len(path.read_text().splitlines()) < 400, f"{path.name}: split it"
