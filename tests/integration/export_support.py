"""A small campaign with recorded episodes for the export tests, written through the real
queue functions (lease, start, add_steps, complete / abort) and the real recorder (H.264).

Frames are solid colours that encode (episode, frame), so a reader can tell which episode's
which frame it decoded; steps carry distinct actions, states and wall-clock times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orchestrator.faults import AbortCause
from orchestrator.recording import EpisodeRecorder
from orchestrator.step_record import StepRecord
from orchestrator.store import queue
from orchestrator.store.campaigns import PolicySpec, create_campaign, register_policy
from orchestrator.store.db import Store
from orchestrator.store.labels import LabelInput, save_label
from orchestrator.store.models import Campaign
from orchestrator.store.states import CampaignStatus
from protocols.loader import load_protocol, resolve_protocol_path

POLICIES = ("secret-oracle", "secret-random")
HOLDER = "export-test"
WALL0 = 1_800_000_000_000_000_000


@dataclass
class Built:
    campaign: str
    campaign_id: int
    episode_ids: list[int] = field(default_factory=list)  # counted, in id order
    aborted_ids: list[int] = field(default_factory=list)
    steps: dict[int, int] = field(default_factory=dict)  # episode id -> steps
    frames: dict[int, int] = field(default_factory=dict)  # episode id -> video frames


def colour(k: int, i: int, camera: str) -> tuple[int, int, int]:
    """Frame i of the k-th recorded episode (limited-range values survive YUV 4:2:0)."""
    base = (30 + 17 * k) % 180 + 30
    return ((base, 40 + 14 * i, 200 - 9 * i) if camera == "main"
            else (200 - 9 * i, base, 40 + 14 * i))


SIZES = {"main": (48, 64), "wrist": (32, 32)}


def action(k: int, i: int) -> tuple[float, ...]:
    return (0.01 * k, -0.002 * i, 0.003, 0.0, 0.01 * i, -0.01 * k, float(i % 2))


def state(k: int, i: int) -> tuple[float, ...]:
    return (0.1 * k + 0.01 * i, 0.2, -0.01 * i, 0.0, 0.0, 0.5, float(i % 2))


def wall_ns(k: int, i: int) -> int:
    return WALL0 + k * 10**10 + i * 200_000_000 + 1234


def _steps(k: int, n: int) -> list[StepRecord]:
    out = []
    for i in range(n):
        a = action(k, i)
        out.append(StepRecord(
            idx=i, terminate=False, action=a, action_space="ee_delta[7]",
            dx=a[0], dy=a[1], dz=a[2], droll=a[3], dpitch=a[4], dyaw=a[5], gripper=a[6],
            tokens=None, proprio=state(k, i), obs_seq=i, obs_monotonic_ns=i,
            obs_wall_ns=wall_ns(k, i), command_wall_ns=wall_ns(k, i) + 5_000_000,
            obs_age_ms=5.0, inference_ms=20.0 + k, orchestration_ms=1.0, command_ms=0.5,
            late=False, clipped=False, plan=None, chunk_id=i, chunk_index=0,
            chunk_age_ms=5.0))
    return out


def _record(media_dir: Path, name: str, ep: int, k: int, frames: int, fps: float,
            sizes: dict[str, tuple[int, int]]) -> list[dict]:
    with EpisodeRecorder(media_dir, name, ep, fps=fps) as rec:
        for i in range(frames):
            rec.add({cam: np.full((*sizes[cam], 3), colour(k, i, cam), np.uint8)
                     for cam in ("main", "wrist")})
        return [m.to_dict() for m in rec.finish()]


def build_campaign(store: Store, media_dir: Path, *, name: str = "export-c", episodes: int = 6,
                   odd_size_episode: int | None = None) -> Built:
    """Episodes k = 0..episodes-1 with 4 + k steps; episode 1 has one video frame more than
    steps; trial 0 first has an aborted attempt; labels: k=0 two humans who disagree
    (disputed), k=1 a human overriding the sim, k=2 no label at all, others the sim's."""
    loaded = load_protocol(resolve_protocol_path("smoke"))
    with store.write() as s:
        for p in POLICIES:
            register_policy(s, PolicySpec(name=p, kind="random"))
        cid = create_campaign(s, name=name, loaded=loaded, policy_names=list(POLICIES),
                              trials_per_task=1, seed=3).id
        s.get(Campaign, cid).status = CampaignStatus.RUNNING
    built = Built(name, cid)
    with store.read() as s:
        cands = queue.pending_candidates(s, limit=100, campaign_ids=[cid])
    for k, cand in enumerate(cands[:episodes]):
        with store.write() as s:
            (lt,) = queue.lease_trials(s, [cand.trial_id], holder=HOLDER, lease_s=600)
            if k == 0:  # an aborted attempt first: never exported
                bad = queue.start_episode(s, lt.trial_id, holder=HOLDER, robot_id=None)
                queue.add_steps(s, bad, _steps(99, 2))
                queue.abort_episode(s, bad, holder=HOLDER, reason="test abort",
                                    cause=AbortCause.BRIDGE, step_count=2)
                built.aborted_ids.append(bad)
                (lt,) = queue.lease_trials(s, [cand.trial_id], holder=HOLDER, lease_s=600)
            ep = queue.start_episode(s, lt.trial_id, holder=HOLDER, robot_id=None)
        n = 4 + k
        frames = n + 1 if k == 1 else n
        sizes = dict(SIZES)
        if k == odd_size_episode:
            sizes["main"] = (64, 80)
        media = _record(media_dir, name, ep, k, frames, lt.control_hz, sizes)
        with store.write() as s:
            queue.add_steps(s, ep, _steps(k, n))
            queue.complete_episode(s, ep, holder=HOLDER, step_count=n, late_steps=0,
                                   terminated_by="max_steps", media=media,
                                   sim_success=None if k == 2 else k % 2 == 0)
        built.episode_ids.append(ep)
        built.steps[ep], built.frames[ep] = n, frames
        if k == 0:
            save_label(store, LabelInput(ep, "ann", True, 1.0))
            save_label(store, LabelInput(ep, "bob", False, 0.25, "missed_grasp"))
        if k == 1:
            save_label(store, LabelInput(ep, "cyd", True, 0.75, None))
            save_label(store, LabelInput(ep, "ann", True, 1.0, "slow"))
    return built
