"""A tiny PaliGemma-style VLA built from configs, offline, for tests and benchmarks.

`build_tiny_vla(dir)` writes a checkpoint directory exactly like a real one (config.json,
model.safetensors, tokenizer.json, processor config) plus evalfleet's `evalfleet_policy.json`
(action tokenizer settings and normalization statistics). Nothing is downloaded. Random
weights: the actions are meaningless, but every code path of the adapter is real.
"""

from __future__ import annotations

import json
from pathlib import Path

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
