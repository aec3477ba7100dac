"""Protocol schema and loader: the shipped protocols load; bad ones fail with one clear line."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from protocols.loader import (
    SHIPPED_PROTOCOLS_DIR,
    LoadedProtocol,
    ProtocolError,
    load_protocol,
    parse_protocol,
    protocol_checksum,
    resolve_protocol_path,
    scene_for,
    shipped_protocol_paths,
)
from protocols.schema import CATEGORIES_BY_SPLIT, Category, Difficulty, Skill, Split
from robots.sim.catalog import BACKGROUNDS, ENVIRONMENTS, OBJECTS
from robots.types import SceneSpec
from robots.types import Skill as RobotSkill

BAD_DIR = Path(__file__).resolve().parents[1] / "data" / "bad_protocols"
RT2 = SHIPPED_PROTOCOLS_DIR / "rt2_generalization.yaml"
SMOKE = SHIPPED_PROTOCOLS_DIR / "smoke.yaml"

MINIMAL = """\
name: tiny
version: "1"
trials_per_task: 1
tasks:
  - key: pick_apple
    instruction: pick apple
    skill: pick
    split: seen
    category: seen
    scene: {target: apple, objects: [apple]}
    success: {criterion: sim_predicate, description: the apple is held}
"""


# --- shipped protocols ---------------------------------------------------------------------


@pytest.mark.parametrize("path", shipped_protocol_paths(), ids=lambda p: p.name)
def test_shipped_protocols_load(path: Path) -> None:
    loaded = load_protocol(path)
    assert isinstance(loaded, LoadedProtocol)
    assert loaded.path == path
    assert loaded.source_text == path.read_text(encoding="utf-8")
    assert loaded.checksum == protocol_checksum(loaded.source_text)
    assert len(loaded.checksum) == 64
    for task in loaded.protocol.tasks:
        assert task.category in CATEGORIES_BY_SPLIT[task.split]
        assert task.control_hz > 0 and task.max_steps >= 1


def test_both_shipped_protocols_exist() -> None:
    names = {p.name for p in shipped_protocol_paths()}
    assert {"rt2_generalization.yaml", "smoke.yaml"} <= names


def test_rt2_protocol_covers_the_rt2_evaluation() -> None:
    protocol = load_protocol(RT2).protocol
    tasks = protocol.tasks
    assert 25 <= len(tasks) <= 40
    seen_skills = {t.skill for t in tasks if t.category == Category.SEEN}
    assert seen_skills == set(Skill)
    groups = Counter((t.category, t.difficulty) for t in tasks)
    for category in CATEGORIES_BY_SPLIT[Split.UNSEEN]:
        for difficulty in Difficulty:
            assert groups[(category, difficulty)] >= 1, (category, difficulty)
    for category in CATEGORIES_BY_SPLIT[Split.EMERGENT]:
        assert groups[(category, None)] >= 1, category
    unseen_skills = Counter(t.skill for t in tasks if t.split == Split.UNSEEN)
    assert set(unseen_skills) <= {Skill.PICK, Skill.MOVE_NEAR}
    for task in tasks:
        assert 40 <= task.max_steps <= 60
        assert task.control_hz == 5


def test_rt2_protocol_has_the_papers_emergent_examples() -> None:
    protocol = load_protocol(RT2).protocol
    by_category = {c: [t for t in protocol.tasks if t.category == c] for c in Category}
    symbols = by_category[Category.SYMBOL_UNDERSTANDING]
    assert any(t.scene.destination == "star_marker" for t in symbols)
    sums = [t for t in by_category[Category.REASONING] if "two plus one" in t.instruction]
    assert sums and sums[0].scene.target == "banana" and sums[0].scene.destination == "number_3"
    humans = by_category[Category.HUMAN_RECOGNITION]
    assert any(t.scene.target == "coke_can" and t.scene.destination == "person_glasses"
               for t in humans)


def test_rt2_protocol_respects_seen_and_unseen_catalogue_entries() -> None:
    for task in load_protocol(RT2).protocol.tasks:
        scene = task.scene
        objects_seen = [OBJECTS[n].seen for n in scene.all_objects()]
        background_seen = BACKGROUNDS[scene.background]["seen"]
        environment_seen = ENVIRONMENTS[scene.environment]["seen"]
        if task.category == Category.SEEN:
            assert all(objects_seen) and background_seen and environment_seen, task.key
        elif task.category == Category.UNSEEN_OBJECTS:
            assert not OBJECTS[scene.target].seen and background_seen, task.key
        elif task.category == Category.UNSEEN_BACKGROUNDS:
            assert all(objects_seen) and not background_seen, task.key
            expected = {"easy": {"blue_cloth"}, "hard": {"patterned_tablecloth", "dark_marble"}}
            assert scene.background in expected[task.difficulty.value], task.key
        elif task.category == Category.UNSEEN_ENVIRONMENTS:
            assert all(objects_seen) and not environment_seen, task.key
            expected = {"easy": {"office_desk"}, "hard": {"dim_lab", "sunlit_room"}}
            assert scene.environment in expected[task.difficulty.value], task.key


def test_drawer_tasks_need_a_drawer_station() -> None:
    for task in load_protocol(RT2).protocol.tasks:
        if "drawer" in task.skill.value:
            assert "drawer" in task.scene.station_needs, task.key


def test_smoke_protocol_is_small_and_short() -> None:
    protocol = load_protocol(SMOKE).protocol
    assert 4 <= len(protocol.tasks) <= 6
    assert all(t.max_steps <= 40 for t in protocol.tasks)


def test_skill_enum_is_the_robots_skill() -> None:
    assert Skill is RobotSkill
    assert [s.value for s in Skill] == [
        "pick", "move_near", "knock_over", "place_upright",
        "open_drawer", "close_drawer", "place_into_drawer", "pick_from_drawer",
    ]


def test_task_defaults_come_from_the_protocol() -> None:
    text = MINIMAL.replace("trials_per_task: 1", "trials_per_task: 1\ndefault_control_hz: 3\n"
                           "default_max_steps: 17")
    task = parse_protocol(text, "inline.yaml").tasks[0]
    assert (task.control_hz, task.max_steps) == (3, 17)
    own = parse_protocol(MINIMAL.replace("    skill: pick", "    skill: pick\n    max_steps: 9"),
                         "inline.yaml").tasks[0]
    assert own.max_steps == 9


def test_scene_for_builds_the_arms_scene_spec() -> None:
    protocol = load_protocol(RT2).protocol
    task = next(t for t in protocol.tasks if t.skill == Skill.MOVE_NEAR)
    spec = scene_for(task, 1234)
    assert isinstance(spec, SceneSpec)
    assert spec.skill == "move_near" and spec.seed == 1234
    assert spec.target == task.scene.target and spec.destination == task.scene.destination
    assert spec.objects == tuple(task.scene.objects)
    assert spec.instruction == task.instruction
    assert SceneSpec.from_dict(spec.to_dict()) == spec


def test_models_are_frozen() -> None:
    protocol = parse_protocol(MINIMAL, "inline.yaml")
    with pytest.raises(ValidationError, match="frozen"):
        protocol.tasks[0].key = "other"  # type: ignore[misc]


def test_resolve_protocol_path_finds_shipped_protocols_by_name() -> None:
    assert resolve_protocol_path("smoke") == SMOKE
    assert resolve_protocol_path("smoke.yaml") == SMOKE
    with pytest.raises(ProtocolError, match="no shipped protocol"):
        resolve_protocol_path("no_such_protocol")


# --- malformed protocols -------------------------------------------------------------------

# file -> (task key or None, field or None, words the message must contain)
BAD_CASES: dict[str, tuple[str | None, str | None, str]] = {
    "unknown_category.yaml": ("pick_coke", "category", "unknown category 'unseen_things'"),
    "duplicate_key.yaml": ("pick_apple", "key", "duplicate task key 'pick_apple'"),
    "missing_instruction.yaml": ("pick_coke", "instruction", "required field is missing"),
    "trials_zero.yaml": (None, "trials_per_task", "must be >= 1, got 0"),
    "unknown_skill.yaml": ("juggle_coke", "skill", "unknown skill 'juggle'"),
    "split_category_mismatch.yaml": ("move_apple_to_star", "category", "does not belong to split"),
    "missing_difficulty.yaml": ("pick_red_block", "difficulty", "needs a difficulty"),
    "difficulty_on_seen.yaml": ("pick_coke", "difficulty", "is not graded"),
    "unknown_object.yaml": ("pick_teapot", "scene.objects[0]", "unknown object 'teapot'"),
    "target_not_in_objects.yaml": ("pick_coke", "scene.target", "must be listed in scene.objects"),
    "move_near_without_destination.yaml": ("move_coke", "scene.destination", "needs a destination"),
    "drawer_without_station_needs.yaml": ("open_drawer", "scene.station_needs", "'drawer'"),
    "seen_task_with_unseen_object.yaml": ("pick_toy_car", "scene.objects", "toy_car is unseen"),
    "unknown_field.yaml": ("pick_coke", "max_step", "unknown field"),
    "zero_max_steps.yaml": ("pick_coke", "max_steps", "must be >= 1"),
    "no_tasks.yaml": (None, "tasks", "at least 1"),
}


def _error_for(path: Path) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    return info.value


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_protocol_gives_one_line_naming_file_task_and_field(name: str) -> None:
    task_key, field, words = BAD_CASES[name]
    path = BAD_DIR / name
    error = _error_for(path)
    text = str(error)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    assert words in text
    assert (error.task_key, error.field) == (task_key, field)
    if task_key is not None:
        assert f"task '{task_key}': field '{field}': " in text
    else:
        assert f"{path}: field '{field}': " in text
    assert error.line is not None and error.line > 1


def test_every_bad_fixture_is_covered() -> None:
    fixtures = {p.name for p in BAD_DIR.glob("*.yaml")}
    covered = set(BAD_CASES) | {"yaml_syntax.yaml", "duplicate_yaml_key.yaml", "not_a_mapping.yaml"}
    assert fixtures == covered


def test_yaml_syntax_error_names_file_and_line() -> None:
    path = BAD_DIR / "yaml_syntax.yaml"
    error = _error_for(path)
    text = str(error)
    assert "\n" not in text
    assert text.startswith(f"{path}: line 11, column ")
    assert "YAML syntax error" in text
    assert error.line == 11


def test_duplicate_yaml_key_is_refused_not_silently_overwritten() -> None:
    error = _error_for(BAD_DIR / "duplicate_yaml_key.yaml")
    assert "duplicate key 'category'" in str(error) and error.line == 18


def test_top_level_must_be_a_mapping() -> None:
    error = _error_for(BAD_DIR / "not_a_mapping.yaml")
    assert "top level must be a mapping" in str(error)
    with pytest.raises(ProtocolError, match="got empty"):
        parse_protocol("", "empty.yaml")


def test_several_problems_are_all_kept_and_counted() -> None:
    text = MINIMAL.replace("trials_per_task: 1", "trials_per_task: 0").replace(
        "skill: pick", "skill: fly"
    )
    with pytest.raises(ProtocolError) as info:
        parse_protocol(text, "two.yaml")
    error = info.value
    assert len(error.problems) == 2
    assert str(error).endswith("(and 1 more problem(s))")
    assert [p.field for p in error.problems] == ["trials_per_task", "skill"]


def test_task_without_a_key_is_named_by_position() -> None:
    text = MINIMAL.replace("  - key: pick_apple\n", "  - ").replace(
        "    instruction", "instruction", 1
    )
    with pytest.raises(ProtocolError) as info:
        parse_protocol(text, "nokey.yaml")
    assert "task '#1': field 'key': required field is missing" in str(info.value)


def test_unreadable_and_non_utf8_files_are_protocol_errors(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="cannot read file"):
        load_protocol(tmp_path / "missing.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(MINIMAL.replace("pick apple", "pick pomme \xe9").encode("latin-1"))
    with pytest.raises(ProtocolError, match="not UTF-8"):
        load_protocol(latin1)


def test_protocol_error_survives_pickling() -> None:
    error = _error_for(BAD_DIR / "unknown_skill.yaml")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.problems == error.problems
    assert isinstance(copy, ValueError)


def test_checksum_changes_with_content(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(MINIMAL, encoding="utf-8")
    second.write_text(MINIMAL.replace("pick apple", "pick the apple"), encoding="utf-8")
    assert load_protocol(first).checksum != load_protocol(second).checksum
    assert load_protocol(first).checksum == load_protocol(first).checksum
