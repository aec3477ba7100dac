"""Load protocol YAML files; turn every problem into a one-line `ProtocolError`.

    protocols/x.yaml: task 'pick_coke': field 'category': unknown category 'unseen_things' (...)
    protocols/x.yaml: line 7, column 3: YAML syntax error: could not find expected ':'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from protocols.schema import RULE_ERROR_TYPE, Protocol, Task
from robots.types import SceneSpec

__all__ = [
    "SHIPPED_PROTOCOLS_DIR",
    "LoadedProtocol",
    "ProtocolError",
    "ProtocolProblem",
    "iter_problems",
    "load_protocol",
    "parse_protocol",
    "protocol_checksum",
    "resolve_protocol_path",
    "scene_for",
    "shipped_protocol_paths",
]

SHIPPED_PROTOCOLS_DIR = Path(__file__).resolve().parent

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ProtocolProblem:
    """One thing wrong with a protocol file, located as precisely as known."""

    source: str
    message: str
    task_key: str | None = None
    field: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def __str__(self) -> str:
        parts = [self.source]
        if self.field is None and self.line is not None:
            where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
            parts.append(where)
        if self.task_key is not None:
            parts.append(f"task {self.task_key!r}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        parts.append(self.message)
        return ": ".join(parts)


class ProtocolError(ValueError):
    """A protocol file cannot be used. str() is one line: file, task, field, what is wrong."""

    def __init__(
        self, problems: str | list[ProtocolProblem] | tuple[ProtocolProblem, ...],
        source: str = "<protocol>",
    ) -> None:
        if isinstance(problems, str):
            problems = [ProtocolProblem(source, problems)]
        if not problems:
            raise ValueError("ProtocolError needs at least one problem")
        self.problems: tuple[ProtocolProblem, ...] = tuple(problems)
        first = self.problems[0]
        self.source, self.task_key, self.field, self.line = (
            first.source, first.task_key, first.field, first.line
        )
        text = str(first)
        if len(self.problems) > 1:
            text += f" (and {len(self.problems) - 1} more problem(s))"
        super().__init__(_one_line(text))

    def __reduce__(self) -> tuple[Any, ...]:  # keep the problems when pickled (e.g. by Ray)
        return (type(self), (self.problems,))


@dataclass(frozen=True)
class LoadedProtocol:
    protocol: Protocol
    source_text: str
    checksum: str  # sha256 hex of the UTF-8 source text
    path: Path | None = None


def protocol_checksum(source_text: str) -> str:
    return hashlib.sha256(source_text.encode("utf-8")).hexdigest()


def load_protocol(path: str | Path) -> LoadedProtocol:
    """Read, parse and validate a protocol file. Raises ProtocolError (never anything else
    for bad content or an unreadable file)."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ProtocolError([ProtocolProblem(source, f"cannot read file: {reason}")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"not UTF-8 text (bad byte at offset {exc.start}); save the file as UTF-8"
        raise ProtocolError([ProtocolProblem(source, msg)]) from exc
    protocol = parse_protocol(text, source)
    return LoadedProtocol(protocol, text, protocol_checksum(text), path)


def parse_protocol(text: str, source_name: str = "<protocol>") -> Protocol:
    """Parse and validate protocol YAML text; `source_name` names it in errors."""
    data, root = _parse_yaml(text, source_name)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        msg = f"top level must be a mapping with name, version, tasks, ... (got {kind})"
        raise ProtocolError([ProtocolProblem(source_name, msg, line=1)])
    try:
        return Protocol.model_validate(data)
    except ValidationError as exc:
        errors = _without_knock_on_errors(exc.errors())
        problems = [_problem_from(err, data, root, source_name) for err in errors]
        raise ProtocolError(problems) from None


def scene_for(task: Task, seed: int) -> SceneSpec:
    """The scene an arm must set up for one trial of `task` with scene seed `seed`."""
    scene = task.scene
    return SceneSpec(
        skill=task.skill.value,
        target=scene.target,
        objects=tuple(scene.objects),
        destination=scene.destination,
        distractors=tuple(scene.distractors),
        background=scene.background,
        environment=scene.environment,
        instruction=task.instruction,
        seed=int(seed),
    )


def shipped_protocol_paths() -> list[Path]:
    return sorted(SHIPPED_PROTOCOLS_DIR.glob("*.yaml"))


def resolve_protocol_path(name_or_path: str | Path) -> Path:
    """A path as given if it exists, else a shipped protocol by name (with or without .yaml)."""
    candidate = Path(name_or_path)
    if candidate.exists():
        return candidate
    shipped = SHIPPED_PROTOCOLS_DIR / f"{candidate.stem}.yaml"
    if candidate.parent == Path(".") and shipped.exists():
        return shipped
    names = ", ".join(p.stem for p in shipped_protocol_paths())
    raise ProtocolError([ProtocolProblem(
        str(name_or_path), f"no such file, and no shipped protocol of that name "
        f"(shipped: {names})"
    )])


# --- YAML -------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} in a mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    try:
        loader = _StrictLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ProtocolError([_yaml_problem(exc, source)]) from None
    return data, root


def _yaml_problem(exc: yaml.YAMLError, source: str) -> ProtocolProblem:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return ProtocolProblem(source, message)
    return ProtocolProblem(source, message, line=mark.line + 1, column=mark.column + 1)


# --- pydantic errors -> problems ---------------------------------------------------------


def _without_knock_on_errors(errors: list[Any]) -> list[Any]:
    """Drop "too short" on a list whose items failed: pydantic counts only valid items."""
    def has_item_errors(loc: tuple) -> bool:
        return any(tuple(e["loc"])[: len(loc)] == loc and len(e["loc"]) > len(loc)
                   for e in errors)

    kept = [
        e for e in errors
        if not (e["type"] == "too_short" and has_item_errors(tuple(e["loc"])))
    ]
    return kept or errors


def _problem_from(err: dict, data: dict, root: yaml.Node | None, source: str) -> ProtocolProblem:
    loc: Loc = tuple(err["loc"])
    if err["type"] == RULE_ERROR_TYPE:
        loc += tuple(int(p) if p.isdigit() else p for p in err["ctx"]["field"].split("."))
    task_key: str | None = None
    field_loc = loc
    if len(loc) >= 2 and loc[0] == "tasks" and isinstance(loc[1], int):
        task_key = _task_label(data, loc[1])
        field_loc = loc[2:]
    field = _dotted(field_loc) if field_loc else None
    return ProtocolProblem(
        source=source,
        message=_friendly_message(err),
        task_key=task_key,
        field=field,
        line=_line_of(root, loc),
    )


def _task_label(data: dict, index: int) -> str:
    tasks = data.get("tasks")
    if isinstance(tasks, list) and index < len(tasks) and isinstance(tasks[index], dict):
        key = tasks[index].get("key")
        if isinstance(key, str) and key.strip():
            return key
    return f"#{index + 1}"


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _friendly_message(err: dict) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (not part of the protocol schema; check its spelling)"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}, got {value!r}"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}, got {value!r}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "string_pattern_mismatch":
        return (f"{value!r} is not a valid key: use lowercase letters, digits, '_' and '-', "
                "starting with a letter or digit")
    message = str(err["msg"])
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:] if kind != RULE_ERROR_TYPE else message


def _line_of(root: yaml.Node | None, loc: Loc) -> int | None:
    """1-based line of the deepest YAML node along `loc` that exists."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _child(node: yaml.Node | None, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key_node, value_node in node.value:
            if getattr(key_node, "value", None) == part:
                return value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def iter_problems(error: ProtocolError) -> Iterator[str]:
    """Every problem of an error, one line each (the error's str() shows the first)."""
    for problem in error.problems:
        yield _one_line(str(problem))
