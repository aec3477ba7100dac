"""The episode loop with action chunks on a real bridge process (no Ray): a chunked policy
(H=16, execute 8) at 15 Hz on the sim, served over the policy data plane, with a 300 ms
inference; one round trip per step; an e-stopped episode keeps its steps and video."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.actors.dataplane import PolicyClient, PolicyServer
from orchestrator.episode import EpisodeSpec, PolicyReply, run_episode
from orchestrator.recording import verify_media
from orchestrator.store import queue
from orchestrator.store.db import Store
from orchestrator.store.models import Step
from orchestrator.store.states import EpisodeStatus
from policies.base import Policy, PolicyInput
from tests.policy_kit import ChunkedPolicy
from robots.client import BridgeClient
from robots.types import SceneSpec
from tests.integration.fakes import BridgeProcess
from tests.support import make_campaign

HZ = 15.0
SCENE = SceneSpec("pick", "coke_can", ("coke_can",), seed=3)


def sim15(image_size: tuple[int, int] = (64, 64)):  # type: ignore[no-untyped-def]
    """The bridge's driver factory: the sim at 15 Hz with an external and a wrist camera."""
    from robots.drivers.sim import SimDriver, SimOptions
    from robots.spaces import CameraSpec

    h, w = image_size
    return SimDriver(SimOptions(cameras=(CameraSpec("main", h, w), CameraSpec("wrist", h, w)),
                                control_hz=HZ))


def sim15_joints(image_size: tuple[int, int] = (64, 64)):  # type: ignore[no-untyped-def]
    """The sim's joint-space arm (UR5e joint_position[7]) at 15 Hz, one external camera."""
    from robots.drivers.sim import SimDriver, SimOptions
    from robots.spaces import CameraSpec, SpaceKind

    h, w = image_size
    return SimDriver(SimOptions(cameras=(CameraSpec("main", h, w),), control_hz=HZ,
                                space=SpaceKind.JOINT_POSITION))


class _Served:
    """A policy behind the real data plane, called as the RobotActor calls it."""

    def __init__(self, policy: Policy) -> None:
        self.server = PolicyServer(policy, max_batch=4, batch_wait_s=0.0)
        self.server.start()
        self.client = PolicyClient(self.server.endpoint, self.server.instance, timeout_s=10)
        self.calls = 0

    def __call__(self, inp: PolicyInput) -> PolicyReply:
        self.calls += 1
        r = self.client.act(inp)
        out = r.output
        tokens = " ".join(map(str, out.tokens)) if out.tokens is not None else None
        return PolicyReply(out.action, tokens, out.plan, r.inference_s, r.inference_s,
                           out.hold_reason, out.chunk)

    def close(self) -> None:
        self.client.close()
        self.server.stop()


@pytest.fixture
def sim_bridge(tmp_path: Path) -> Iterator[BridgeProcess]:
    with BridgeProcess(tmp_path, driver="tests.integration.test_episode_chunks:sim15",
                       watchdog_ms=2000, max_command_age_ms=2000) as b:
        yield b


def _spec(steps: int, policy: ChunkedPolicy, record: bool = True) -> EpisodeSpec:
    return EpisodeSpec(episode_id=1, campaign="chunks", instruction="pick coke can",
                       max_steps=steps, control_hz=HZ, needs_privileged=False, timeout_s=60,
                       record=record, chunking=policy.metadata.chunking)


def test_chunked_policy_at_15hz_with_300ms_inference_never_waits_for_the_next_chunk(
        sim_bridge: BridgeProcess, tmp_path: Path, sqlite_store: Store) -> None:
    policy = ChunkedPolicy({"horizon": 16, "execute_steps": 8, "inference_ms": 300,
                            "control_hz": HZ})
    served = _Served(policy)
    try:
        with BridgeClient(sim_bridge.endpoint, timeout_ms=3000) as c:
            c.hello()
            assert c.reset(SCENE, "ep-1").ready
            result = run_episode(c, served, _spec(48, policy), arm="arm-1",
                                 media_dir=tmp_path / "media")
    finally:
        served.close()
    assert result.status == EpisodeStatus.RECORDED, result.reason
    steps = result.steps
    assert [s.idx for s in steps] == list(range(48))
    # one query per chunk, not per step: 48 steps from a handful of chunks
    ids = [s.chunk_id for s in steps]
    assert ids == sorted(ids) and len(set(ids)) <= served.calls <= 48 // 8 + 2
    runs = Counter(ids)
    # the overlap works: after the first chunk, every chunk took over on time and ran exactly
    # execute_steps (a late chunk would have made its predecessor run longer) ...
    assert all(runs[i] == 8 for i in sorted(runs)[:-1]), runs
    # ... and no step after the first waited for a chunk (the first waits for the first one)
    assert [s.idx for s in steps if s.late] in ([], [0])
    # time-aligned rows: a chunk computed ahead starts at the row for the step it runs
    for s in steps:
        assert 0 <= s.chunk_index < 16
        assert s.action_space == "ee_delta[7]" and len(s.action) == 7
        assert (s.dx, s.dy, s.dz, s.droll, s.dpitch, s.dyaw, s.gripper) == s.action  # applied
    assert steps[0].chunk_index == 0 and steps[8].chunk_index > 0
    assert all(s.chunk_age_ms >= s.obs_age_ms for s in steps)
    # one round trip per step: every step's observation came with the previous act's reply
    seqs = [s.obs_seq for s in steps]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # two cameras, one MP4 each, every step's frame
    assert sorted(m.camera for m in result.media) == ["main", "wrist"]
    assert all(m.frames == 48 and verify_media(tmp_path / "media", m.to_dict())
               for m in result.media)
    # and into the store, every column from the record
    camp = make_campaign(sqlite_store, name="chunks")
    with sqlite_store.write() as s:
        (leased,) = queue.lease_trials(s, [queue.pending_candidates(s, limit=1)[0].trial_id],
                                       holder="t", lease_s=60)
        ep = queue.start_episode(s, leased.trial_id, holder="t", robot_id=None)
        assert queue.add_steps(s, ep, steps) == 48
    with sqlite_store.read() as s:
        rows = s.query(Step).filter(Step.episode_id == ep).order_by(Step.idx).all()
        back = [(r.chunk_id, r.chunk_index, r.action, r.action_space, r.dz) for r in rows]
    assert back == [(x.chunk_id, x.chunk_index, list(x.action), x.action_space, x.dz)
                    for x in steps]
    assert camp is not None


def test_single_step_policy_is_a_chunk_of_one_per_step(sim_bridge: BridgeProcess,
                                                       tmp_path: Path) -> None:
    policy = ChunkedPolicy({"horizon": 1, "execute_steps": 1, "control_hz": HZ})
    served = _Served(policy)
    try:
        with BridgeClient(sim_bridge.endpoint, timeout_ms=3000) as c:
            c.hello()
            assert c.reset(SCENE, "ep-1").ready
            result = run_episode(c, served, _spec(6, policy, record=False), arm="arm-1",
                                 media_dir=tmp_path)
    finally:
        served.close()
    assert result.status == EpisodeStatus.RECORDED, result.reason
    assert [(s.chunk_id, s.chunk_index) for s in result.steps] == [(i, 0) for i in range(6)]
    assert served.calls == 6


def test_estopped_episode_keeps_its_steps_and_video(sim_bridge: BridgeProcess,
                                                    tmp_path: Path) -> None:
    policy = ChunkedPolicy({"horizon": 1, "execute_steps": 1, "control_hz": HZ})
    served = _Served(policy)
    with BridgeClient(sim_bridge.endpoint, timeout_ms=3000, name="operator") as op:

        def stop_after_13(inp: PolicyInput) -> PolicyReply:
            if served.calls == 13:  # 13 acts applied: the operator hits the e-stop
                op.estop("test")
            return served(inp)

        try:
            with BridgeClient(sim_bridge.endpoint, timeout_ms=3000) as c:
                c.hello()
                assert c.reset(SCENE, "ep-1").ready
                result = run_episode(c, stop_after_13, _spec(40, policy), arm="arm-1",
                                     media_dir=tmp_path / "media")
        finally:
            served.close()
    assert result.status == EpisodeStatus.ABORTED and result.fault == "estop", result.reason
    assert [s.idx for s in result.steps] == list(range(13))
    assert sorted(m.camera for m in result.media) == ["main", "wrist"]
    assert all(m.frames == 13 and verify_media(tmp_path / "media", m.to_dict())
               for m in result.media)


def test_a_joint_space_step_stores_its_vector_and_null_ee_columns(store: Store) -> None:
    from orchestrator.step_record import StepRecord, ee_columns

    make_campaign(store, name="joints")
    vec = (0.1, -0.2, 0.3, 0.0, 0.5, -0.6, 1.0)
    rec = StepRecord(
        idx=0, terminate=False, action=vec, action_space="joint_position[7]",
        **dict(zip(("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
                   ee_columns("joint_position[7]", vec), strict=True)),
        tokens=None, proprio=(0.0,) * 13, obs_seq=1, obs_monotonic_ns=2, obs_wall_ns=3,
        command_wall_ns=4, obs_age_ms=1.0, inference_ms=2.0, orchestration_ms=0.5,
        command_ms=1.5, late=False, clipped=True, plan=None, chunk_id=3, chunk_index=5,
        chunk_age_ms=250.0)
    with store.write() as s:
        (leased,) = queue.lease_trials(s, [queue.pending_candidates(s, limit=1)[0].trial_id],
                                       holder="t", lease_s=60)
        ep = queue.start_episode(s, leased.trial_id, holder="t", robot_id=None)
        queue.add_steps(s, ep, [rec])
    with store.read() as s:
        row = s.get(Step, (ep, 0))
        assert row is not None
        assert row.action == list(vec) and row.action_space == "joint_position[7]"
        assert (row.dx, row.gripper) == (None, None)
        assert (row.chunk_id, row.chunk_index, row.chunk_age_ms) == (3, 5, 250.0)


def test_joint_space_chunks_record_the_full_vector_and_null_ee_columns(tmp_path: Path) -> None:
    policy = ChunkedPolicy({"horizon": 8, "execute_steps": 4, "inference_ms": 50,
                            "control_hz": HZ, "space": "joint_position"})
    served = _Served(policy)
    try:
        with BridgeProcess(tmp_path, driver="tests.integration.test_episode_chunks:sim15_joints",
                           watchdog_ms=2000, max_command_age_ms=2000) as b, \
                BridgeClient(b.endpoint, timeout_ms=3000) as c:
            c.hello()
            assert c.reset(SCENE, "ep-1").ready
            result = run_episode(c, served, _spec(16, policy, record=False), arm="arm-1",
                                 media_dir=tmp_path)
    finally:
        served.close()
    assert result.status == EpisodeStatus.RECORDED, result.reason
    assert len(result.steps) == 16
    for s in result.steps:
        assert s.action_space == "joint_position[7]" and len(s.action) == 7
        assert (s.dx, s.dy, s.dz, s.droll, s.dpitch, s.dyaw, s.gripper) == (None,) * 7
        assert s.action[6] == 1.0
    assert len({s.chunk_id for s in result.steps}) >= 4
