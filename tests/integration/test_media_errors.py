"""Media write errors name the path and are infrastructure faults (issue 9, Build 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.episode import _BackgroundRecorder
from orchestrator.faults import AbortCause, counts_against_trial
from orchestrator.recording import EpisodeRecorder, MediaWriteError, media_problem


def _blocked(media: Path, campaign: str) -> Path:
    """The campaign's folder is a plain file: no write under it can succeed (even as root)."""
    media.mkdir(parents=True, exist_ok=True)
    (media / campaign).write_bytes(b"not a folder")
    return media / campaign


def test_a_media_write_error_names_the_path(tmp_path: Path) -> None:
    folder = _blocked(tmp_path / "media", "camp")
    with pytest.raises(MediaWriteError) as err, EpisodeRecorder(tmp_path / "media", "camp", 42,
                                                                10.0) as rec:
        rec.add({"main": np.zeros((16, 16, 3), np.uint8)})
    text = str(err.value)
    assert text.startswith(f"cannot write media file {folder}/episode-00000042-main.mp4.partial")
    assert f"check that {folder} is a writable folder" in text
    assert "\n" not in text


def test_the_background_recorder_passes_the_media_error_on(tmp_path: Path) -> None:
    folder = _blocked(tmp_path / "media", "camp")
    rec = _BackgroundRecorder(tmp_path / "media", "camp", 7, 10.0)
    rec.add({"main": np.zeros((16, 16, 3), np.uint8)})
    with pytest.raises(MediaWriteError) as err:
        rec.finish()
    assert str(folder) in str(err.value)
    assert not counts_against_trial(AbortCause.MEDIA)


def test_media_problem_says_whether_a_folder_is_writable_again(tmp_path: Path) -> None:
    folder = _blocked(tmp_path / "media", "camp")
    problem = media_problem(folder)
    assert problem and str(folder) in problem
    folder.unlink()
    assert media_problem(folder) is None
    assert folder.is_dir() and list(folder.iterdir()) == []  # the probe file is gone


def test_actor_errors_are_classified() -> None:
    from ray.exceptions import RayActorError

    from orchestrator.runner_faults import cause_of_actor_error, cause_of_fault
    from robots.client import BridgeCommandError, BridgeTimeout

    refused = BridgeCommandError("refused reset: DRIVER_ERROR", "tcp://x", "DRIVER_ERROR", None)
    assert cause_of_actor_error(refused, during_reset=True) is AbortCause.SCENE
    estop = BridgeCommandError("refused reset: ESTOPPED", "tcp://x", "ESTOPPED", None)
    assert cause_of_actor_error(estop, during_reset=True) is AbortCause.ESTOP
    assert cause_of_actor_error(BridgeTimeout("no reply"), during_reset=True) is AbortCause.BRIDGE
    assert cause_of_actor_error(RayActorError(), during_reset=False) is AbortCause.ROBOT_ACTOR
    assert cause_of_fault("media") is AbortCause.MEDIA
    assert cause_of_fault("arm") is AbortCause.UNKNOWN  # not a cause: counted, never lost
    assert cause_of_fault(None) is AbortCause.UNKNOWN
