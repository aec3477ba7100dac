"""Camera names in policy/arm matching (robots.spaces.match_pair, PolicyIO.camera_names) and
policies.registry.policy_io filling them from each kind's options, without loading a model."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

from policies.registry import CAMERA_OPTION_DEFAULTS, PolicyConfigError, policy_io
from robots.spaces import (
    RT2_ACTION,
    RT2_IO,
    ArmSpaces,
    CameraRole,
    CameraSpec,
    SpaceMismatch,
    match_pair,
)

FRONT_ONLY = ArmSpaces(RT2_ACTION, (CameraSpec("front", 48, 64),))
MAIN_AND_WRIST = ArmSpaces(RT2_ACTION, (CameraSpec("main", 48, 64),
                                        CameraSpec("wrist", 48, 64, role=CameraRole.WRIST)))


def test_a_policy_reading_a_camera_by_name_needs_the_arm_to_declare_it() -> None:
    io = replace(RT2_IO, camera_names=("main",))
    with pytest.raises(SpaceMismatch) as e:
        match_pair("vis", io, "lab-1", FRONT_ONLY)
    assert str(e.value) == "policy vis reads camera 'main'; arm lab-1 has cameras: front (external)"
    assert "\n" not in str(e.value)
    assert match_pair("vis", io, "sim-1", MAIN_AND_WRIST) == ()
    # a wrist camera read by name is found by its name, whatever its role
    assert match_pair("w", replace(RT2_IO, camera_names=("wrist",)), "sim-1", MAIN_AND_WRIST) == ()


def test_a_policy_that_reads_no_camera_by_name_takes_any_name() -> None:
    assert RT2_IO.camera_names == ()
    assert match_pair("rt2", RT2_IO, "lab-1", FRONT_ONLY) == ()


def test_the_name_check_quotes_odd_camera_names_on_one_line() -> None:
    io = replace(RT2_IO, camera_names=("top\ncam",))
    with pytest.raises(SpaceMismatch) as e:
        match_pair("p", io, "lab-1", FRONT_ONLY)
    assert "\n" not in str(e.value) and "'top\\ncam'" in str(e.value)


@pytest.mark.parametrize("config,names", [
    ({"name": "h", "kind": "vision_heuristic"}, ("main",)),  # VisionOptions.camera default
    ({"name": "h", "kind": "vision_heuristic", "options": {"camera": "front"}}, ("front",)),
    ({"name": "h", "kind": "vision_heuristic", "options": {"camera": ""}}, ()),  # first frame
    ({"name": "v", "kind": "vla", "path": "/nowhere"}, ()),  # unset: the first frame
    ({"name": "v", "kind": "vla", "path": "/nowhere", "options": {"camera": "wrist"}}, ("wrist",)),
    ({"name": "o", "kind": "oracle"}, ()),
    ({"name": "o", "kind": "oracle", "options": {"space": "joint_position"}}, ()),
    ({"name": "r", "kind": "random"}, ()),
])
def test_policy_io_fills_the_camera_a_kind_reads_by_name(config: dict, names: tuple) -> None:
    assert policy_io(config).camera_names == names


def test_policy_io_refuses_a_camera_option_that_is_not_a_name() -> None:
    with pytest.raises(PolicyConfigError, match="policy 'h' .*option camera 5"):
        policy_io({"name": "h", "kind": "vision_heuristic", "options": {"camera": 5}})


def test_vision_heuristic_mismatch_reads_as_one_line_naming_both_sides() -> None:
    io = policy_io({"name": "vis", "kind": "vision_heuristic"})
    with pytest.raises(SpaceMismatch, match=r"^policy vis reads camera 'main'; arm lab-1 has "
                                            r"cameras: front \(external\)$"):
        match_pair("vis", io, "lab-1", FRONT_ONLY)


def _class_field_default(path: Path, cls: str, field: str) -> object:
    """A pydantic option model's field default, read from its source (policies.vla imports
    torch and transformers: too slow for a unit test)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for st in node.body:
                if (isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)
                        and st.target.id == field and st.value is not None):
                    return ast.literal_eval(st.value)
    raise AssertionError(f"{path}: no {cls}.{field} with a default")


def test_the_camera_defaults_table_agrees_with_the_option_models() -> None:
    from policies.vision import VisionOptions

    root = Path(__file__).resolve().parents[2] / "policies"
    assert CAMERA_OPTION_DEFAULTS == {
        "vision_heuristic": VisionOptions.model_fields["camera"].default,
        "vla": _class_field_default(root / "vla.py", "VLAOptions", "camera"),
    }


def test_vision_heuristic_metadata_io_agrees_with_the_registry() -> None:
    from policies.registry import build_policy

    for options in ({}, {"camera": "front"}):
        cfg = {"name": "h", "kind": "vision_heuristic", "options": options}
        assert build_policy(cfg).metadata.io == policy_io(cfg)


def test_policy_io_of_the_chunked_test_class_follows_its_space_option() -> None:
    """policy_io (config only, the class's declared_io) and the built policy's metadata.io
    agree for every space."""
    from policies.registry import build_policy, policy_io
    from tests.policy_kit import CHUNKED_KIND

    for space in ("ee_delta", "joint_position"):
        cfg = {"name": "c", "kind": CHUNKED_KIND, "options": {"space": space}}
        assert policy_io(cfg) == build_policy(cfg).metadata.io, space
