"""Test policies, offline, for tests and benchmarks (not shipped: they live in tests/).

`build_tiny_vla(dir)` writes a tiny PaliGemma-style checkpoint directory exactly like a real
one (config.json, model.safetensors, tokenizer.json, processor config) plus evalfleet's
`evalfleet_policy.json` (action tokenizer settings and normalization statistics). Nothing is
downloaded. Random weights: the actions are meaningless, but every code path of the adapter
is real.

`ChunkedPolicy` (kind `tests.policy_kit:ChunkedPolicy`, a policy class named by its import
path like a lab's own): emits H x 7 ee_delta action chunks after a fixed
`inference_ms` per batch, like a pi0/ACT-style model's timing without a model: for the
episode loop's chunk execution, its tests and benchmarks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from policies.base import (
    ActionChunk,
    Chunking,
    Policy,
    PolicyBatchResult,
    PolicyInput,
    PolicyMetadata,
    PolicyOutput,
    check_inputs,
    sha256_of,
)
from policies.oracle import space_io
from robots.spaces import PolicyIO
from robots.types import ActionSpace

POLICY_FILE = "evalfleet_policy.json"

_WORDS = (  # noqa: SIM905 - a word list reads better as text
    "Plan Action In Out What action should the robot take to a an of on in into from near "
    "pick move knock over place upright open close drawer top middle bottom can bottle cup "
    "coke 7up pepsi apple orange sponge rxbar blueberry water green red blue purple lime "
    "cyan block ball banana toy car star circle marker number person with glasses hat up "
    "out left right object different sum two plus one three"
).split()
_PUNCT = [":", ".", "?", ",", "!", "\n"]


def tiny_tokenizer():
    """WordLevel tokenizer: specials, number tokens "0".."255", a small word list, punctuation.

    Metaspace pre-tokenization + decoding round-trips text like "Plan: pick 7up can. Action: 1 2"."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # Gemma's default special ids: pad 0, eos 1, bos 2.
    vocab_list = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"▁{n}" for n in range(256)]
    vocab_list += [f"▁{w}" for w in _WORDS] + _PUNCT
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab_list)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(),
            pre_tokenizers.Split(Regex(r"[.:?,!\n]"), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
    )


def build_tiny_vla(
    directory: str | Path,
    *,
    seed: int = 0,
    image_size: int = 224,
    patch_size: int = 16,
    hidden: int = 32,
    layers: int = 2,
    init_std: float = 0.5,
    token_mode: str = "number",
    chain_of_thought: bool = False,
    normalization: dict | None = None,
) -> Path:
    """Build, save and return `directory` holding a tiny random PaliGemma + processor."""
    import torch
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
    )

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    n_img = (image_size // patch_size) ** 2
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    image_processor.image_seq_length = n_img
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vocab = len(tokenizer)  # the processor added <image> and the <loc>/<seg> tokens
    config = PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        text_config={
            "model_type": "gemma",
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": hidden // 2,
            "vocab_size": vocab,
            "initializer_range": init_std,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "bos_token_id": 2,
        },
        image_token_index=processor.image_token_id,
        projection_dim=hidden,
        hidden_size=hidden,
        vocab_size=vocab,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(config).eval()
    with torch.no_grad():  # larger random weights, so outputs depend visibly on the input
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "norm" not in name:
                p.normal_(0.0, init_std / max(1.0, p.shape[-1] ** 0.5) * 4)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 1
    model.generation_config.bos_token_id = 2
    model.save_pretrained(out)
    processor.save_pretrained(out)
    policy = {
        "format": 1,
        "n_bins": 256,
        "token_mode": token_mode,
        "chain_of_thought": chain_of_thought,
        "action_marker": "Action:",
        "prompt_template": "What action should the robot take to {instruction}?",
        "normalization": normalization,
    }
    (out / POLICY_FILE).write_text(json.dumps(policy, indent=2))
    return out


class ChunkedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    horizon: int = Field(16, ge=1, le=1024, description="rows per chunk (H)")
    execute_steps: int = Field(8, ge=1, description="rows executed before the next chunk")
    inference_ms: float = Field(0.0, ge=0.0, le=60_000, description="model time per batch")
    control_hz: float = Field(15.0, gt=0.0, le=1000.0)
    temporal_ensemble: bool = False
    terminate_after: int | None = Field(
        None, ge=1, description="chunks after which a chunk asks to terminate (its last row)")
    space: Literal["ee_delta", "joint_position"] = Field(
        "ee_delta", description="ee_delta[7] or joint_position[7] (the sim's UR5e + gripper)")


CHUNKED_KIND = "tests.policy_kit:ChunkedPolicy"


class ChunkedPolicy(Policy):
    """ee_delta[7] chunks: row i moves dz = +0.001 * (i + 1) (tiny, within limits), gripper
    open. joint_position[7] chunks: row i = the observed joints (the state's first six
    values, the sim's joint state) with joint 0 moved by 0.001 * (i + 1) rad, gripper open.
    `text` names the chunk's number within the arm's episode."""

    needs_privileged = False
    Options = ChunkedOptions
    requires_path = False

    @classmethod
    def declared_io(cls, options: ChunkedOptions) -> PolicyIO:
        return space_io(options.space)

    def __init__(self, options: ChunkedOptions | dict | None = None, name: str = "chunked") -> None:
        o = options if isinstance(options, ChunkedOptions) else ChunkedOptions(**(options or {}))
        if o.execute_steps > o.horizon:
            raise ValueError(f"chunked policy: execute_steps {o.execute_steps} > horizon {o.horizon}")
        self.options = o
        config = {"kind": CHUNKED_KIND, **o.model_dump()}
        self.metadata = PolicyMetadata(
            name=name, version="1", kind=CHUNKED_KIND,
            action_space=ActionSpace(control_hz=o.control_hz), checksum=sha256_of(config),
            config=config,
            chunking=Chunking(o.horizon, o.execute_steps, o.temporal_ensemble),
            io=space_io(o.space),
        )
        self.calls: dict[str, int] = {}

    def reset(self, arm: str, instruction: str) -> None:
        self.calls[arm] = 0

    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        t0 = time.perf_counter()
        check_inputs(inputs, where="ChunkedPolicy.act")
        o = self.options
        if o.inference_ms:
            time.sleep(o.inference_ms / 1000.0)  # the model's compute time, simulated
        ramp = 0.001 * (np.arange(o.horizon) + 1)
        rows = np.zeros((o.horizon, 7))
        rows[:, 2] = ramp
        rows[:, 6] = 1.0
        outs = []
        for x in inputs:
            if o.space == "joint_position":
                if len(x.proprio) < 6:
                    raise ValueError(f"ChunkedPolicy.act: arm {x.arm!r} state has "
                                     f"{len(x.proprio)} values; joint_position needs 6 joints")
                rows = np.zeros((o.horizon, 7))
                rows[:, :6] = np.asarray(x.proprio[:6], dtype=np.float64)
                rows[:, 0] += ramp
                rows[:, 6] = 1.0
            n = self.calls.get(x.arm, 0)
            self.calls[x.arm] = n + 1
            term = o.terminate_after is not None and n + 1 >= o.terminate_after
            chunk = ActionChunk(rows, o.control_hz, terminate_at=o.horizon - 1 if term else None)
            outs.append(PolicyOutput(chunk=chunk, chunk_hz=o.control_hz, text=f"chunk {n}"))
        return PolicyBatchResult(outs, time.perf_counter() - t0)
