"""The runner against bridges that refuse or do not fit (real bridge processes, local Ray):

- a reset the arm refuses (DRIVER_ERROR with a message) is stored as the abort reason with that
  code and message; every trial then gives up and the campaign is incomplete, saying why;
- an episode the arm fails mid-way keeps its steps and video up to the abort;
- a policy is leased only to arms whose declared spaces it matches, the mismatched pair is
  reported once in one line, and a policy that matches no arm stops the run before leasing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.fleet_config import ArmConfig, FleetConfig
from orchestrator.recording import verify_media
from orchestrator.runner import FleetRunner
from orchestrator.runner_faults import NoArmMatches
from orchestrator.store.lifecycle import campaign_state, incomplete_message
from orchestrator.store.models import CampaignPolicy, Episode, Event, Policy, Robot, Step, Trial
from orchestrator.store.states import EpisodeStatus, EventKind, TrialStatus
from robots.drivers.base import Capabilities, ResetResult
from robots.spaces import ActionSpec, GripperConvention, SpaceKind, StateSpec
from robots.types import Action, SceneSpec
from tests.integration.fakes import BridgeProcess, FixedFrameDriver
from tests.integration.fleet_support import (
    new_campaign,
    ray_local,  # noqa: F401 - pytest fixture (module-scoped local Ray)
    run_to_done,
    started,
)

pytestmark = pytest.mark.timeout(240)
HERE = "tests.integration.test_fleet_seams"
JOINTS = tuple(f"joint_{i}" for i in range(1, 7))


class RefusingDriver(FixedFrameDriver):
    """Refuses every scene: the bridge answers reset with DRIVER_ERROR and this message."""

    def reset(self, scene: SceneSpec) -> ResetResult:
        raise RuntimeError("gripper calibration lost; re-home the arm")


class FailsOnceDriver(FixedFrameDriver):
    """The driver's SDK fails on the 5th command of the first episode, then works."""

    def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.failed = False

    def apply(self, action: Action) -> None:
        if not self.failed and self.n_applied == 4:
            self.failed = True
            raise RuntimeError("simulated SDK fault")
        super().apply(action)


class OperatorDriver(FixedFrameDriver):
    """A real arm's reset: not ready until an operator confirmed the scene's set-up."""

    def reset(self, scene: SceneSpec) -> ResetResult:
        if not scene.operator_confirmed:
            return ResetResult(False, f"place {scene.target} on the table")
        return super().reset(scene)


class JointDriver(FixedFrameDriver):
    """Declares a joint_position[7] action space (it never gets an episode here)."""

    def capabilities(self) -> Capabilities:
        caps = super().capabilities()
        action = ActionSpec(SpaceKind.JOINT_POSITION, (*JOINTS, "gripper"),
                            ("rad",) * 6 + ("1",), (-6.28,) * 6 + (0.0,), (6.28,) * 6 + (1.0,),
                            GripperConvention.OPEN_IS_1, 10.0)
        return Capabilities(driver="joint", cameras=caps.cameras, action=action,
                            state=StateSpec((*JOINTS, "gripper"), ("rad",) * 6 + ("1",)))


def _fleet(*bridges: tuple[str, BridgeProcess]) -> FleetConfig:
    return FleetConfig(arms=tuple(ArmConfig(name=n, endpoint=b.endpoint, timeout_ms=1000)
                                  for n, b in bridges), lease_s=30.0)


@pytest.mark.usefixtures("ray_local")
def test_a_refused_reset_keeps_its_code_and_every_trial_gives_up(sqlite_store,
                                                                 tmp_path: Path) -> None:
    store = sqlite_store
    cid = new_campaign(store, "refused", policies=("rand-a",))  # 4 trials
    with BridgeProcess(tmp_path, driver=f"{HERE}:RefusingDriver") as b:
        runner = FleetRunner(store, _fleet(("lab-1", b)), media_dir=str(tmp_path / "media"))
        with started(runner):
            run_to_done(runner, deadline_s=150)
    with store.read() as s:
        eps = list(s.scalars(select(Episode)))
        trials = list(s.scalars(select(Trial).where(Trial.campaign_id == cid)))
        state = campaign_state(s, cid)
    assert {t.status for t in trials} == {TrialStatus.GIVEN_UP}
    assert len(eps) == 4 * 5 and {e.status for e in eps} == {EpisodeStatus.ABORTED}
    for e in eps:
        assert "DRIVER_ERROR" in e.abort_reason, e.abort_reason
        assert "gripper calibration lost; re-home the arm" in e.abort_reason, e.abort_reason
        assert "UnserializableException" not in e.abort_reason
        assert e.abort_reason.startswith("arm lab-1 prepare failed: DRIVER_ERROR: ")
    assert state.status == "incomplete" and state.tally.done == 0
    msg = incomplete_message(state)  # what `campaign run` prints before exiting 3
    assert "4 of 4 trials given up" in msg and "DRIVER_ERROR" in msg, msg
    assert runner.stats.recorded == 0 and runner.stats.aborted == 20


@pytest.mark.usefixtures("ray_local")
def test_an_episode_failed_midway_keeps_its_steps_and_video(sqlite_store, tmp_path: Path) -> None:
    store = sqlite_store
    media = tmp_path / "media"
    new_campaign(store, "midway", policies=("rand-a",))
    with BridgeProcess(tmp_path, driver=f"{HERE}:FailsOnceDriver") as b:
        runner = FleetRunner(store, _fleet(("lab-1", b)), media_dir=str(media))
        with started(runner):
            run_to_done(runner, deadline_s=150)
    with store.read() as s:
        aborted = list(s.scalars(select(Episode).where(Episode.status == EpisodeStatus.ABORTED)))
        assert len(aborted) == 1
        ep = aborted[0]
        steps = list(s.scalars(select(Step).where(Step.episode_id == ep.id).order_by(Step.idx)))
    assert "DRIVER_ERROR" in ep.abort_reason and "simulated SDK fault" in ep.abort_reason
    assert ep.step_count == len(steps) == 4, (ep.step_count, len(steps))
    assert [st.idx for st in steps] == [0, 1, 2, 3]
    assert ep.media and not ep.counted
    for m in ep.media:  # the video up to the abort, kept by the media sweep
        assert verify_media(media, m), m


@pytest.mark.usefixtures("ray_local")
def test_policies_lease_only_to_arms_they_match(sqlite_store, tmp_path: Path) -> None:
    store = sqlite_store
    cid = new_campaign(store, "mixed", policies=("rand-a",))  # random: ee_delta[7]
    with BridgeProcess(tmp_path, pub=False) as ee, \
            BridgeProcess(tmp_path, driver=f"{HERE}:JointDriver") as joint:
        runner = FleetRunner(store, _fleet(("ee-1", ee), ("ur5-1", joint)),
                             media_dir=str(tmp_path / "media"))
        with started(runner):
            run_to_done(runner, deadline_s=150)
        assert runner.arms["ee-1"].matches and not runner.arms["ur5-1"].matches
        with store.read() as s:
            robots = {r.id: r.name for r in s.scalars(select(Robot))}
            eps = list(s.scalars(select(Episode)))
            mism = list(s.scalars(select(Event).where(Event.kind == EventKind.SPACE_MISMATCH)))
            caps = s.scalar(select(Robot.capabilities).where(Robot.name == "ur5-1"))
        assert {robots[e.robot_id] for e in eps} == {"ee-1"}
        assert sum(e.counted for e in eps) == 4
        assert [m.payload["detail"] for m in mism] == [
            "policy rand-a emits ee_delta[7]; arm ur5-1 accepts joint_position[7]"]
        assert caps["spaces"]["action"]["kind"] == "joint_position"

        # the joint arm alone: the policy matches no arm, the run stops before leasing
        cid2 = new_campaign(store, "nomatch", policies=("rand-a",))
        runner = FleetRunner(store, _fleet(("ur5-1", joint)), media_dir=str(tmp_path / "media"),
                             campaign_ids=[cid2])
        with started(runner), pytest.raises(NoArmMatches) as e:
            run_to_done(runner, deadline_s=60)
    assert str(e.value).splitlines()[1:] == [
        "policy rand-a emits ee_delta[7]; arm ur5-1 accepts joint_position[7]"]
    with store.read() as s:
        leased = s.scalars(select(Trial).where(Trial.campaign_id == cid2,
                                               Trial.attempts > 0)).all()
    assert leased == [] and cid != cid2


@pytest.mark.usefixtures("ray_local")
def test_mixed_sim_fleet_runs_each_policy_only_on_arms_it_matches(sqlite_store,
                                                                  tmp_path: Path) -> None:
    """Two ee_delta sim arms and two joint_position sim arms (UR5e kinematics, with a wrist
    camera), a policy of each space: every episode of a policy ran on an arm of its space,
    all counted, and each mismatched pair was refused before leasing with its one line. The
    joint-space policy is a chunked one (H=4, execute 2) named by its class path, so a lab's
    own policy class is built in the Ray policy worker too."""
    from orchestrator.fleet_config import SimArm
    from orchestrator.simfleet import SimFleet
    from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
    from protocols.loader import load_protocol
    from tests.integration.fleet_support import FAST_PROTOCOL, IMAGE, check_invariants
    from tests.policy_kit import CHUNKED_KIND

    store = sqlite_store
    with store.write() as s:
        register_policy(s, PolicySpec(name="rand-ee", kind="random",
                                      config={"kind": "random", "options": {}}))
        register_policy(s, PolicySpec(name="rand-joint", kind=CHUNKED_KIND, config={
            "kind": CHUNKED_KIND, "options": {"space": "joint_position", "horizon": 4,
                                              "execute_steps": 2, "control_hz": 10.0}}))
        cid = create_campaign(s, name="mixed-sim", loaded=load_protocol(FAST_PROTOCOL),
                              policy_names=["rand-ee", "rand-joint"], trials_per_task=2,
                              seed=1).id
    cams = [{"name": "front", "size": IMAGE}, {"name": "wrist", "size": "64x64"}]
    ee_arms = ("sim-ee-1", "sim-ee-2")
    joint_arms = ("sim-ur5-1", "sim-ur5-2")
    arms = tuple(ArmConfig(name=n, endpoint="tcp://127.0.0.1:*", timeout_ms=1000,
                           sim=SimArm(cameras=[{"name": "front", "size": IMAGE}]))
                 for n in ee_arms) + tuple(
        ArmConfig(name=n, endpoint="tcp://127.0.0.1:*", timeout_ms=1000,
                  sim=SimArm(space="joint_position", cameras=cams)) for n in joint_arms)
    media = tmp_path / "media"
    with SimFleet(0, arms=arms) as fleet:
        cfg = fleet.config().model_copy(update={"lease_s": 30.0})
        runner = FleetRunner(store, cfg, media_dir=str(media))
        with started(runner):
            run_to_done(runner, deadline_s=180)
    with store.read() as s:
        chunk_rows = s.execute(
            select(Step.chunk_id, Step.chunk_index).join(Episode, Episode.id == Step.episode_id)
            .join(Robot, Robot.id == Episode.robot_id).where(Robot.name.in_(joint_arms))
            .where(Episode.counted)).all()
        rows = s.execute(
            select(Robot.name, Episode.counted, Trial.campaign_policy_id)
            .join(Episode, Episode.robot_id == Robot.id).join(Trial, Trial.id == Episode.trial_id)
        ).all()
        policy_of = dict(s.execute(select(CampaignPolicy.id, Policy.name).join(
            Policy, Policy.id == CampaignPolicy.policy_id)).all())
        refused = {e.payload.get("detail") for e in s.scalars(
            select(Event).where(Event.kind == EventKind.SPACE_MISMATCH))}
    ran = {(policy_of[cp], arm) for arm, _, cp in rows}
    assert {arm for p, arm in ran if p == "rand-ee"} <= set(ee_arms), ran
    assert {arm for p, arm in ran if p == "rand-joint"} <= set(joint_arms), ran
    assert {p for p, _ in ran} == {"rand-ee", "rand-joint"}
    assert sum(counted for _, counted, _ in rows) == 16  # 2 policies x 4 tasks x 2 trials
    # rows of H=4 chunks, several chunks per episode (the next one asked for while one runs)
    assert chunk_rows and {i for _, i in chunk_rows} <= {0, 1, 2, 3}
    assert len({c for c, _ in chunk_rows}) > 1
    assert refused == {
        *(f"policy rand-joint emits joint_position[7]; arm {a} accepts ee_delta[7]"
          for a in ee_arms),
        *(f"policy rand-ee emits ee_delta[7]; arm {a} accepts joint_position[7]"
          for a in joint_arms)}, refused
    check_invariants(store, media, [cid])


@pytest.mark.usefixtures("ray_local")
def test_an_arm_waits_for_the_operator_then_runs(sqlite_store, tmp_path: Path) -> None:
    """PrepareResult not ready -> operator_setup_required (with the arm's instructions) ->
    operator_confirmed -> the reset again with operator_confirmed set -> the episode."""
    from orchestrator.store.campaigns import log_event

    store = sqlite_store
    cid = new_campaign(store, "operator", policies=("rand-a",))
    answered: set[int] = set()

    def operator(r: FleetRunner) -> None:
        with store.write() as s:
            for ev in s.scalars(select(Event).where(
                    Event.kind == EventKind.OPERATOR_SETUP_REQUIRED)):
                if ev.id not in answered:
                    answered.add(ev.id)
                    log_event(s, EventKind.OPERATOR_CONFIRMED, actor="ann",
                              robot_id=ev.robot_id)

    with BridgeProcess(tmp_path, driver=f"{HERE}:OperatorDriver") as b:
        runner = FleetRunner(store, _fleet(("lab-1", b)), media_dir=str(tmp_path / "media"))
        with started(runner):
            run_to_done(runner, deadline_s=120, on_tick=operator)
    with store.read() as s:
        prompts = list(s.scalars(select(Event).where(
            Event.kind == EventKind.OPERATOR_SETUP_REQUIRED)))
        eps = list(s.scalars(select(Episode).join(Trial).where(Trial.campaign_id == cid)))
    assert len(prompts) == 4 and len(answered) == 4
    assert all(p.payload["instructions"].startswith("place ") for p in prompts)
    assert all(p.payload["robot"] == "lab-1" for p in prompts)
    assert len(eps) == 4 and all(e.counted for e in eps)
