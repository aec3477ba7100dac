"""Instruction parsing for the scripted baselines (pure): "move 7up can near apple" ->
ParsedInstruction(skill="move_near", target="7up_can", destination="apple").

Keyword rules for the skill; object phrases are matched against a vocabulary of object names
("coke_can" is written "coke can"). Anything else (other languages, arithmetic, "the object
that is different") does not parse: the baseline has no world knowledge beyond its words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

GENERIC = {"can", "cup", "marker", "number", "ball", "block", "bottle", "person", "the", "a"}
_SPLIT = {
    "move_near": r"\b(?:near|to|next to|towards|beside)\b",
    "place_into_drawer": r"\b(?:into|in)\b",
    "pick_from_drawer": r"\b(?:from|out of)\b",
}


@dataclass(frozen=True)
class ParsedInstruction:
    skill: str
    target: str | None
    destination: str | None = None


class InstructionError(ValueError):
    """The instruction is not one the baseline understands."""


def _skill(text: str) -> str | None:
    words = set(text.split())
    if "drawer" in words:
        if "open" in words:
            return "open_drawer"
        if "close" in words or "shut" in words:
            return "close_drawer"
        if words & {"into", "in"}:
            return "place_into_drawer"
        if words & {"from", "out"}:
            return "pick_from_drawer"
    if "upright" in words:
        return "place_upright"
    if "knock" in words or "topple" in words:
        return "knock_over"
    if words & {"move", "push", "bring", "put"}:
        return "move_near"
    if words & {"pick", "grab", "lift"}:
        return "pick"
    return None


def _match(phrase: str, names: Iterable[str]) -> str | None:
    words = set(phrase.split())
    best, best_key = None, (0, 0, 0)
    for name in names:
        parts = name.lower().split("_")
        hit = [p for p in parts if p in words]
        if not any(p not in GENERIC for p in hit):
            continue
        key = (len(hit), -(len(parts) - len(hit)), -len(parts))
        if key > best_key:
            best, best_key = name, key
    return best


def parse_instruction(instruction: str, names: Iterable[str]) -> ParsedInstruction:
    """Skill, target and destination names (from `names`); InstructionError if not understood."""
    text = " ".join(re.sub(r"[^a-z0-9 ]+", " ", instruction.lower()).split())
    skill = _skill(text)
    if skill is None:
        raise InstructionError(f"no known skill verb in instruction {instruction!r}")
    names = [n for n in names if n != "drawer"]
    if skill in ("open_drawer", "close_drawer"):
        return ParsedInstruction(skill, "drawer")
    head, tail = text, ""
    if skill in _SPLIT:
        parts = re.split(_SPLIT[skill], text, maxsplit=1)
        head, tail = parts[0], parts[1] if len(parts) > 1 else ""
    target = _match(head, names)
    if target is None:
        raise InstructionError(f"no known object named in {instruction!r}")
    if skill == "move_near":
        dest = _match(tail, [n for n in names if n != target])
        if dest is None:
            raise InstructionError(f"no known destination named in {instruction!r}")
        return ParsedInstruction(skill, target, dest)
    return ParsedInstruction(skill, target, "drawer" if skill == "place_into_drawer" else None)
