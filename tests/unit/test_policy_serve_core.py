"""`evalfleet policy serve`'s pure core (policies/remote/serve_core.py) and its batch run
(serve_batch.run_batch, with an in-memory policy): when to wait for more requests, which
messages are refused and how, when a connection's episode starts, what a reply's timing and
the handshake metadata hold, which preset can carry which policy, and that one batch is ONE
act call whose failures stay one line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import msgpack
import numpy as np
import pytest

from policies.base import (
    ActionChunk,
    Policy,
    PolicyBatchResult,
    PolicyInput,
    PolicyMetadata,
    PolicyOutput,
)
from policies.remote.msgpack_numpy import packb
from policies.remote.presets import preset
from policies.remote.serve_batch import BatchItem, run_batch
from policies.remote.serve_core import (
    MAX_ERROR_CHARS,
    MAX_PERIOD_S,
    BadRequest,
    InferRequest,
    ResetRequest,
    api_key_ok,
    MAX_THINK_S,
    error_line,
    expected_back,
    keep_collecting,
    needs_reset,
    next_rhythm,
    next_think,
    parse_request,
    preset_mismatch,
    server_metadata,
    server_timing,
)
from robots.spaces import RT2_IO, CameraRole, GripperConvention, PolicyIO, SpaceKind
from robots.types import ActionSpace

PERIOD = 0.5
SIM_MAPPING = {
    "images": {"observation/image": {"camera": "main", "role": "external"}},
    "size": None,
    "state": {"observation/state": ["ee_x", "ee_y", "ee_z", "ee_roll", "ee_pitch", "ee_yaw",
                                    "gripper"]},
    "actions": {"space": "ee_delta", "dim": 7, "gripper": "open_is_1"},
}


# --- batching ---------------------------------------------------------------------------------

def test_a_full_batch_or_an_expired_window_runs_now() -> None:
    arms = {"a": (None, None), "b": (None, None), "c": (None, None)}
    assert not keep_collecting(in_batch={"a", "b"}, open_arms=arms, now=1.0, until=2.0,
                               max_batch=2)
    assert not keep_collecting(in_batch={"a"}, open_arms=arms, now=2.0, until=2.0, max_batch=8)


def test_when_every_open_connection_is_in_the_batch_nobody_else_can_send() -> None:
    arms = {"a": (None, None), "b": (1.0, PERIOD)}
    assert not keep_collecting(in_batch={"a", "b"}, open_arms=arms, now=1.0, until=9.0,
                               max_batch=32)


def test_a_new_connection_or_one_of_unknown_rhythm_is_given_the_window() -> None:
    assert keep_collecting(in_batch={"a"}, open_arms={"a": (1.0, PERIOD), "b": (None, None)},
                           now=1.0, until=1.005, max_batch=32)
    assert keep_collecting(in_batch={"a"}, open_arms={"a": (1.0, PERIOD), "b": (0.9, None)},
                           now=1.0, until=1.005, max_batch=32)


def test_known_rhythms_wait_only_for_connections_due_within_the_window() -> None:
    due = {"a": (10.5, PERIOD), "b": (10.0, PERIOD)}  # b due at 10.5, now
    assert keep_collecting(in_batch={"a"}, open_arms=due, now=10.5, until=10.51, max_batch=32)
    other_phase = {"a": (10.5, PERIOD), "b": (10.2, PERIOD)}  # b due at 10.7
    assert not keep_collecting(in_batch={"a"}, open_arms=other_phase, now=10.5, until=10.51,
                               max_batch=32)


def test_rhythm_is_the_smoothed_gap_between_requests_and_long_pauses_do_not_count() -> None:
    r = next_rhythm(None, 10.0)
    assert r == (10.0, None)
    r = next_rhythm(r, 10.5)
    assert r == (10.5, 0.5)
    r = next_rhythm(r, 11.5)
    assert r[0] == 11.5 and r[1] == pytest.approx(0.7 * 0.5 + 0.3 * 1.0)
    assert next_rhythm(r, 11.5 + MAX_PERIOD_S + 1)[1] == r[1]


def test_closed_loop_clients_answered_last_batch_are_waited_for() -> None:
    """Clients that ask again as soon as they are answered: the half of them answered by the
    last batch is expected back within the window, so the next batch is not run half full
    (two half batches alternating was the steady state before)."""
    arms = {"a": (10.0, 0.1), "b": (10.05, 0.1)}  # b asked mid-cycle: rhythm alone won't wait
    assert not keep_collecting(in_batch={"a"}, open_arms=arms, now=10.1, until=10.105,
                               max_batch=32)
    assert keep_collecting(in_batch={"a"}, open_arms=arms, now=10.1, until=10.105,
                           max_batch=32, returning={"b": 10.101})
    # expected back after the window: not waited for; a full batch runs anyway
    assert not keep_collecting(in_batch={"a"}, open_arms=arms, now=10.1, until=10.105,
                               max_batch=32, returning={"b": 10.2})
    assert not keep_collecting(in_batch={"a", "b"}, open_arms=arms, now=10.1, until=10.105,
                               max_batch=2, returning={"b": 10.101})


def test_think_time_is_the_smoothed_reply_to_request_gap_of_a_closed_loop() -> None:
    assert next_think(None, None, 5.0) is None  # never answered yet
    t = next_think(None, 5.0, 5.001)
    assert t == pytest.approx(0.001)
    t = next_think(t, 6.0, 6.003)
    assert t == pytest.approx(0.7 * 0.001 + 0.3 * 0.003)
    # an arm that executes its chunk for half a second before asking again is no closed loop
    assert next_think(t, 7.0, 7.0 + MAX_THINK_S + 0.4) is None
    assert expected_back(8.0, None) is None
    assert expected_back(8.0, 0.002) == pytest.approx(8.002)


# --- requests ---------------------------------------------------------------------------------

def test_an_observation_map_is_an_infer_request() -> None:
    obs = {"observation/state": np.arange(7.0), "prompt": "pick"}
    req = parse_request(packb(obs))
    assert isinstance(req, InferRequest)
    assert req.observation["prompt"] == "pick"
    assert np.array_equal(req.observation["observation/state"], np.arange(7.0))


def test_roboarena_endpoints_infer_and_reset() -> None:
    req = parse_request(packb({"endpoint": "infer", "prompt": "pick"}))
    assert isinstance(req, InferRequest) and "endpoint" not in req.observation
    reset = parse_request(packb({"endpoint": "reset", "session": 3}))
    assert isinstance(reset, ResetRequest) and reset.info == {"session": 3}
    assert isinstance(parse_request(packb({b"endpoint": b"reset"})), ResetRequest)


@pytest.mark.parametrize(("message", "says"), [
    ("a text frame", "text frame"),
    (b"\xc1\x00garbage", "malformed"),
    (packb([1, 2, 3]), "expected a msgpack map"),
    (packb({"endpoint": "act", "prompt": "x"}), "unknown endpoint"),
    (packb({}), "empty map"),
    (msgpack.packb({"prompt": "x", b"prompt": "y"}, use_bin_type=True), "twice"),
    (msgpack.packb({"img": {b"__ndarray__": True, b"data": b"\x00" * 5, b"dtype": "<f4",
                            b"shape": [2]}}, use_bin_type=True), "needs 8 bytes"),
    (msgpack.packb({"img": {b"__ndarray__": True, b"data": b"", b"dtype": "|O",
                            b"shape": [0]}}, use_bin_type=True), "refused"),
])
def test_malformed_messages_are_refused_with_one_line(message: bytes | str, says: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_request(message)
    text = str(e.value)
    assert says in text and "\n" not in text


def test_a_message_over_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(BadRequest, match="over the 100-byte limit"):
        parse_request(packb({"x": np.zeros(100)}), max_bytes=100)


def test_an_episode_starts_at_the_first_request_a_reset_or_a_new_prompt() -> None:
    assert needs_reset(None, "pick", False)
    assert not needs_reset("pick", "pick", False)
    assert needs_reset("pick", "pick", True)
    assert needs_reset("pick", "place", False)


# --- replies and handshake --------------------------------------------------------------------

def test_server_timing_is_openpis_plus_the_batch() -> None:
    first = server_timing(infer_s=0.002, policy_s=0.001, queue_s=0.003, batch_size=4,
                          prev_total_s=None)
    assert first == {"infer_ms": 2.0, "policy_ms": 1.0, "queue_ms": 3.0, "batch_size": 4}
    later = server_timing(infer_s=0.0, policy_s=0.0, queue_s=0.0, batch_size=1, prev_total_s=0.01)
    assert later["prev_total_ms"] == pytest.approx(10.0)


def test_error_line_is_one_short_line_without_a_traceback() -> None:
    e = ValueError("first line\n  File \"x.py\", line 3\nlast")
    line = error_line("policy act failed", e)
    assert line == 'policy act failed: ValueError: first line File "x.py", line 3 last'
    assert error_line("bad request", BadRequest("not a map")) == "bad request: not a map"
    long = error_line("x", RuntimeError("y" * 1000))
    assert len(long) == MAX_ERROR_CHARS and long.endswith("...")


def test_api_key_header() -> None:
    assert api_key_ok("Api-Key s3cret", "s3cret")
    assert api_key_ok("api-key  s3cret ", "s3cret")
    assert not api_key_ok("Api-Key wrong", "s3cret")
    assert not api_key_ok("Bearer s3cret", "s3cret")
    assert not api_key_ok(None, "s3cret")
    assert not api_key_ok("", "s3cret")


def test_metadata_names_the_policy_and_the_preset_and_keeps_preset_extras() -> None:
    meta = server_metadata({"name": "p", "checksum": "ab"}, preset="libero", max_batch=8,
                           needs_privileged=False, extra={"image_resolution": [224, 224]})
    assert meta["policy"] == {"name": "p", "checksum": "ab"}
    assert (meta["server"], meta["protocol"], meta["preset"], meta["max_batch"]) == (
        "evalfleet", "openpi", "libero", 8)
    assert meta["image_resolution"] == [224, 224]
    assert packb(meta)  # it crosses the wire


def test_the_preset_must_carry_the_policys_space_cameras_and_state() -> None:
    sim = preset("generic", SIM_MAPPING)
    assert preset_mismatch("'p'", RT2_IO, "generic", sim.io) is None
    flipped = preset_mismatch("'p'", RT2_IO, "libero", preset("libero").io)
    assert flipped is not None and "gripper open_is_1" in flipped and "closed_is_1" in flipped
    joints = PolicyIO(emits=SpaceKind.JOINT_POSITION, action_dim=7)
    assert "emits joint_position[7]" in (preset_mismatch("'p'", joints, "generic", sim.io) or "")
    named = PolicyIO(camera_names=("wrist",))
    assert "camera 'wrist'" in (preset_mismatch("'p'", named, "generic", sim.io) or "")
    wrist = PolicyIO(cameras=(CameraRole.EXTERNAL, CameraRole.WRIST))
    assert "wrist camera" in (preset_mismatch("'p'", wrist, "generic", sim.io) or "")
    state = PolicyIO(state=("joint_1",), gripper=GripperConvention.OPEN_IS_1)
    assert "state ['joint_1']" in (preset_mismatch("'p'", state, "generic", sim.io) or "")


# --- one batch through the policy -------------------------------------------------------------

class Recorder(Policy):
    """ee_delta[7] chunks whose first value is the arm's number of steps; records calls."""

    def __init__(self, *, fail_act: bool = False, fail_reset_arm: str = "") -> None:
        self.metadata = PolicyMetadata("rec", "1", "test", ActionSpace(), "0" * 64)
        self.calls: list[tuple[str, ...]] = []  # each act call's arms
        self.resets: list[tuple[str, str]] = []
        self.fail_act, self.fail_reset_arm = fail_act, fail_reset_arm

    def reset(self, arm: str, instruction: str) -> None:
        if arm == self.fail_reset_arm:
            raise RuntimeError("reset broke\nsecond line")
        self.resets.append((arm, instruction))

    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        self.calls.append(tuple(x.arm for x in inputs))
        if self.fail_act:
            raise ValueError("model exploded")
        outs = [PolicyOutput(chunk=ActionChunk(np.full((2, 7), float(i)), 10.0))
                for i, _ in enumerate(inputs)]
        return PolicyBatchResult(outs, 0.25)


def _item(arm: str, reset: str | None = None) -> BatchItem:
    return BatchItem(arm, PolicyInput({}, (0.0,) * 7, "pick", arm=arm), reset)


def test_a_batch_is_one_act_call_after_the_resets_of_new_episodes() -> None:
    pol = Recorder()
    out = run_batch(pol, preset("generic", SIM_MAPPING),
                    [_item("a", "pick"), _item("b"), _item("c", "place")])
    assert pol.resets == [("a", "pick"), ("c", "place")]
    assert pol.calls == [("a", "b", "c")]
    assert [o.error for o in out] == [None, None, None]
    for i, o in enumerate(out):
        assert o.reply is not None and np.array_equal(o.reply["actions"], np.full((2, 7), float(i)))
        assert (o.batch_size, o.policy_s) == (3, 0.25)


def test_a_failed_reset_is_that_requests_error_only() -> None:
    pol = Recorder(fail_reset_arm="b")
    out = run_batch(pol, preset("generic", SIM_MAPPING), [_item("a", "pick"), _item("b", "pick")])
    assert pol.calls == [("a",)]
    assert out[0].error is None
    assert out[1].error == "policy reset failed: RuntimeError: reset broke second line"


def test_an_act_that_raises_is_every_requests_one_line_error() -> None:
    out = run_batch(Recorder(fail_act=True), preset("generic", SIM_MAPPING),
                    [_item("a"), _item("b")])
    assert [o.error for o in out] == ["policy act failed: ValueError: model exploded"] * 2


def test_the_core_imports_no_sockets_event_loop_or_heavy_libraries() -> None:
    script = ("import json, sys\n"
              "import policies.remote.serve_core, policies.remote.serve_batch\n"
              "print(json.dumps(sorted(m for m in ('websockets', 'asyncio', 'ray', 'zmq', "
              "'sqlalchemy', 'torch') if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2], check=True)
    assert json.loads(out.stdout) == []
