"""RT-2 ActionTokenizer: property tests (hypothesis) and the paper's example strings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.tokenizer import (
    ActionParseError,
    ActionTokenizer,
    NormalizationStats,
    format_action_text,
    parse_action_text,
)
from robots.types import CONTINUOUS_DIMS, Action, ActionSpace

SPACE = ActionSpace()
TOK = ActionTokenizer(action_space=SPACE)


def in_range_values():
    return st.tuples(*[st.floats(lo, hi, allow_nan=False) for lo, hi in zip(SPACE.low, SPACE.high)])


bins8 = st.tuples(st.integers(0, 1), *[st.integers(0, 255) for _ in range(7)])


@settings(max_examples=300, deadline=None)
@given(in_range_values(), st.booleans())
def test_decode_encode_within_half_a_bin(values, terminate):
    tok = ActionTokenizer(action_space=SPACE)
    enc = tok.encode(Action.from_continuous(values, terminate=terminate))
    assert enc.clipped == ()
    back = tok.decode(enc.bins)
    half = (np.asarray(SPACE.high) - np.asarray(SPACE.low)) / 256 / 2
    err = np.abs(np.asarray(back.continuous()) - np.asarray(values))
    assert np.all(err <= half * (1 + 1e-9)), (values, back)
    assert back.terminate == terminate
    assert tok.clip_counts.sum() == 0


@settings(max_examples=300, deadline=None)
@given(bins8)
def test_encode_decode_bins_is_identity(bins):
    assert TOK.encode(TOK.decode(bins)).bins == bins


@settings(max_examples=200, deadline=None)
@given(
    bins8,
    st.one_of(
        st.none(),
        st.text(alphabet="abcdefgh 7up.,", min_size=1, max_size=30).map(str.strip).filter(bool),
    ),
)
def test_text_roundtrip(bins, plan):
    text = format_action_text(bins, plan)
    parsed = parse_action_text(text)
    assert parsed.bins == bins and parsed.plan == plan
    assert format_action_text(parsed.bins, parsed.plan) == text


@settings(max_examples=200, deadline=None)
@given(bins8)
def test_token_ids_roundtrip_number_and_reserved(bins):
    numbers = ActionTokenizer.with_number_tokens({str(b): 1000 + b for b in range(256)})
    reserved = ActionTokenizer.with_reserved_block(32000)
    for tok in (numbers, reserved):
        ids = tok.bins_to_ids(bins)
        assert tok.ids_to_bins(ids) == bins
        assert tok.encode(tok.decode_ids(ids)).token_ids == ids
    assert reserved.bins_to_ids(bins)[1:] == tuple(31999 - b for b in bins[1:])  # OpenVLA layout


@pytest.mark.parametrize(
    "text",
    [
        "1 128 91 241 5 101 127 217",
        "Plan: pick 7up can. Action: 1 143 129 123 145 114 115 127",
    ],
)
def test_rt2_example_strings_parse_and_print_back_unchanged(text):
    parsed = TOK.parse_text(text)
    assert TOK.format_text(parsed.bins, parsed.plan) == text
    if "Plan" in text:
        assert parsed.plan == "pick 7up can." and parsed.bins == (
            1,
            143,
            129,
            123,
            145,
            114,
            115,
            127,
        )
    action = TOK.decode(parsed.bins)
    assert action.terminate and action.is_finite()
    assert TOK.encode(action).bins == parsed.bins


def test_rt2_bin_values_decode_into_the_action_space():
    a = TOK.decode((1, 128, 91, 241, 5, 101, 127, 217))
    w = 0.1 / 256
    assert a.dx == pytest.approx(-0.05 + 128.5 * w)
    assert a.gripper == pytest.approx(217.5 / 256)
    assert all(lo <= v <= hi for v, lo, hi in zip(a.continuous(), SPACE.low, SPACE.high))


@settings(max_examples=100, deadline=None)
@given(st.tuples(*[st.floats(-10, 10, allow_nan=False) for _ in CONTINUOUS_DIMS]))
def test_out_of_range_values_are_clipped_and_counted(values):
    tok = ActionTokenizer(action_space=SPACE)
    enc = tok.encode(Action.from_continuous(values))
    outside = [
        n
        for n, v, lo, hi in zip(CONTINUOUS_DIMS, values, SPACE.low, SPACE.high)
        if v < lo or v > hi
    ]
    assert list(enc.clipped) == outside
    assert int(tok.clip_counts.sum()) == len(outside)
    back = tok.decode(enc.bins)
    for i, (v, b, lo, hi) in enumerate(zip(values, back.continuous(), SPACE.low, SPACE.high)):
        assert lo <= b <= hi
        if v > hi:
            assert enc.bins[1 + i] == 255  # clipped to the top bin
        elif v < lo:
            assert enc.bins[1 + i] == 0


def test_clip_counts_accumulate_per_dimension():
    tok = ActionTokenizer(action_space=SPACE)
    tok.encode(Action(dx=1.0, gripper=2.0))
    tok.encode(Action(dx=-1.0))
    report = tok.clip_report()
    assert report["dx"] == 2 and report["gripper"] == 1 and report["dy"] == 0
    assert report["encoded"] == 2


@pytest.mark.parametrize(
    "bad",
    [
        "1 128 91",
        "2 128 91 241 5 101 127 217",
        "1 128 91 241 5 101 127 256",
        "Plan: pick. Action: one two",
        "",
        "1 128 91 241 5 101 127 217 3",
        "-1 1 1 1 1 1 1 1",
    ],
)
def test_bad_text_is_rejected_with_a_clear_error(bad):
    with pytest.raises(ActionParseError):
        TOK.parse_text(bad)


def test_bad_ids_and_bins_are_rejected():
    tok = ActionTokenizer.with_reserved_block(1000)
    with pytest.raises(ActionParseError, match="not action tokens"):
        tok.ids_to_bins([5] * 8)
    with pytest.raises(ActionParseError, match="terminate"):
        tok.decode((3, 1, 1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="non-finite"):
        tok.encode(Action.hold())
    with pytest.raises(ValueError, match="single token"):
        ActionTokenizer.with_number_tokens({"0": 1})


def test_position_masks_allow_only_action_tokens():
    tok = ActionTokenizer.with_reserved_block(600)
    mask = tok.position_masks(600)
    assert mask.shape == (8, 600)
    assert mask[0].sum() == 2 and set(np.flatnonzero(mask[0])) == {599, 598}
    assert all(mask[p].sum() == 256 for p in range(1, 8))
    assert not mask[:, :344].any()


def test_vectorized_encode_matches_scalar():
    rng = np.random.default_rng(0)
    vals = rng.uniform(SPACE.low, SPACE.high, size=(50, 7))
    bins, clipped = TOK.encode_array(vals)
    assert not clipped.any()
    for row, b in zip(vals, bins):
        assert TOK.encode(tuple(row)).bins == tuple(int(x) for x in b)
    back, _term = TOK.decode_array(bins)
    assert np.all(np.abs(back - vals) <= (np.asarray(SPACE.high) - SPACE.low) / 512 + 1e-12)


@settings(max_examples=100, deadline=None)
@given(st.tuples(*[st.floats(-1, 1, allow_nan=False) for _ in range(6)]), st.floats(0, 1))
def test_normalization_stats_roundtrip_within_half_a_bin(values, gripper):
    rng = np.random.default_rng(1)
    data = rng.normal(0, 0.01, size=(500, 7))
    data[:, 6] = rng.uniform(0, 1, 500)
    stats = NormalizationStats.from_actions(data)
    tok = ActionTokenizer(action_space=SPACE, normalization=stats)
    raw = np.asarray(stats.unnormalize(np.array([*values, gripper])))  # in the q01..q99 range
    raw[6] = gripper
    enc = tok.encode(tuple(raw))
    assert enc.clipped == ()
    back = np.asarray(tok.decode(enc.bins).continuous())
    assert np.all(np.abs(back - raw) <= tok.bin_width() / 2 * (1 + 1e-6) + 1e-12)


def test_normalization_stats_json_roundtrip(tmp_path):
    stats = NormalizationStats.from_actions(
        np.random.default_rng(0).normal(size=(100, 7)), mode="normal"
    )
    path = tmp_path / "stats.json"
    stats.save(path)
    assert json.loads(path.read_text())["mode"] == "normal"
    assert NormalizationStats.load(path) == stats
    with pytest.raises(ValueError, match="mode"):
        NormalizationStats.from_dict({**stats.to_dict(), "mode": "weird"})


def test_tokenizer_module_is_pure():
    import subprocess
    import sys

    code = (
        "import sys, policies.tokenizer, policies.base, policies.registry; "
        "bad = {'torch', 'transformers', 'ray', 'zmq', 'sqlalchemy'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
