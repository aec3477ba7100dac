"""Success detectors' pure parts: the sim kind's seeded flips, the yes/no score from next-token
logits, option validation and identity (checksum), the remote reply, frame picking."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.detectors.base import (
    DetectorError,
    DetectorInput,
    DetectorKind,
    Verdict,
    pick_frames,
)
from orchestrator.detectors.options import (
    DEFAULT_QUESTION,
    RemoteOptions,
    SimOptions,
    VlmOptions,
    detector_checksum,
    normalized,
    parse_kind,
    validate_options,
)
from orchestrator.detectors.scoring import (
    flip_draw,
    flips,
    parse_reply,
    remote_body,
    sim_verdict,
    yes_no_score,
)
from orchestrator.detectors.sim import SimDetector

REPO = Path(__file__).resolve().parents[2]


# -- sim: deterministic flips -------------------------------------------------------------------


def test_flips_are_a_function_of_seed_and_episode() -> None:
    a = [flips(7, e, 0.1) for e in range(2000)]
    assert a == [flips(7, e, 0.1) for e in range(2000)]  # same inputs, same flips
    assert a != [flips(8, e, 0.1) for e in range(2000)]  # another seed, other episodes
    assert all(0.0 <= flip_draw(3, e) < 1.0 for e in range(100))


def test_flip_share_is_the_rate_and_rates_nest() -> None:
    n = 20_000
    for rate in (0.05, 0.1, 0.3):
        share = sum(flips(1, e, rate) for e in range(n)) / n
        assert abs(share - rate) < 0.012, (rate, share)
    # a higher rate flips a superset of a lower one's episodes (one draw per episode)
    low = {e for e in range(n) if flips(1, e, 0.1)}
    high = {e for e in range(n) if flips(1, e, 0.2)}
    assert low <= high
    assert not any(flips(1, e, 0.0) for e in range(n))
    assert all(flips(1, e, 1.0) for e in range(100))


def test_sim_verdict_reports_the_sim_or_its_flip_and_refuses_no_sim_label() -> None:
    assert sim_verdict(5, True, 0.0, 0) == Verdict(True, 1.0, "sim")
    assert sim_verdict(5, False, 0.0, 0) == Verdict(False, 0.0, "sim")
    assert sim_verdict(5, True, 1.0, 0) == Verdict(False, 0.0, "sim, flipped")
    with pytest.raises(DetectorError, match=r"episode 9 has no sim label.*vlm or remote"):
        sim_verdict(9, None, 0.0, 0)


def test_sim_detector_judges_a_batch_in_order() -> None:
    det = SimDetector(SimOptions(flip_rate=0.5, seed=2))
    inputs = [DetectorInput(e, "pick", "t", sim_success=e % 3 == 0) for e in range(50)]
    got = det.judge_batch(inputs)
    assert [v.success for v in got] == [(e % 3 == 0) != flips(2, e, 0.5) for e in range(50)]
    assert det.needs_frames is False


# -- vlm: the yes/no score ----------------------------------------------------------------------


def test_yes_no_score_is_the_restricted_softmax() -> None:
    logits = np.array([[0.0, 2.0, 1.0, 5.0], [3.0, -1.0, 4.0, 0.0]])
    got = yes_no_score(logits, [1], [2])
    want = np.exp([2.0, -1.0]) / (np.exp([2.0, -1.0]) + np.exp([1.0, 4.0]))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # the other tokens do not matter: token 3 is the most likely, P(yes | yes or no) is not
    assert got[0] > 0.5 > got[1]


def test_yes_no_score_sums_the_variants_of_each_word_and_is_stable() -> None:
    logits = np.array([[1000.0, 1000.0, 1000.0, -50.0]])  # float overflow without logsumexp
    np.testing.assert_allclose(yes_no_score(logits, [0, 1], [2]), [2 / 3])
    np.testing.assert_allclose(yes_no_score(np.zeros((3, 5)), [0], [1]), [0.5] * 3)
    with pytest.raises(ValueError, match="in common"):
        yes_no_score(logits, [0], [0])
    with pytest.raises(ValueError, match=r"\(batch, vocab\)"):
        yes_no_score(np.zeros(4), [0], [1])


# -- options and identity -----------------------------------------------------------------------


def test_options_are_typed_from_cli_strings() -> None:
    o = validate_options(DetectorKind.SIM, {"flip_rate": "0.1", "seed": "3"})
    assert o == SimOptions(flip_rate=0.1, seed=3)
    v = validate_options(DetectorKind.VLM, {"model_path": "/m", "yes_words": "yes, Yes",
                                            "frames": "2", "threshold": "0.7"})
    assert isinstance(v, VlmOptions)
    assert v.yes_words == ("yes", "Yes") and v.frames == 2 and v.question == DEFAULT_QUESTION
    r = validate_options(DetectorKind.REMOTE, {"url": "http://h:1/j", "timeout_s": "2.5"})
    assert r == RemoteOptions(url="http://h:1/j", timeout_s=2.5)


@pytest.mark.parametrize(("kind", "options", "message"), [
    (DetectorKind.SIM, {"flip_rate_by_policy": "a=0.1"}, "never sees which policy"),
    (DetectorKind.SIM, {"flip_rate": "1.5"}, r"flip_rate: .*less than or equal to 1"),
    (DetectorKind.SIM, {"flips": "1"}, r"flips: unknown option \(allowed: flip_rate, seed\)"),
    (DetectorKind.VLM, {}, "model_path: Field required"),
    (DetectorKind.VLM, {"model_path": "/m", "question": "Is {policy} good?"},
     r"question.*only \{instruction\} and \{task\}"),
    (DetectorKind.VLM, {"model_path": "/m", "frames": "0"}, "frames"),
    (DetectorKind.VLM, {"model_path": "/m", "device": "gpu"}, "device: String should match"),
    (DetectorKind.REMOTE, {"url": "judge:8080"}, r"url: must start with http://"),
    (DetectorKind.REMOTE, {"url": "http://h", "timeout_s": "0"}, "timeout_s"),
])
def test_bad_options_get_one_line(kind, options, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DetectorError, match=message) as e:
        validate_options(kind, options)
    assert "\n" not in str(e.value)


def test_unknown_kind_is_one_line() -> None:
    assert parse_kind("vlm") is DetectorKind.VLM
    with pytest.raises(DetectorError, match="'llm' is unknown: one of sim, vlm, remote"):
        parse_kind("llm")


def test_checksum_covers_kind_options_and_weights() -> None:
    a = validate_options(DetectorKind.SIM, {"flip_rate": "0.1"})
    same = validate_options(DetectorKind.SIM, {"flip_rate": 0.1, "seed": 0})
    assert detector_checksum(DetectorKind.SIM, a, None) == detector_checksum(
        DetectorKind.SIM, same, None)  # defaults filled, strings typed: one identity
    other = validate_options(DetectorKind.SIM, {"flip_rate": "0.2"})
    assert detector_checksum(DetectorKind.SIM, a, None) != detector_checksum(
        DetectorKind.SIM, other, None)
    v = validate_options(DetectorKind.VLM, {"model_path": "/m"})
    assert detector_checksum(DetectorKind.VLM, v, "aa") != detector_checksum(
        DetectorKind.VLM, v, "bb")
    assert normalized(v)["yes_words"] == ["yes", "Yes"]  # JSON: the stored config


# -- remote: body and reply ---------------------------------------------------------------------


def test_remote_body_stacks_each_cameras_frames() -> None:
    f = np.zeros((4, 6, 3), np.uint8)
    body = remote_body("pick the can", "pick_can", {"main": (f, f + 1), "wrist": (f,)})
    assert body["instruction"] == "pick the can" and body["task"] == "pick_can"
    assert body["frames"]["main"].shape == (2, 4, 6, 3) and body["frames"]["main"][1, 0, 0, 0] == 1
    assert body["frames"]["wrist"].dtype == np.uint8


def test_parse_reply_accepts_the_contract_and_refuses_the_rest() -> None:
    assert parse_reply('{"success": true, "score": 0.8}', "w") == Verdict(True, 0.8, "remote")
    assert parse_reply('{"success": false, "score": 0, "detail": "x"}', "w").detail == "x"
    for bad, msg in [("nope", "not JSON"), ("[1]", "not a JSON object"),
                     ('{"score": 0.5}', "'success' must be true or false"),
                     ('{"success": 1, "score": 0.5}', "'success' must be"),
                     ('{"success": true, "score": 1.5}', "'score' must be a number in 0..1"),
                     ('{"success": true, "score": true}', "'score' must be"),
                     ('{"success": true}', "'score' must be")]:
        with pytest.raises(DetectorError, match=msg):
            parse_reply(bad, "w")


def test_pick_frames_takes_the_last_of_a_camera_and_names_what_is_missing() -> None:
    f = [np.full((2, 3, 3), i, np.uint8) for i in range(4)]
    x = DetectorInput(3, "pick", "t", {"main": tuple(f), "wrist": (f[0],)})
    got = pick_frames(x, "main", 2, "w")
    assert list(got) == ["main"] and [int(a[0, 0, 0]) for a in got["main"]] == [2, 3]
    assert set(pick_frames(x, None, 1, "w")) == {"main", "wrist"}
    with pytest.raises(DetectorError, match=r"episode 3 has no frames of camera 'top' \(cameras "
                       r"recorded: main, wrist\); set -o camera=NAME"):
        pick_frames(x, "top", 1, "w")
    bad = DetectorInput(4, "pick", "t", {"main": (np.zeros((2, 3), np.uint8),)})
    with pytest.raises(DetectorError, match=r"HxWx3 uint8, got uint8 \(2, 3\)"):
        pick_frames(bad, None, 1, "w")


def test_which_cameras_each_kind_reads() -> None:
    from orchestrator.detectors.remote import RemoteDetector

    assert SimDetector(SimOptions()).cameras(["main"]) == ()
    remote = RemoteDetector(RemoteOptions(url="http://h:1/j"))
    assert remote.cameras(["main", "wrist"]) == ("main", "wrist")
    only = RemoteDetector(RemoteOptions(url="http://h:1/j", camera="wrist"))
    assert only.cameras(["main", "wrist"]) == ("wrist",) and only.cameras(["main"]) == ()


def test_verdict_score_is_a_probability() -> None:
    with pytest.raises(ValueError, match="outside 0..1"):
        Verdict(True, 1.01)


def test_the_pure_parts_import_no_shell_library() -> None:
    script = ("import json, sys\n"
              "import orchestrator.detectors.options, orchestrator.detectors.scoring\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
              "{'torch', 'transformers', 'av', 'sqlalchemy', 'ray', 'zmq'})))\n")
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
