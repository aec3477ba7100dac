"""VLAPolicy on a tiny PaliGemma built from configs, saved to a temp dir and loaded offline
through the adapter like a real checkpoint (random weights: actions are meaningless)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor

from policies.base import PolicyInput
from tests.policy_kit import build_tiny_vla
from policies.vla import ActionConstraint, VLALoadError, VLAPolicy
from robots.types import ActionSpace

SPACE = ActionSpace()
INSTRUCTIONS = [
    "pick coke can",
    "open the drawer",
    "move apple near sponge",
    "knock water bottle over",
    "place green cup upright",
    "pick orange from the drawer",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_vla(tmp_path_factory.mktemp("tiny_vla"), seed=0)


@pytest.fixture(scope="module")
def policy(model_dir):
    return VLAPolicy(model_dir)


def make_inputs(n: int, seed: int = 0, size=(96, 128)) -> list[PolicyInput]:
    rng = np.random.default_rng(seed)
    return [
        PolicyInput(
            {"main": rng.integers(0, 256, (*size, 3), dtype=np.uint8)},
            (0.0,) * 7,
            INSTRUCTIONS[i % len(INSTRUCTIONS)],
            arm=f"arm{i}",
        )
        for i in range(n)
    ]


class ScriptedText(LogitsProcessor):
    """Forces the first generated tokens to `ids` (then lets the model continue)."""

    def __init__(self, ids: list[int]) -> None:
        self.ids, self.start, self.last = ids, 0, None

    def __call__(self, input_ids, scores):
        n = input_ids.shape[1]
        if self.last is None or n <= self.last:
            self.start = n
        self.last = n
        k = n - self.start
        if k < len(self.ids):
            forced = torch.full_like(scores, float("-inf"))
            forced[:, self.ids[k]] = 0.0
            return forced
        return scores


def assert_valid(out, tokenizer_ids: set[int]) -> None:
    assert out.hold_reason is None, out.hold_reason
    a = out.action
    assert a.is_finite()
    assert all(lo <= v <= hi for v, lo, hi in zip(a.continuous(), SPACE.low, SPACE.high))
    assert out.tokens is not None and len(out.tokens) == 8 and set(out.tokens) <= tokenizer_ids


def test_random_weights_still_give_valid_actions(policy):
    result = policy.act(make_inputs(8, seed=1))
    ids = set(policy.action_tokenizer.token_ids.tolist())
    for out in result.outputs:
        assert_valid(out, ids)
        assert out.text == policy.action_tokenizer.format_text(
            policy.action_tokenizer.ids_to_bins(out.tokens)
        )
    assert result.inference_s > 0
    outputs, seconds = policy.act(make_inputs(1))  # unpacks like a tuple
    assert len(outputs) == 1 and seconds > 0
    assert len({o.tokens for o in result.outputs}) > 1, "outputs should depend on the input"


def test_batch_equals_one_at_a_time(policy):
    inputs = make_inputs(6, seed=2)
    batch = policy.act(inputs).outputs
    single = [policy.act([x]).outputs[0] for x in inputs]
    assert [o.tokens for o in batch] == [o.tokens for o in single]
    assert [o.action for o in batch] == [o.action for o in single]


def test_chain_of_thought_plan_is_captured(model_dir):
    probe = VLAPolicy(model_dir)
    tok = probe.tokenizer
    plan_ids = tok.encode("Plan: pick 7up can.", add_special_tokens=False)
    pol = VLAPolicy(
        model_dir,
        {"chain_of_thought": True, "max_plan_tokens": len(plan_ids)},
        extra_logits_processors=[ScriptedText(plan_ids)],
    )
    outs = pol.act(make_inputs(3, seed=3)).outputs
    ids = set(pol.action_tokenizer.token_ids.tolist())
    for out in outs:
        assert_valid(out, ids)
        assert out.plan == "pick 7up can."
        assert out.text.startswith("Plan: pick 7up can. Action: ")
        parsed = pol.action_tokenizer.parse_text(out.text)
        assert (
            parsed.plan == "pick 7up can."
            and pol.action_tokenizer.decode(parsed.bins) == out.action
        )


def test_chain_of_thought_with_a_free_random_plan_still_ends_in_an_action(model_dir):
    pol = VLAPolicy(model_dir, {"chain_of_thought": True, "max_plan_tokens": 5})
    ids = set(pol.action_tokenizer.token_ids.tolist())
    for out in pol.act(make_inputs(4, seed=4)).outputs:
        assert_valid(out, ids)
        assert "Action:" in out.text


def test_constraint_blocks_non_action_tokens(model_dir):
    probe = VLAPolicy(model_dir)
    words = probe.tokenizer.encode(
        "pick the can and then some more words", add_special_tokens=False
    )
    pol = VLAPolicy(model_dir, extra_logits_processors=[ScriptedText(words)])
    ids = set(pol.action_tokenizer.token_ids.tolist())
    for out in pol.act(make_inputs(2)).outputs:
        assert_valid(out, ids)  # the scripted words were masked out at every action position


def test_unconstrained_non_action_text_becomes_hold_with_raw_text(model_dir):
    probe = VLAPolicy(model_dir)
    words = probe.tokenizer.encode(
        "pick the coke can . the robot should move", add_special_tokens=False
    )
    pol = VLAPolicy(
        model_dir, {"constrained": False}, extra_logits_processors=[ScriptedText(words)]
    )
    outs = pol.act(make_inputs(2)).outputs
    for out in outs:
        assert out.hold_reason is not None and "pick the coke can" in out.hold_reason
        assert out.text.startswith("pick the coke can")
        assert out.action.gripper != out.action.gripper  # Action.hold(): NaN gripper, robot holds


def test_unconstrained_out_of_range_terminate_is_not_clamped(model_dir):
    probe = VLAPolicy(model_dir)
    seven = probe.tokenizer.encode("7 128 128 128 128 128 128 200", add_special_tokens=False)
    pol = VLAPolicy(
        model_dir, {"constrained": False}, extra_logits_processors=[ScriptedText(seven)]
    )
    out = pol.act(make_inputs(1)).outputs[0]
    assert out.hold_reason is not None and "terminate" in out.hold_reason
    assert out.text.startswith("7 128")
    good = probe.tokenizer.encode("1 128 128 128 128 128 128 200", add_special_tokens=False)
    pol_ok = VLAPolicy(
        model_dir, {"constrained": False}, extra_logits_processors=[ScriptedText(good)]
    )
    ok = pol_ok.act(make_inputs(1)).outputs[0]
    assert (
        ok.hold_reason is None
        and ok.action.terminate
        and ok.text.startswith("1 128 128 128 128 128 128 200")
    )


def test_reserved_token_mode_and_bfloat16(model_dir):
    pol = VLAPolicy(model_dir, {"token_mode": "reserved", "dtype": "bfloat16"})
    ids = set(pol.action_tokenizer.token_ids.tolist())
    assert max(ids) == len(pol.tokenizer) - 1  # the last 256 ids, as OpenVLA
    for out in pol.act(make_inputs(3)).outputs:
        assert_valid(out, ids)


def test_constraint_processor_is_vectorized_over_rows():
    table = torch.zeros(11, 20, dtype=torch.bool)
    table[0, [2, 3]] = True
    table[1:8, 2:18] = True
    table[8, 1] = True
    table[9] = True
    table[10, 19] = True  # single-token marker
    proc = ActionConstraint(table, prompt_len=2, marker=torch.tensor([19]), max_plan_tokens=3)
    ids = torch.tensor([[0, 0, 5, 19, 3], [0, 0, 5, 6, 7], [0, 0, 19, 3, 4]])
    out = proc(ids, torch.zeros(3, 20))
    assert torch.equal(torch.isfinite(out[0]), table[1])  # 1 token after the marker
    assert torch.equal(torch.isfinite(out[1]), table[10])  # plan budget spent: marker forced
    assert torch.equal(torch.isfinite(out[2]), table[2])


def test_metadata_checksum_tracks_weights_and_config(model_dir, tmp_path):
    a, b = VLAPolicy(model_dir), VLAPolicy(model_dir)
    assert a.metadata.checksum == b.metadata.checksum and len(a.metadata.checksum) == 64
    assert a.metadata.kind == "vla" and a.metadata.action_space == SPACE
    assert VLAPolicy(model_dir, {"constrained": False}).metadata.checksum != a.metadata.checksum
    other = build_tiny_vla(tmp_path / "other", seed=1)
    assert VLAPolicy(other).metadata.checksum != a.metadata.checksum


def test_normalization_stats_are_read_from_the_policy_dir(tmp_path):
    stats = {
        "q01": [-0.01] * 6 + [0.0],
        "q99": [0.01] * 6 + [1.0],
        "mean": [0.0] * 7,
        "std": [0.005] * 7,
        "mask": [True] * 6 + [False],
        "mode": "bounds_q99",
    }
    d = build_tiny_vla(tmp_path / "normed", normalization=stats)
    pol = VLAPolicy(d)
    assert (
        json.loads((d / "evalfleet_policy.json").read_text())["normalization"]["mode"]
        == "bounds_q99"
    )
    for out in pol.act(make_inputs(3)).outputs:
        assert all(abs(v) <= 0.01 + 1e-9 for v in out.action.continuous()[:6])


# --- bad inputs: one clear error each ---------------------------------------------------


def test_missing_model_dir(tmp_path):
    with pytest.raises(VLALoadError, match="does not exist"):
        VLAPolicy(tmp_path / "nope")


def test_dir_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(VLALoadError, match="no config.json"):
        VLAPolicy(tmp_path)


def test_dir_that_is_not_a_vision_language_model(tmp_path):
    from transformers import GemmaConfig

    GemmaConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        intermediate_size=32,
        vocab_size=100,
    ).save_pretrained(tmp_path)
    with pytest.raises(VLALoadError, match="not a vision-language model"):
        VLAPolicy(tmp_path)


def test_empty_instruction(policy):
    bad = PolicyInput({"main": np.zeros((64, 64, 3), np.uint8)}, (0.0,) * 7, "  ", arm="a")
    with pytest.raises(ValueError, match="empty instruction"):
        policy.act([bad])
    with pytest.raises(ValueError, match="empty instruction"):
        policy.reset("a", "")


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64, 3), np.float32),
        np.zeros((2, 64, 3), np.uint8),
    ],
)
def test_wrongly_shaped_image(policy, frame):
    bad = PolicyInput({"main": frame}, (0.0,) * 7, "pick coke can", arm="a")
    with pytest.raises(ValueError, match="expected an HxWx3 uint8 RGB image"):
        policy.act([bad])


def test_missing_camera(model_dir):
    pol = VLAPolicy(model_dir, {"camera": "wrist"})
    with pytest.raises(ValueError, match="no camera 'wrist'"):
        pol.act(make_inputs(1))


def test_fast_input_path_matches_the_processor(model_dir, policy):
    assert policy.inputs.fast, "the tiny PaliGemma processor qualifies for the exact fast path"
    slow = VLAPolicy(model_dir, {"fast_inputs": False})
    assert not slow.inputs.fast
    inputs = make_inputs(8, seed=5, size=(120, 160)) + make_inputs(2, seed=6, size=(224, 224))
    images = [x.frames["main"] for x in inputs]
    prompts = [policy.prompt(x.instruction) for x in inputs]
    fast, ref = policy.inputs(images, prompts), slow.inputs.slow(images, prompts)
    assert set(fast) == set(ref)
    assert torch.allclose(fast["pixel_values"], ref["pixel_values"], atol=1e-4)
    assert all(torch.equal(fast[k], ref[k]) for k in ref if k != "pixel_values")
    assert [o.tokens for o in policy.act(inputs).outputs] == [
        o.tokens for o in slow.act(inputs).outputs
    ]
