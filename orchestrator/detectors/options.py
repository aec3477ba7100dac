"""Each detector kind's options, validated; a detector's identity (checksum). Pure.

    validate_options(DetectorKind.SIM, {"flip_rate": "0.1", "seed": "3"})  # -> SimOptions
    detector_checksum(kind, options, weights_sha256)

The checksum covers the kind, every option (normalized: defaults filled in, typed) and the
sha256 of the weights (vlm), so two detectors that may answer differently never share one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.detectors.base import DetectorError, DetectorKind

DEFAULT_QUESTION = "Did the robot succeed at the task: {instruction}? Answer yes or no."


class SimOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    flip_rate: float = Field(0.0, ge=0.0, le=1.0,
                             description="share of episodes whose outcome is flipped")
    seed: int = Field(0, description="which episodes are flipped (with the episode id)")


def _words(v: Any) -> Any:
    """`-o yes_words=yes,Yes` -> ("yes", "Yes")."""
    if isinstance(v, str):
        return tuple(w.strip() for w in v.split(",") if w.strip())
    return v


class VlmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model_path: str = Field(description="local directory of a transformers image-text-to-text "
                            "model and its processor (nothing is downloaded)")
    question: str = Field(DEFAULT_QUESTION, min_length=1,
                          description="the prompt; {instruction} and {task} are filled in")
    camera: str | None = Field(None, description="camera whose frames are judged (default: "
                               "the first the episode recorded)")
    frames: int = Field(1, ge=1, le=16, description="last frames judged; the score is the mean")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="success = score >= threshold")
    threads: int | None = Field(None, ge=1, le=256, description="torch CPU threads")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$",
                        description="torch device the model runs on")
    yes_words: tuple[str, ...] = Field(("yes", "Yes"), min_length=1)
    no_words: tuple[str, ...] = Field(("no", "No"), min_length=1)

    _split_yes = field_validator("yes_words", mode="before")(_words)
    _split_no = field_validator("no_words", mode="before")(_words)

    @field_validator("question")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            v.format(instruction="", task="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"question may use only {{instruction}} and {{task}} ({e})") from None
        return v


class RemoteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(description="http(s)://host:port/path the episodes are POSTed to")
    timeout_s: float = Field(30.0, gt=0.0, le=600.0, description="deadline of one request")
    camera: str | None = Field(None, description="send only this camera (default: every one)")
    frames: int = Field(1, ge=1, le=64, description="last frames sent per camera")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


OptionsModel = SimOptions | VlmOptions | RemoteOptions
MODELS: dict[DetectorKind, type[BaseModel]] = {
    DetectorKind.SIM: SimOptions, DetectorKind.VLM: VlmOptions, DetectorKind.REMOTE: RemoteOptions,
}


def parse_kind(kind: str) -> DetectorKind:
    try:
        return DetectorKind(kind)
    except ValueError:
        raise DetectorError(f"detector kind {kind!r} is unknown: one of "
                            f"{', '.join(k.value for k in DetectorKind)}") from None


def _one_line(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "options"
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg.removeprefix('Value error, ')}")
    return "; ".join(parts)


def validate_options(kind: DetectorKind, options: Mapping[str, Any]) -> OptionsModel:
    """The kind's typed options; DetectorError (one line) for anything else. Detectors are
    blind: an option about policies is refused with that reason."""
    model = MODELS[kind]
    for key in options:
        if "policy" in key.lower() or "policies" in key.lower():
            raise DetectorError(f"detector option {key!r}: a detector never sees which policy "
                                "ran (it labels blind); options per policy are not allowed")
    try:
        out = model(**dict(options))
    except ValidationError as e:
        raise DetectorError(f"detector kind {kind.value}: bad options: {_one_line(e)} "
                            f"(allowed: {', '.join(model.model_fields)})") from None
    assert isinstance(out, SimOptions | VlmOptions | RemoteOptions)
    return out


def normalized(options: OptionsModel) -> dict[str, Any]:
    """The options as stored in detectors.config (JSON: tuples as lists)."""
    return json.loads(json.dumps(options.model_dump(mode="json"), sort_keys=True))


def detector_checksum(kind: DetectorKind, options: OptionsModel,
                      weights_sha256: str | None) -> str:
    body = {"kind": kind.value, "options": normalized(options), "weights_sha256": weights_sha256}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
