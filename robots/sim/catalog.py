"""The simulated tabletop's catalogue: objects, backgrounds, environments.

Names here are what protocols refer to in scene specs. `seen` marks what the demonstration
data (and the vision heuristic's appearance memory) covers; everything else is unseen.
Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectKind:
    name: str
    shape: str  # can | box | ball | banana | sponge | cup | marker | person
    color: tuple[int, int, int]  # RGB
    size: float  # footprint radius, m
    height: float  # m
    seen: bool
    graspable: bool = True
    uprightable: bool = False  # starts lying down in place_upright tasks


OBJECTS: dict[str, ObjectKind] = {
    o.name: o
    for o in [
        # seen objects (RT-1 style kitchen items)
        ObjectKind("coke_can", "can", (200, 30, 30), 0.03, 0.12, True, uprightable=True),
        ObjectKind("7up_can", "can", (40, 170, 60), 0.03, 0.12, True, uprightable=True),
        ObjectKind("pepsi_can", "can", (30, 60, 190), 0.03, 0.12, True, uprightable=True),
        ObjectKind("apple", "ball", (210, 40, 50), 0.035, 0.07, True),
        ObjectKind("orange", "ball", (240, 140, 20), 0.035, 0.07, True),
        ObjectKind("sponge", "sponge", (240, 220, 60), 0.04, 0.03, True),
        ObjectKind("rxbar_blueberry", "box", (90, 70, 170), 0.035, 0.02, True),
        ObjectKind("water_bottle", "can", (170, 210, 240), 0.03, 0.2, True, uprightable=True),
        ObjectKind("green_cup", "cup", (60, 140, 80), 0.035, 0.09, True, uprightable=True),
        # unseen objects (easy: familiar shapes; hard: new shapes and colours)
        ObjectKind("red_block", "box", (230, 60, 60), 0.03, 0.04, False),
        ObjectKind("blue_ball", "ball", (40, 90, 230), 0.035, 0.07, False),
        ObjectKind("banana", "banana", (250, 225, 50), 0.05, 0.04, False),
        ObjectKind("purple_cup", "cup", (150, 50, 170), 0.035, 0.09, False, uprightable=True),
        ObjectKind("toy_car", "box", (20, 20, 20), 0.045, 0.04, False),
        ObjectKind("cyan_sponge", "sponge", (40, 220, 220), 0.04, 0.03, False),
        ObjectKind("lime_can", "can", (170, 240, 60), 0.03, 0.12, False, uprightable=True),
        # markers for emergent skills (flat, not graspable)
        ObjectKind("star_marker", "marker", (250, 200, 0), 0.04, 0.002, False, graspable=False),
        ObjectKind("circle_marker", "marker", (0, 160, 220), 0.04, 0.002, False, graspable=False),
        ObjectKind("number_1", "marker", (240, 240, 240), 0.04, 0.002, False, graspable=False),
        ObjectKind("number_2", "marker", (235, 235, 235), 0.04, 0.002, False, graspable=False),
        ObjectKind("number_3", "marker", (230, 230, 230), 0.04, 0.002, False, graspable=False),
        ObjectKind("person_glasses", "person", (200, 160, 130), 0.05, 0.002, False, graspable=False),
        ObjectKind("person_hat", "person", (180, 140, 110), 0.05, 0.002, False, graspable=False),
        # the drawer is a fixture, addressed as a destination or target
        ObjectKind("drawer", "drawer", (120, 80, 50), 0.09, 0.10, True, graspable=False),
    ]
}

#: Table textures/colours. Seen backgrounds are those in the demonstrations.
BACKGROUNDS: dict[str, dict] = {
    "wood": {"seen": True, "color": (150, 110, 70), "texture": "grain"},
    "grey_counter": {"seen": True, "color": (140, 140, 140), "texture": "plain"},
    "blue_cloth": {"seen": False, "color": (60, 80, 160), "texture": "weave"},  # easy
    "patterned_tablecloth": {"seen": False, "color": (200, 60, 60), "texture": "checker"},  # hard
    "dark_marble": {"seen": False, "color": (40, 40, 45), "texture": "speckle"},  # hard
}

#: Environments: lighting, camera pose jitter and clutter.
ENVIRONMENTS: dict[str, dict] = {
    "kitchen_a": {"seen": True, "light": 1.0, "camera_jitter": 0.0, "clutter": 0},
    "kitchen_b": {"seen": True, "light": 0.95, "camera_jitter": 0.01, "clutter": 1},
    "office_desk": {"seen": False, "light": 0.8, "camera_jitter": 0.02, "clutter": 2},  # easy
    "dim_lab": {"seen": False, "light": 0.55, "camera_jitter": 0.04, "clutter": 4},  # hard
    "sunlit_room": {"seen": False, "light": 1.35, "camera_jitter": 0.05, "clutter": 5},  # hard
}
