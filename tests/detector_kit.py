"""A tiny random vision-language judge for the `vlm` detector's tests (not shipped).

`build_tiny_judge(dir)` saves a tiny PaliGemma (random weights, built from a config like
tests/policy_kit.build_tiny_vla) and its processor, with a word-level tokenizer that knows
the judge's question and "yes"/"no". Nothing is downloaded. The answers are meaningless but
depend on the image, and every code path of the detector is real.
"""

from __future__ import annotations

from pathlib import Path

_WORDS = (  # noqa: SIM905 - a word list reads better as text
    "Did the robot succeed at task Answer yes Yes no No or pick move place open close drawer "
    "can cup block near up into of a"
).split()
_PUNCT = [":", ".", "?", ",", "!", "\n"]


def judge_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"▁{w}" for w in _WORDS] + _PUNCT
    # "yes" and "no" also without the word-start marker: what encode("yes") gives
    vocab += ["yes", "no", "Yes", "No"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(prepend_scheme="first"),
        pre_tokenizers.Split(Regex(r"[.:?,!\n]"), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="left")


def build_tiny_judge(directory: str | Path, *, seed: int = 0, image_size: int = 32,
                     patch_size: int = 16, hidden: int = 32) -> Path:
    import torch
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
    )

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = judge_tokenizer()
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3,
        image_std=[0.5] * 3)
    image_processor.image_seq_length = (image_size // patch_size) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vocab = len(tokenizer)
    config = PaliGemmaConfig(
        vision_config={"model_type": "siglip_vision_model", "hidden_size": hidden,
                       "intermediate_size": 2 * hidden, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": image_size,
                       "patch_size": patch_size},
        text_config={"model_type": "gemma", "hidden_size": hidden,
                     "intermediate_size": 2 * hidden, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 1,
                     "head_dim": hidden // 2, "vocab_size": vocab, "pad_token_id": 0,
                     "eos_token_id": 1, "bos_token_id": 2},
        image_token_index=processor.image_token_id, projection_dim=hidden, hidden_size=hidden,
        vocab_size=vocab, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(config).eval()
    with torch.no_grad():  # larger random weights: the answer depends visibly on the image
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "norm" not in name:
                p.normal_(0.0, 2.0 / max(1.0, p.shape[-1] ** 0.5))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
