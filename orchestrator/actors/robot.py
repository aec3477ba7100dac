"""RobotHost: the Ray actor that runs the arms of one station, up to `arms_per_process` of them
in one process (fleet.yaml; orchestrator/actors/hosts.py places arms on hosts).

Each arm is an ArmRuntime (orchestrator/actors/arm_runtime.py) keyed by its name. A host is
placed by the custom resource of its station, so on a cluster it runs on the node beside its
arms. Threaded (max_concurrency): each arm's episode runs on a thread of its own, and
`estop` / `stop_episode` / `hello` answer while episodes run.

Why several arms per process: every Ray actor process costs CPU while idle (Ray's core wakes
its main thread every 10 ms, about 7 ms of CPU per second per process here; BENCHMARKS.md,
"Action chunks"), more than an arm's episode loop costs at 15 Hz. The price is shared fate: a
host that dies or is killed aborts the episodes of all its arms (each is re-queued, not
counted, with cause `robot_actor`), so `arms_per_process: 1` restores one process per arm.

Every call names its arm by its config (a plain dict, as fleet.yaml spells it): the host
builds the arm's runtime on first use, whatever call comes first (a threaded actor does not
run calls in the order they were sent).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import ray

from orchestrator.actors.arm_runtime import ArmRuntime
from orchestrator.arm_info import ArmInfo, PrepareResult
from orchestrator.episode import EpisodeResult, EpisodeSpec
from robots.types import SceneSpec

#: threads per arm: an episode (or a reset) plus a stop, an e-stop and a probe
CALLS_PER_ARM = 4
MAX_ARMS_PER_PROCESS = 16


def station_resource(station: str) -> str:
    return f"station:{station}"


@ray.remote(num_cpus=0, max_concurrency=CALLS_PER_ARM * MAX_ARMS_PER_PROCESS, max_restarts=0)
class RobotHost:
    def __init__(self, media_dir: str) -> None:
        self.media_dir = Path(media_dir)
        self._arms: dict[str, ArmRuntime] = {}
        self._lock = threading.Lock()

    def _arm(self, arm: dict[str, Any]) -> ArmRuntime:
        with self._lock:
            rt = self._arms.get(arm["name"])
            if rt is None:
                if len(self._arms) >= MAX_ARMS_PER_PROCESS:
                    raise RuntimeError(f"robot host is full ({MAX_ARMS_PER_PROCESS} arms): "
                                       f"cannot take arm {arm['name']}")
                rt = self._arms[arm["name"]] = ArmRuntime(arm, str(self.media_dir))
            return rt

    def hello(self, arm: dict[str, Any]) -> ArmInfo:
        return self._arm(arm).hello()

    def prepare(self, arm: dict[str, Any], scene: SceneSpec, episode_key: str) -> PrepareResult:
        return self._arm(arm).prepare(scene, episode_key)

    def run_episode(self, arm: dict[str, Any], es: EpisodeSpec, worker: Any) -> EpisodeResult:
        return self._arm(arm).run_episode(es, worker)

    def media_problem(self, arm: dict[str, Any], folder: str) -> str | None:
        return self._arm(arm).media_problem(folder)

    def stop_episode(self, arm: dict[str, Any]) -> None:
        with self._lock:
            rt = self._arms.get(arm["name"])
        if rt is not None:  # nothing runs on an arm the host never saw
            rt.stop_episode()

    def estop(self, arm: dict[str, Any], reason: str = "operator") -> bool:
        return self._arm(arm).estop(reason)

    def detach(self, arm: dict[str, Any]) -> int:
        """Stop the arm's episode, close its sockets and forget it; the arms left here."""
        with self._lock:
            rt = self._arms.pop(arm["name"], None)
            left = len(self._arms)
        if rt is not None:
            rt.stop_episode()
            rt.close()
        return left
