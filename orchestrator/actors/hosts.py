"""Which RobotHost runs which arm (the runner's side of orchestrator/actors/robot.py).

`place` is the pure rule: an arm goes to a live host of its own station with room left
(fewest arms first, then the oldest), else to a new host. `HostPool` keeps the hosts, hands
the runner an `ArmHandle` per arm that is called like an actor of its own
(`handle.prepare.remote(scene, key)`), and kills a host once its last arm is released.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.actors.robot import MAX_ARMS_PER_PROCESS, RobotHost, station_resource


@dataclass(frozen=True)
class HostSlot:
    """A live host as the placement rule sees it."""

    host_id: int
    station: str
    arms: int


def place(station: str, hosts: Sequence[HostSlot], per_process: int) -> int | None:
    """The host an arm of `station` joins, or None for a new one."""
    room = [h for h in hosts if h.station == station and h.arms < per_process]
    if not room:
        return None
    return min(room, key=lambda h: (h.arms, h.host_id)).host_id


class _BoundCall:
    """`handle.<method>.remote(*args)` -> `host.<method>.remote(arm_config, *args)`."""

    def __init__(self, method: Any, arm: dict[str, Any]) -> None:
        self._method, self._arm = method, arm

    def remote(self, *args: Any) -> Any:
        return self._method.remote(self._arm, *args)


@dataclass(eq=False)
class ArmHandle:
    """One arm on its host; the runner's `arm.actor`."""

    host: Any  # the RobotHost actor handle
    host_id: int
    arm: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.arm["name"])

    def __getattr__(self, method: str) -> _BoundCall:
        if method.startswith("_"):
            raise AttributeError(method)
        return _BoundCall(getattr(self.host, method), self.arm)


@dataclass
class _Host:
    actor: Any
    station: str
    arms: set[str] = field(default_factory=set)


class HostPool:
    def __init__(self, media_dir: str, arms_per_process: int) -> None:
        if not 1 <= arms_per_process <= MAX_ARMS_PER_PROCESS:
            raise ValueError(f"arms_per_process must be in 1..{MAX_ARMS_PER_PROCESS}, "
                             f"got {arms_per_process}")
        self.media_dir = media_dir
        self.per_process = arms_per_process
        self._hosts: dict[int, _Host] = {}
        self._ids = itertools.count(1)

    def handle(self, arm: dict[str, Any], station: str) -> ArmHandle:
        """A handle for `arm` (fleet.yaml's config of it, as a dict) on a host of its station."""
        slots = [HostSlot(i, h.station, len(h.arms)) for i, h in self._hosts.items()]
        host_id = place(station, slots, self.per_process)
        if host_id is None:
            host_id = next(self._ids)
            actor = RobotHost.options(
                name=f"evalfleet-robots-{station}-{host_id}-{uuid.uuid4().hex[:4]}",
                resources={station_resource(station): 0.001},
            ).remote(self.media_dir)
            self._hosts[host_id] = _Host(actor, station)
        host = self._hosts[host_id]
        host.arms.add(arm["name"])
        return ArmHandle(host.actor, host_id, arm)

    def release(self, handle: ArmHandle) -> None:
        """The runner is done with this arm: its episode is stopped and its sockets closed on
        the host; the host is killed once it runs no arm."""
        import ray

        host = self._hosts.get(handle.host_id)
        if host is None:
            return
        host.arms.discard(handle.name)
        if host.arms:
            handle.detach.remote()
            return
        del self._hosts[handle.host_id]
        ray.kill(host.actor)

    def forget(self, handle: ArmHandle) -> None:
        """The arm's host died: no new arm goes there (its other arms find out on their next
        call, and get a new host then)."""
        host = self._hosts.pop(handle.host_id, None)
        if host is not None:
            host.arms.clear()

    def kill_all(self) -> None:
        import ray

        for host in self._hosts.values():
            ray.kill(host.actor)
        self._hosts.clear()
