"""The `vlm` detector: a vision-language model asked a yes/no question on the final frame(s).

Loads offline (local_files_only) with AutoModelForImageTextToText + AutoProcessor, like the
`vla` policy kind. For each episode and each of its last `frames` frames of `camera`, one
forward pass (batched, torch.no_grad) gives the next-token logits after the question; the
frame's score is the softmax restricted to the yes and no tokens (scoring.yes_no_score), the
episode's score the mean over its frames, success = score >= threshold.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.detectors.base import (
    DetectorError,
    DetectorInput,
    DetectorKind,
    Verdict,
    pick_frames,
)
from orchestrator.detectors.options import VlmOptions
from orchestrator.detectors.scoring import yes_no_score


def word_ids(tokenizer: Any, words: Sequence[str], where: str) -> list[int]:
    """The single token id of each word (those that are one known token); DetectorError when
    none is."""
    ids: list[int] = []
    unk = getattr(tokenizer, "unk_token_id", None)
    for w in words:
        got = tokenizer.encode(w, add_special_tokens=False)
        if len(got) == 1 and got[0] != unk and int(got[0]) not in ids:
            ids.append(int(got[0]))
    if not ids:
        raise DetectorError(f"{where}: none of {list(words)} is a single token of the model's "
                            "tokenizer; set -o yes_words=.../no_words=... to words that are")
    return ids


class VlmDetector:
    kind = DetectorKind.VLM
    needs_frames = True

    def __init__(self, options: VlmOptions, name: str = "vlm") -> None:
        import torch

        self.options, self.name = options, name
        self.where = f"detector {name!r} (vlm {options.model_path})"
        if options.threads is not None:
            torch.set_num_threads(options.threads)
        self.model, self.processor = self._load(Path(options.model_path))
        tok = self.processor.tokenizer
        tok.padding_side = "left"  # the last position is every row's next token
        self.yes_ids = word_ids(tok, options.yes_words, self.where)
        self.no_ids = word_ids(tok, options.no_words, self.where)
        if set(self.yes_ids) & set(self.no_ids):
            raise DetectorError(f"{self.where}: yes_words and no_words share a token")
        params = inspect.signature(self.model.forward).parameters
        self._keep_last = "logits_to_keep" in params

    def _load(self, p: Path) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not p.is_dir():
            raise DetectorError(f"{self.where}: model_path {p} is not a directory")
        try:
            processor = AutoProcessor.from_pretrained(p, local_files_only=True)
            model: Any = AutoModelForImageTextToText.from_pretrained(p, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            raise DetectorError(f"{self.where}: cannot load the model offline: "
                                f"{str(e).splitlines()[0] if str(e) else e.__class__.__name__}"
                                ) from None
        if not (hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")):
            raise DetectorError(f"{self.where}: the saved processor has no image processor + "
                                "tokenizer; save the model's full processor there")
        try:
            model = model.to(torch.device(self.options.device))
        except (RuntimeError, AssertionError) as e:  # no CUDA build, no such device
            raise DetectorError(f"{self.where}: device {self.options.device!r} is not usable "
                                f"here: {str(e).splitlines()[0]}") from None
        return model.eval(), processor

    def cameras(self, recorded: Sequence[str]) -> tuple[str, ...]:
        cam = self.options.camera
        return tuple(recorded[:1]) if cam is None else tuple(c for c in recorded if c == cam)

    def prompt(self, x: DetectorInput) -> str:
        text = self.options.question.format(instruction=x.instruction.strip(), task=x.task_key)
        image_token = getattr(self.processor, "image_token", None)
        if image_token and image_token not in text:
            text = image_token + text
        return text

    def scores(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> np.ndarray:
        """P(yes) for each (image, prompt) pair, in one forward pass."""
        import torch

        enc = self.processor(images=list(images), text=list(prompts), return_tensors="pt",
                             padding=True)
        enc.pop("labels", None)
        kwargs: dict[str, Any] = {k: v.to(self.options.device) for k, v in enc.items()}
        if self._keep_last:
            kwargs["logits_to_keep"] = 1
        with torch.no_grad():
            logits = self.model(**kwargs).logits[:, -1, :]
        return yes_no_score(logits.float().cpu().numpy(), self.yes_ids, self.no_ids)

    def judge_batch(self, inputs: Sequence[DetectorInput]) -> list[Verdict]:
        if not inputs:
            return []
        owner: list[int] = []
        images: list[np.ndarray] = []
        prompts: list[str] = []
        for i, x in enumerate(inputs):
            cams = pick_frames(x, self.options.camera, self.options.frames, self.where)
            frames = next(iter(cams.values())) if self.options.camera is None else cams[
                self.options.camera]
            text = self.prompt(x)
            for f in frames:
                owner.append(i)
                images.append(f)
                prompts.append(text)
        per_frame = self.scores(images, prompts)
        out = []
        for i in range(len(inputs)):
            s = float(np.clip(per_frame[[j for j, o in enumerate(owner) if o == i]].mean(),
                              0.0, 1.0))
            out.append(Verdict(s >= self.options.threshold, s, f"vlm P(yes)={s:.3f}"))
        return out

    def close(self) -> None:
        self.model = None
