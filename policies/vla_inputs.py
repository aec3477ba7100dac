"""Model inputs for a batch of (image, prompt) pairs: the processor, or an exact fast path.

The generic path calls the checkpoint's processor (left padding). For fixed-size image
processors (resize to height x width, rescale, normalize: SigLIP/PaliGemma and the like) a
fast path gives the same tensors several times faster: PIL resize with the processor's own
resampling filter (on torch.get_num_threads() threads: PIL releases the GIL), then one
vectorized rescale + normalize for the whole batch; the text part (input_ids, attention_mask,
token_type_ids) is computed once per prompt by the processor and left-padded here. The fast
path is only enabled after a self-check at load time reproduces the processor's output on
test inputs; otherwise the processor is used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

log = logging.getLogger("evalfleet.policies.vla")
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class InputBuilder:
    def __init__(self, processor, fast: bool = True) -> None:
        self.processor = processor
        self.pad_id = processor.tokenizer.pad_token_id or 0
        self._text_cache: dict[str, dict[str, torch.Tensor]] = {}
        self.fast = False
        self._pool: ThreadPoolExecutor | None = None
        if fast and self._eligible():
            try:
                self.fast = self._self_check()
            except Exception as e:  # noqa: BLE001 - any mismatch just disables the fast path
                log.info("fast input path disabled: %s", e)

    # --- generic ------------------------------------------------------------------------
    def slow(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.processor(
            images=list(images), text=list(prompts), return_tensors="pt", padding=True
        )
        enc.pop("labels", None)
        return dict(enc)

    def __call__(
        self, images: Sequence[np.ndarray], prompts: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        if not self.fast:
            return self.slow(images, prompts)
        out = self._text(prompts)
        out["pixel_values"] = self._pixels(images)
        return out

    # --- fast path ----------------------------------------------------------------------
    def _eligible(self) -> bool:
        ip = getattr(self.processor, "image_processor", None)
        size = getattr(ip, "size", None)
        h, w = getattr(size, "height", None), getattr(size, "width", None)
        if size is not None and h is None and isinstance(size, dict):
            h, w = size.get("height"), size.get("width")
        return bool(
            ip is not None
            and h
            and w
            and getattr(ip, "do_resize", False)
            and not getattr(ip, "do_center_crop", False)
            and not getattr(ip, "do_pad", False)
            and getattr(ip, "image_mean", None) is not None
        )

    def _self_check(self) -> bool:
        rng = np.random.default_rng(0)
        imgs = [
            rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
            rng.integers(0, 256, (97, 131, 3), dtype=np.uint8),
        ]
        prompts = [
            self._with_image("pick the can"),
            self._with_image("open the top drawer now please"),
        ]
        ref = self.slow(imgs, prompts)
        fast = self._text(prompts)
        fast["pixel_values"] = self._pixels(imgs)
        if set(ref) != set(fast):
            raise ValueError(f"processor returns {sorted(ref)}, fast path {sorted(fast)}")
        for k in ref:
            a, b = ref[k], fast[k]
            same = a.shape == b.shape and (
                torch.allclose(a.float(), b.float(), atol=1e-4)
                if k == "pixel_values"
                else torch.equal(a, b)
            )
            if not same:
                raise ValueError(f"{k} differs from the processor's")
        return True

    def _with_image(self, text: str) -> str:
        token = getattr(self.processor, "image_token", None)
        return (token or "") + text

    def _pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        ip = self.processor.image_processor
        size = ip.size
        h = size.height if hasattr(size, "height") else size["height"]
        w = size.width if hasattr(size, "width") else size["width"]
        resample = Image.Resampling(int(getattr(ip, "resample", Image.Resampling.BILINEAR)))
        todo = [i for i, img in enumerate(images) if img.shape[:2] != (h, w)]
        out = np.empty((len(images), h, w, 3), dtype=np.uint8)

        def resize(idx: list[int]) -> None:  # PIL releases the GIL while resampling
            for i in idx:
                out[i] = np.asarray(Image.fromarray(images[i]).resize((w, h), resample))

        workers = min(max(1, torch.get_num_threads()), len(todo) // 4)
        if workers > 1:
            if self._pool is None or self._pool._max_workers < workers:
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="vla-resize")
            list(self._pool.map(resize, [todo[k::workers] for k in range(workers)]))
        else:
            resize(todo)
        for i, img in enumerate(images):
            if img.shape[:2] == (h, w):
                out[i] = img
        arr = out
        # rescale + normalize fused into one per-channel affine map, in channels-last order
        scale = float(ip.rescale_factor) if getattr(ip, "do_rescale", True) else 1.0
        mean, std = np.zeros(3), np.ones(3)
        if getattr(ip, "do_normalize", True):
            mean = np.broadcast_to(np.asarray(ip.image_mean, dtype=np.float64), (3,))
            std = np.broadcast_to(np.asarray(ip.image_std, dtype=np.float64), (3,))
        mul = torch.tensor(scale / std, dtype=torch.float32)
        add = torch.tensor(-mean / std, dtype=torch.float32)
        x = torch.from_numpy(arr).to(torch.float32).mul_(mul).add_(add)
        return x.permute(0, 3, 1, 2).contiguous()

    def _text(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        rows = []
        for p in prompts:
            if p not in self._text_cache:
                dummy = np.zeros((32, 32, 3), np.uint8)
                enc = self.slow([dummy], [p])
                self._text_cache[p] = {k: enc[k][0] for k in TEXT_KEYS if k in enc}
            rows.append(self._text_cache[p])
        n = max(len(r["input_ids"]) for r in rows)
        out = {}
        for k in rows[0]:
            fill = self.pad_id if k == "input_ids" else 0
            out[k] = torch.stack(
                [
                    torch.cat([torch.full((n - len(r[k]),), fill, dtype=r[k].dtype), r[k]])
                    for r in rows
                ]
            )
        return out
