"""StepRecord's fields are exactly the `steps` table's columns (minus episode_id), with no
defaults; EpisodeResult and MediaFile are frozen and hold tuples."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.episode import EpisodeResult
from orchestrator.recording import MediaFile
from orchestrator.step_record import StepRecord, ee_columns
from orchestrator.store.models import Step
from orchestrator.store.states import EpisodeStatus


def test_step_record_fields_equal_the_steps_columns() -> None:
    columns = {c.name for c in Step.__table__.columns} - {"episode_id"}
    fields = {f.name for f in dataclasses.fields(StepRecord)}
    assert fields == columns


def test_step_record_has_no_silent_defaults_and_is_frozen() -> None:
    for f in dataclasses.fields(StepRecord):
        assert f.default is dataclasses.MISSING, f.name
        assert f.default_factory is dataclasses.MISSING, f.name
    assert StepRecord.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_nullable_columns_match_the_optional_fields() -> None:
    hints = {f.name: str(f.type) for f in dataclasses.fields(StepRecord)}
    for c in Step.__table__.columns:
        if c.name == "episode_id":
            continue
        assert c.nullable == ("None" in hints[c.name]), c.name


def test_episode_result_and_media_are_frozen_tuples() -> None:
    assert MediaFile.__dataclass_params__.frozen  # type: ignore[attr-defined]
    r = EpisodeResult(status=EpisodeStatus.RECORDED)
    assert r.steps == () and r.media == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.status = EpisodeStatus.ABORTED  # type: ignore[misc]


def test_ee_columns_only_for_ee_delta() -> None:
    assert ee_columns("ee_delta[7]", [0.0] * 7) == (0.0,) * 7
    assert ee_columns("joint_position[7]", [0.0] * 7) == (None,) * 7
