"""Baselines without the simulator: instruction parsing, input checks, controller helpers."""

from __future__ import annotations

import numpy as np
import pytest

from policies.base import PolicyInput
from policies.baselines import RandomPolicy, ScriptedOracle, VisionHeuristic
from policies.control import step_towards
from policies.instructions import InstructionError, parse_instruction
from robots.sim.catalog import OBJECTS
from robots.types import ActionSpace


@pytest.mark.parametrize(
    "text,expected",
    [
        ("pick coke can", ("pick", "coke_can", None)),
        ("move 7up can near apple", ("move_near", "7up_can", "apple")),
        ("knock water bottle over", ("knock_over", "water_bottle", None)),
        ("place pepsi can upright", ("place_upright", "pepsi_can", None)),
        ("open the drawer", ("open_drawer", "drawer", None)),
        ("close the drawer", ("close_drawer", "drawer", None)),
        (
            "place rxbar blueberry into the drawer",
            ("place_into_drawer", "rxbar_blueberry", "drawer"),
        ),
        ("pick orange from the drawer", ("pick_from_drawer", "orange", None)),
        ("move apple to the star", ("move_near", "apple", "star_marker")),
        (
            "move the coke can to the person with glasses",
            ("move_near", "coke_can", "person_glasses"),
        ),
    ],
)
def test_parse_instruction(text, expected):
    p = parse_instruction(text, OBJECTS)
    assert (p.skill, p.target, p.destination) == expected


@pytest.mark.parametrize(
    "text",
    [
        "mueve la naranja cerca de la esponja",
        "move the banana to the sum of two plus one",
        "pick the object that is different",
    ],
)
def test_instructions_beyond_the_baselines_words_do_not_parse(text):
    with pytest.raises(InstructionError):
        parse_instruction(text, OBJECTS)


def frame_input(instruction: str = "pick coke can", privileged=None) -> PolicyInput:
    return PolicyInput(
        {"main": np.full((64, 64, 3), 128, np.uint8)},
        (0, 0, 0.25, 0, 0, 0, 1.0),
        instruction,
        privileged,
        arm="a",
    )


def test_oracle_refuses_inputs_without_privileged_state():
    with pytest.raises(ValueError, match="no privileged state"):
        ScriptedOracle().act([frame_input()])


def test_vision_heuristic_holds_with_a_reason_when_it_cannot_parse_or_see():
    v = VisionHeuristic()
    out = v.act([frame_input("mueve la naranja")]).outputs[0]
    assert out.hold_reason and "no known skill" in out.hold_reason
    out = v.act([frame_input("pick coke can")]).outputs[0]  # a grey frame: nothing to see
    assert out.hold_reason and "cannot see the target" in out.hold_reason
    out = v.act([frame_input("pick lime can")]).outputs[0]  # unseen: no remembered appearance
    assert out.hold_reason and "cannot see the target" in out.hold_reason


def test_vision_memory_holds_seen_objects_only():
    v = VisionHeuristic()
    assert "coke_can" in v.memory.labels and "lime_can" not in v.memory.labels
    assert all(OBJECTS[n].seen for n in v.memory.dims)


def test_step_towards_keeps_direction_within_limits():
    a = step_towards((0, 0, 0), (0.2, 0.1, 0.0), ActionSpace(), gripper=1.0)
    assert a.dx == pytest.approx(0.05) and a.dy == pytest.approx(0.025) and a.dz == 0.0


def test_policies_are_batched_across_arms():
    pol = RandomPolicy()
    inputs = [PolicyInput({}, (), "pick apple", arm=f"arm{i}") for i in range(4)]
    outs, _ = pol.act(inputs)
    assert len(outs) == 4 and len({o.action for o in outs}) == 4
