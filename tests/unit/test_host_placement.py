"""Which RobotHost an arm joins (orchestrator.actors.hosts.place, pure)."""

from __future__ import annotations

from orchestrator.actors.hosts import HostSlot, place


def test_a_new_host_when_none_of_the_station_has_room() -> None:
    assert place("a", [], 4) is None
    assert place("a", [HostSlot(1, "a", 4)], 4) is None
    assert place("a", [HostSlot(1, "b", 0)], 4) is None  # never across stations


def test_the_host_with_fewest_arms_then_the_oldest() -> None:
    hosts = [HostSlot(3, "a", 2), HostSlot(1, "a", 3), HostSlot(2, "a", 2)]
    assert place("a", hosts, 4) == 2


def test_one_arm_per_process_isolates_every_arm() -> None:
    assert place("a", [HostSlot(1, "a", 1)], 1) is None


def test_filling_a_station_of_ten_arms_four_per_process() -> None:
    hosts: list[HostSlot] = []
    for _ in range(10):
        hid = place("a", hosts, 4)
        if hid is None:
            hosts.append(HostSlot(len(hosts) + 1, "a", 1))
        else:
            hosts = [HostSlot(h.host_id, h.station, h.arms + (h.host_id == hid)) for h in hosts]
    assert sorted(h.arms for h in hosts) == [2, 4, 4]
