"""Pydantic models of a protocol YAML file: tasks over the RT-2 generalization categories.

Validation happens here (types, ranges, catalogue names, split/category/difficulty
consistency, skill-specific scene rules); turning failures into one-line messages naming
file, task and field is the loader's job (`protocols.loader`).

Cross-field rules raise `PydanticCustomError("protocol_rule", message, {"field": path})`:
`path` is the dotted field (relative to the model that raised) the problem belongs to, so
the loader can name it even though pydantic reports the error at the model's location.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from robots.sim.catalog import BACKGROUNDS, ENVIRONMENTS, OBJECTS
from robots.types import Skill

__all__ = [
    "CATEGORIES_BY_SPLIT",
    "GRADED_CATEGORIES",
    "RULE_ERROR_TYPE",
    "Category",
    "Difficulty",
    "Protocol",
    "Scene",
    "Skill",
    "Split",
    "SuccessCriterion",
    "SuccessSpec",
    "Task",
]

#: Error type of cross-field rule violations; ctx["field"] holds the dotted field path.
RULE_ERROR_TYPE = "protocol_rule"


class Split(StrEnum):
    SEEN = "seen"
    UNSEEN = "unseen"
    EMERGENT = "emergent"


class Category(StrEnum):
    """RT-2 generalization categories, in the order the paper reports them."""

    SEEN = "seen"
    UNSEEN_OBJECTS = "unseen_objects"
    UNSEEN_BACKGROUNDS = "unseen_backgrounds"
    UNSEEN_ENVIRONMENTS = "unseen_environments"
    SYMBOL_UNDERSTANDING = "symbol_understanding"
    REASONING = "reasoning"
    HUMAN_RECOGNITION = "human_recognition"


class Difficulty(StrEnum):
    EASY = "easy"
    HARD = "hard"


class SuccessCriterion(StrEnum):
    SIM_PREDICATE = "sim_predicate"  # the simulator's predicate decides (humans may override)
    HUMAN = "human"  # only a human evaluator's label decides


CATEGORIES_BY_SPLIT: dict[Split, tuple[Category, ...]] = {
    Split.SEEN: (Category.SEEN,),
    Split.UNSEEN: (
        Category.UNSEEN_OBJECTS,
        Category.UNSEEN_BACKGROUNDS,
        Category.UNSEEN_ENVIRONMENTS,
    ),
    Split.EMERGENT: (
        Category.SYMBOL_UNDERSTANDING,
        Category.REASONING,
        Category.HUMAN_RECOGNITION,
    ),
}

#: Categories whose tasks are graded easy/hard (and only these).
GRADED_CATEGORIES: tuple[Category, ...] = CATEGORIES_BY_SPLIT[Split.UNSEEN]

DRAWER_SKILLS = frozenset(
    {Skill.OPEN_DRAWER, Skill.CLOSE_DRAWER, Skill.PLACE_INTO_DRAWER, Skill.PICK_FROM_DRAWER}
)
SKILLS_NEEDING_DESTINATION = frozenset({Skill.MOVE_NEAR, Skill.PLACE_INTO_DRAWER})
SKILLS_MOVING_TARGET = frozenset(
    {Skill.PICK, Skill.MOVE_NEAR, Skill.KNOCK_OVER, Skill.PLACE_UPRIGHT,
     Skill.PLACE_INTO_DRAWER, Skill.PICK_FROM_DRAWER}
)
DRAWER = "drawer"

_SLUG_PATTERN = r"^[a-z0-9][a-z0-9_\-]*$"
Slug = Annotated[str, StringConstraints(pattern=_SLUG_PATTERN, max_length=120)]
NonEmptyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def rule_error(field: str, message: str) -> PydanticCustomError:
    """A cross-field rule violation attributed to `field` (dotted path)."""
    return PydanticCustomError(RULE_ERROR_TYPE, message, {"field": field})


def _choices(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def _enum_parser(enum_cls: type[StrEnum], what: str):
    allowed = [member.value for member in enum_cls]

    def parse(value: Any) -> Any:
        if isinstance(value, enum_cls):
            return value
        if isinstance(value, str) and value in allowed:
            return enum_cls(value)
        raise PydanticCustomError(
            f"unknown_{what}",
            "unknown {what} {value} (expected one of: {allowed})",
            {"what": what, "value": repr(value), "allowed": _choices(allowed)},
        )

    return BeforeValidator(parse)


SkillField = Annotated[Skill, _enum_parser(Skill, "skill")]
SplitField = Annotated[Split, _enum_parser(Split, "split")]
CategoryField = Annotated[Category, _enum_parser(Category, "category")]
DifficultyField = Annotated[Difficulty, _enum_parser(Difficulty, "difficulty")]
CriterionField = Annotated[SuccessCriterion, _enum_parser(SuccessCriterion, "success criterion")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_catalog_name(field: str, name: str, catalog: dict, what: str) -> None:
    if name not in catalog:
        raise rule_error(
            field,
            f"unknown {what} {name!r} (known: {_choices(catalog)}; "
            f"new names must be added to robots/sim/catalog.py first)",
        )


def _check_no_duplicates(field: str, names: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise rule_error(field, f"{name!r} is listed twice")
        seen.add(name)


class Scene(_Model):
    """What is on the table: names refer to robots/sim/catalog.py."""

    target: str
    objects: tuple[str, ...] = Field(min_length=1)
    destination: str | None = None
    distractors: tuple[str, ...] = ()
    background: str = "wood"
    environment: str = "kitchen_a"
    station_needs: tuple[Slug, ...] = ()

    @model_validator(mode="after")
    def _check_names(self) -> Scene:
        for i, name in enumerate(self.objects):
            _check_catalog_name(f"objects.{i}", name, OBJECTS, "object")
        for i, name in enumerate(self.distractors):
            _check_catalog_name(f"distractors.{i}", name, OBJECTS, "object")
        _check_catalog_name("background", self.background, BACKGROUNDS, "background")
        _check_catalog_name("environment", self.environment, ENVIRONMENTS, "environment")
        _check_no_duplicates("objects", self.objects)
        _check_no_duplicates("distractors", self.distractors)
        _check_no_duplicates("station_needs", self.station_needs)
        if self.target not in self.objects:
            raise rule_error(
                "target", f"target {self.target!r} must be listed in scene.objects "
                f"(objects: {_choices(self.objects)})"
            )
        if self.destination is not None and self.destination not in self.objects:
            raise rule_error(
                "destination", f"destination {self.destination!r} must be listed in "
                f"scene.objects (objects: {_choices(self.objects)})"
            )
        if self.destination == self.target:
            raise rule_error("destination", "destination must differ from the target")
        for i, name in enumerate(self.distractors):
            if name in self.objects:
                raise rule_error(
                    f"distractors.{i}", f"{name!r} is already in scene.objects; "
                    "a distractor must be an extra object"
                )
        return self

    def all_objects(self) -> tuple[str, ...]:
        return self.objects + self.distractors


class SuccessSpec(_Model):
    criterion: CriterionField
    description: NonEmptyText


class Task(_Model):
    key: Slug
    instruction: NonEmptyText
    skill: SkillField
    split: SplitField
    category: CategoryField
    difficulty: DifficultyField | None = None
    scene: Scene
    max_steps: int = Field(ge=1)
    control_hz: float = Field(gt=0)
    success: SuccessSpec

    @model_validator(mode="after")
    def _check_rules(self) -> Task:
        self._check_split_and_difficulty()
        self._check_skill_scene()
        self._check_seen_ness()
        return self

    def _check_split_and_difficulty(self) -> None:
        allowed = CATEGORIES_BY_SPLIT[self.split]
        if self.category not in allowed:
            raise rule_error(
                "category", f"category {self.category.value!r} does not belong to split "
                f"{self.split.value!r} (split {self.split.value!r} allows: {_choices(allowed)})"
            )
        graded = self.category in GRADED_CATEGORIES
        if graded and self.difficulty is None:
            raise rule_error(
                "difficulty", f"category {self.category.value!r} needs a difficulty "
                "(easy or hard)"
            )
        if not graded and self.difficulty is not None:
            raise rule_error(
                "difficulty", f"category {self.category.value!r} is not graded; remove "
                f"difficulty (only {_choices(GRADED_CATEGORIES)} take easy/hard)"
            )

    def _check_skill_scene(self) -> None:
        scene, skill = self.scene, self.skill
        if skill in SKILLS_NEEDING_DESTINATION and scene.destination is None:
            raise rule_error("scene.destination", f"skill {skill.value!r} needs a destination")
        if skill not in SKILLS_NEEDING_DESTINATION and scene.destination is not None:
            raise rule_error(
                "scene.destination", f"skill {skill.value!r} takes no destination; remove it"
            )
        if skill in (Skill.OPEN_DRAWER, Skill.CLOSE_DRAWER) and scene.target != DRAWER:
            raise rule_error(
                "scene.target", f"skill {skill.value!r} needs target {DRAWER!r}, "
                f"got {scene.target!r}"
            )
        if skill == Skill.PLACE_INTO_DRAWER and scene.destination != DRAWER:
            raise rule_error(
                "scene.destination", f"skill {skill.value!r} needs destination {DRAWER!r}, "
                f"got {scene.destination!r}"
            )
        if skill == Skill.PICK_FROM_DRAWER and DRAWER not in scene.objects:
            raise rule_error(
                "scene.objects", f"skill {skill.value!r} needs {DRAWER!r} in scene.objects"
            )
        target = OBJECTS[scene.target]
        if skill in SKILLS_MOVING_TARGET and not target.graspable:
            raise rule_error(
                "scene.target", f"skill {skill.value!r} needs a graspable target; "
                f"{scene.target!r} is not graspable"
            )
        if skill == Skill.PLACE_UPRIGHT and not target.uprightable:
            raise rule_error(
                "scene.target", f"skill 'place_upright' needs an object that can be set upright "
                f"(uprightable in the catalog); {scene.target!r} is not"
            )
        uses_drawer = skill in DRAWER_SKILLS or DRAWER in scene.all_objects()
        if uses_drawer and DRAWER not in scene.station_needs:
            raise rule_error(
                "scene.station_needs", f"this task uses the drawer; add {DRAWER!r} to "
                "scene.station_needs so it only runs on stations that have one"
            )

    def _check_seen_ness(self) -> None:
        """Category labels must match what the catalogue says is seen/unseen."""
        scene, category = self.scene, self.category
        if category in CATEGORIES_BY_SPLIT[Split.EMERGENT]:
            return
        unseen_objects = [n for n in scene.all_objects() if not OBJECTS[n].seen]
        background_seen = BACKGROUNDS[scene.background]["seen"]
        environment_seen = ENVIRONMENTS[scene.environment]["seen"]
        label = f"category {category.value!r}"
        needs_seen_objects = category in (
            Category.SEEN, Category.UNSEEN_BACKGROUNDS, Category.UNSEEN_ENVIRONMENTS
        )
        if needs_seen_objects and unseen_objects:
            raise rule_error(
                "scene.objects", f"{label} needs seen objects only, but "
                f"{_choices(unseen_objects)} is unseen (use category 'unseen_objects')"
            )
        if category == Category.UNSEEN_OBJECTS and not any(
            not OBJECTS[n].seen for n in scene.objects
        ):
            raise rule_error(
                "scene.objects", f"{label} needs at least one unseen object in scene.objects"
            )
        if category == Category.UNSEEN_BACKGROUNDS:
            if background_seen:
                raise rule_error(
                    "scene.background", f"{label} needs an unseen background, "
                    f"{scene.background!r} is seen"
                )
        elif not background_seen and category != Category.UNSEEN_ENVIRONMENTS:
            raise rule_error(
                "scene.background", f"{label} needs a seen background, {scene.background!r} "
                "is unseen (use category 'unseen_backgrounds')"
            )
        if category == Category.UNSEEN_ENVIRONMENTS:
            if environment_seen:
                raise rule_error(
                    "scene.environment", f"{label} needs an unseen environment, "
                    f"{scene.environment!r} is seen"
                )
        elif not environment_seen:
            raise rule_error(
                "scene.environment", f"{label} needs a seen environment, "
                f"{scene.environment!r} is unseen (use category 'unseen_environments')"
            )


class Protocol(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    name: Slug
    version: NonEmptyText
    description: str = ""
    default_control_hz: float = Field(default=5.0, gt=0)
    default_max_steps: int = Field(default=50, ge=1)
    trials_per_task: int = Field(ge=1)
    tasks: tuple[Task, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _fill_task_defaults(cls, data: Any) -> Any:
        """Tasks without max_steps/control_hz take the protocol's defaults."""
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
            return data
        defaults = {
            "max_steps": data.get("default_max_steps", 50),
            "control_hz": data.get("default_control_hz", 5.0),
        }
        tasks = [
            {**defaults, **task} if isinstance(task, dict) else task for task in data["tasks"]
        ]
        return {**data, "tasks": tasks}

    @model_validator(mode="after")
    def _check_unique_keys(self) -> Protocol:
        first_index: dict[str, int] = {}
        for i, task in enumerate(self.tasks):
            if task.key in first_index:
                raise rule_error(
                    f"tasks.{i}.key", f"duplicate task key {task.key!r} (task #{i + 1} "
                    f"repeats task #{first_index[task.key] + 1}); keys must be unique"
                )
            first_index[task.key] = i
        return self

    def task(self, key: str) -> Task:
        for task in self.tasks:
            if task.key == key:
                return task
        raise KeyError(f"protocol {self.name!r} has no task {key!r}")
