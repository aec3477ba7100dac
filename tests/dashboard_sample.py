"""A populated store for demos, screenshots and the dashboard's tests: campaigns whose episodes
ran in the simulator (real H.264 videos, steps with latencies, sim labels), human labels from a
few evaluators (with disagreements), robots, an operator prompt and safety events. Test
scaffolding: it lives in tests/, not in the shipped `dashboard` package.

    .venv/bin/python -m tests.dashboard_sample    # into $EVALFLEET_HOME (migrates first)

Episodes go through the real queue functions (lease, start, add_steps, complete), as the
orchestrator writes them. Without robots.sim / policies, frames are synthetic.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select

from orchestrator.recording import EpisodeRecorder
from orchestrator.store import queue
from orchestrator.store.campaigns import PolicySpec, create_campaign, log_event, register_policy
from orchestrator.store.db import Store
from orchestrator.store.labels import LabelInput, save_label
from orchestrator.store.models import Campaign, Episode, Robot, utcnow
from orchestrator.store.states import CampaignStatus, EventKind
from protocols.loader import load_protocol, resolve_protocol_path, scene_for

ROBOTS = (("arm-1", "station-a"), ("arm-2", "station-b"))


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    protocol: str = "smoke"
    policies: tuple[str, ...] = ("oracle", "random")
    trials: int = 1
    episodes: int | None = None  # run this many of its trials (None: all)


@dataclass(frozen=True)
class Sample:
    campaign_ids: tuple[int, ...]
    episode_ids: tuple[int, ...]
    robots: dict[str, int] = field(default_factory=dict)


def _robots(store: Store) -> dict[str, int]:
    ids = {}
    with store.write() as s:
        for i, (name, station) in enumerate(ROBOTS):
            row = s.scalar(select(Robot).where(Robot.name == name))
            if row is None:
                row = Robot(name=name, endpoint=f"tcp://192.0.2.{11 + i}:5555",  # TEST-NET-1
                            station=station)
                s.add(row)
            row.status, row.last_heartbeat = ("online", utcnow()) if i == 0 else ("busy", utcnow())
            row.capabilities = {"driver": "sim", "cameras": ["main", "wrist"], "control_hz": 5.0}
            s.flush()
            ids[name] = row.id
    return ids


class _Runner:
    """Runs one episode in the simulator (scripted oracle, or noisy random actions)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        try:
            from policies.base import PolicyInput
            from policies.oracle import ScriptedOracle
            from robots.drivers.base import CameraSpec
            from robots.drivers.sim import SimDriver

            self._sim = (SimDriver, CameraSpec, ScriptedOracle, PolicyInput)
        except Exception:  # noqa: BLE001 - the sim is optional here: fall back to synthetic frames
            self._sim = None

    def run(self, task, seed: int, good: bool, max_steps: int):
        if self._sim is not None:
            try:
                return self._simulate(task, seed, good, max_steps)
            except Exception as e:  # noqa: BLE001 - demo data: say so, then use synthetic frames
                warnings.warn(f"sample data: the simulator failed ({e!r}); using synthetic "
                              "frames", stacklevel=2)
                self._sim = None
        return self._synthetic(seed, good, max_steps)

    def _simulate(self, task, seed: int, good: bool, max_steps: int):
        sim_driver, camera_spec, oracle_cls, policy_input = self._sim
        d = sim_driver(cameras=(camera_spec("main", 192, 256), camera_spec("wrist", 96, 96)))
        d.connect()
        d.reset(scene_for(task, seed))
        oracle = oracle_cls({"noise": 0.004 if good else 0.0, "seed": seed})
        oracle.reset("arm", task.instruction)
        frames, actions, ok = [], [], False
        for _ in range(max_steps):
            ob = d.observe()
            frames.append(ob.frames)
            if ob.sim_success:
                ok = True
                break
            if good:
                out = oracle.act([policy_input(ob.frames, ob.proprio, task.instruction,
                                               d.privileged_state(), "arm")]).outputs[0]
                action, plan = out.action, out.plan
            else:
                from robots.types import Action

                v = self.rng.normal(0, 0.02, 6)
                action = Action(False, *v[:3], *(v[3:] * 2), float(self.rng.random() > 0.3))
                plan = None
            if action.terminate:
                break
            d.apply(action)
            actions.append((action, plan))
        d.close()
        return frames, actions, ok

    def _synthetic(self, seed: int, good: bool, max_steps: int):
        from robots.types import Action

        n = max_steps // 2
        frames, actions = [], []
        for i in range(n + 1):
            img = np.full((192, 256, 3), (60 + seed % 80, 90, 120), np.uint8)
            x = 20 + i * 8
            img[80:120, x:x + 30] = (220, 60, 40)
            frames.append({"main": img, "wrist": img[::2, ::2].copy()})
            if i < n:
                actions.append((Action(False, 0.01, 0, -0.005, 0, 0, 0, float(i < n // 2)), None))
        return frames, actions, good and self.rng.random() < 0.8


def _steps(ep: int, actions, rng: random.Random) -> list[dict]:
    rows = []
    for i, (a, plan) in enumerate(actions):
        inference = rng.uniform(18, 40)
        rows.append({
            "episode_id": ep, "idx": i, "terminate": False, "dx": a.dx, "dy": a.dy, "dz": a.dz,
            "droll": a.droll, "dpitch": a.dpitch, "dyaw": a.dyaw, "gripper": a.gripper,
            "tokens": None, "proprio": [0.0] * 7, "obs_seq": i, "obs_age_ms": rng.uniform(2, 8),
            "inference_ms": inference, "orchestration_ms": rng.uniform(0.5, 2.5),
            "command_ms": rng.uniform(0.3, 1.5), "late": inference > 38,
            "plan": plan if plan else (f"Plan: step {i // 5 + 1}" if i % 5 == 0 else None),
        })
    return rows


def populate(store: Store, media_dir: Path, specs: Sequence[CampaignSpec] = (
        CampaignSpec("demo-a"),), *, evaluators: Sequence[str] = ("ann", "bob", "cyd"),
        label_share: float = 0.7, seed: int = 0) -> Sample:
    rng = random.Random(seed)
    robots = _robots(store)
    running: int | None = None
    runner = _Runner(seed)
    campaign_ids, episode_ids = [], []
    for spec in specs:
        loaded = load_protocol(resolve_protocol_path(spec.protocol))
        tasks = {t.key: t for t in loaded.protocol.tasks}
        with store.write() as s:
            for p in spec.policies:
                register_policy(s, PolicySpec(name=p, kind="oracle" if p == spec.policies[0]
                                              else "random"))
            cid = create_campaign(s, name=spec.name, loaded=loaded, policy_names=spec.policies,
                                  trials_per_task=spec.trials, seed=seed).id
            s.get(Campaign, cid).status = CampaignStatus.RUNNING
        campaign_ids.append(cid)
        with store.read() as s:
            cands = queue.pending_candidates(s, limit=10_000, campaign_ids=[cid])
        for k, cand in enumerate(cands[: spec.episodes]):
            robot = ROBOTS[k % len(ROBOTS)][0]
            with store.write() as s:
                (lt,) = queue.lease_trials(s, [cand.trial_id], holder="sample", lease_s=600)
                ep = queue.start_episode(s, lt.trial_id, holder="sample", robot_id=robots[robot])
            good = cand.policy_name == spec.policies[0]
            frames, actions, ok = runner.run(tasks[lt.task_key], lt.scene_seed, good,
                                             min(lt.max_steps, 30))
            with EpisodeRecorder(media_dir, spec.name, ep, fps=lt.control_hz) as rec:
                for f in frames:
                    rec.add(f)
                media = [m.to_dict() for m in rec.finish()]
            ended = utcnow() - timedelta(minutes=7 * (len(cands) - k))
            with store.write() as s:
                queue.add_step_rows(s, _steps(ep, actions, rng))
                queue.complete_episode(
                    s, ep, holder="sample", step_count=len(actions), late_steps=0,
                    terminated_by="success" if ok else "max_steps", media=media, sim_success=ok,
                    now=ended)
                s.get(Episode, ep).started_at = ended - timedelta(
                    seconds=len(actions) / lt.control_hz + 0.4)
            episode_ids.append(ep)
            if rng.random() < label_share and evaluators:
                for who in evaluators[: rng.randint(1, len(evaluators))]:
                    verdict = ok if rng.random() < 0.85 else not ok
                    save_label(store, LabelInput(ep, who, verdict, 1.0 if verdict else
                                                 round(rng.random(), 2),
                                                 None if verdict else "missed_grasp"))
    with store.write() as s:
        for cid in campaign_ids:  # one episode left running (arm-2 busy), else the campaign is done
            left = queue.pending_candidates(s, limit=1, campaign_ids=[cid])
            if left and running is None:
                (lt,) = queue.lease_trials(s, [left[0].trial_id], holder="sample", lease_s=600)
                running = queue.start_episode(s, lt.trial_id, holder="sample",
                                              robot_id=robots["arm-2"])
            elif not left:
                s.get(Campaign, cid).status = CampaignStatus.DONE
        log_event(s, EventKind.ROBOT_ESTOPPED, robot_id=robots["arm-1"], robot="arm-1",
                  reason="object fell off the table")
        log_event(s, EventKind.ESTOP_REARMED, actor="ann", robot_id=robots["arm-1"],
                  robot="arm-1")
        log_event(s, EventKind.OPERATOR_SETUP_REQUIRED, robot_id=robots["arm-2"],
                  campaign_id=campaign_ids[0], robot="arm-2", trial_id=1,
                  instructions="Place the coke can and an apple on the blue cloth, "
                               "15 cm in front of the gripper.")
    return Sample(tuple(campaign_ids), tuple(episode_ids), robots)


def main() -> None:  # pragma: no cover - a convenience for demos
    from orchestrator.config import get_settings
    from orchestrator.store import migrate

    settings = get_settings()
    store = Store.open(settings.resolved_database_url, check_schema=False)
    migrate.upgrade(store.engine)
    with store:
        out = populate(store, settings.media_dir, (
            CampaignSpec("rt2-oracle-vs-random", "rt2_generalization", trials=1, episodes=50),
            CampaignSpec("smoke-check", "smoke", trials=2)))
    print(f"sample data: campaigns {out.campaign_ids}, {len(out.episode_ids)} episodes "
          f"in {settings.resolved_database_url}")


if __name__ == "__main__":
    main()
