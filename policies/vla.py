"""VLAPolicy: any Hugging Face vision-language model from a local directory, as an RT-2 policy.

Loads offline (local_files_only) with AutoModelForImageTextToText + AutoProcessor, prompts each
arm's camera image with its instruction, generates greedily with left padding (so a batch gives
the same actions as one at a time) and decodes the 8 RT-2 action tokens.

Constrained decoding (default): `ActionConstraint`, a LogitsProcessor holding a precomputed
boolean table [states, vocab]; every step it computes each row's state with tensor ops
(no Python per row) and masks the logits, so at action positions only action tokens can be
produced (terminate 0/1 first, then bin tokens, then EOS). With chain of thought, a free plan
comes first ("Plan: ..."), ended by the action marker ("Action:"), forced when the plan
budget runs out. Unconstrained, output that is not an action becomes Action.hold() with the
raw text in `hold_reason`: never a silently clamped bin.

The directory may hold `evalfleet_policy.json` (token mode, prompt, chain of thought,
normalization statistics); constructor options override it.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from transformers import LogitsProcessor, LogitsProcessorList

from policies.base import (
    Policy,
    PolicyBatchResult,
    PolicyInput,
    PolicyMetadata,
    PolicyOutput,
    check_frame,
    check_inputs,
    sha256_of,
)
from policies.tokenizer import ACTION_LEN, ActionParseError, ActionTokenizer, NormalizationStats
from policies.vla_inputs import InputBuilder
from robots.spaces import RT2_IO
from robots.types import Action, ActionSpace

log = logging.getLogger("evalfleet.policies.vla")
POLICY_FILE = "evalfleet_policy.json"
VERSION = "1"


class VLALoadError(ValueError):
    """The model directory cannot be used as a VLA policy."""


class VLAOptions(BaseModel):
    """Adapter options (registry `options:`); unset ones come from evalfleet_policy.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    camera: str | None = None  # default: the first frame of each input
    prompt_template: str | None = None  # "{instruction}" is replaced
    constrained: bool = True
    chain_of_thought: bool | None = None
    max_plan_tokens: int = 24
    action_marker: str | None = None
    token_mode: Literal["number", "reserved"] | None = None
    reserved_vocab_size: int | None = None  # reserved mode: ids counted down from here
    n_bins: int | None = None
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    fast_inputs: bool = True  # exact fast preprocessing where the self-check passes
    version: str | None = None


class ActionConstraint(LogitsProcessor):
    """Vectorized constrained decoding with a precomputed mask table.

    Table rows: 0..7 action positions, 8 after the action (EOS only), 9 free plan text
    (anything but EOS/pad), 10.. forced marker token j. Without a marker (no chain of
    thought) the generated length alone selects the row, shared by the whole batch."""

    def __init__(
        self,
        table: torch.Tensor,
        prompt_len: int,
        marker: torch.Tensor | None,
        max_plan_tokens: int,
    ) -> None:
        self.table, self.prompt_len, self.marker, self.max_plan = (
            table,
            prompt_len,
            marker,
            max_plan_tokens,
        )
        self.blocked = ~table

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        gen = input_ids[:, self.prompt_len :]
        n = gen.shape[1]
        if self.marker is None:
            blocked = self.blocked[min(n, ACTION_LEN)].unsqueeze(0)
        else:
            m = self.marker.shape[0]
            rows = gen.shape[0]
            if n >= m:
                hit = (gen.unfold(1, m, 1) == self.marker).all(-1)  # [B, n-m+1]
                found = hit.any(1)
                after = n - (hit.int().argmax(1) + m)  # tokens generated after the marker
            else:
                found = torch.zeros(rows, dtype=torch.bool, device=gen.device)
                after = torch.zeros(rows, dtype=torch.long, device=gen.device)
            free = (
                ACTION_LEN + 1
                if n < self.max_plan
                else ACTION_LEN + 2 + min(n - self.max_plan, m - 1)
            )
            state = torch.where(found, after.clamp(max=ACTION_LEN), free)
            blocked = self.blocked[state]
        # -inf from an earlier processor becomes the lowest finite score: an allowed token
        # still outranks every blocked one, even if all allowed tokens had been ruled out
        low = torch.finfo(scores.dtype).min
        return scores.nan_to_num(nan=low, neginf=low).masked_fill_(blocked, float("-inf"))


# HF's LogitsProcessorList inspects each processor's signature at every step; a cached
# signature makes that lookup cheap.
ActionConstraint.__call__.__signature__ = inspect.signature(ActionConstraint.__call__)


class VLAPolicy(Policy):
    needs_privileged = False

    def __init__(
        self,
        path: str | Path,
        options: VLAOptions | dict | None = None,
        name: str | None = None,
        action_space: ActionSpace | None = None,
        extra_logits_processors: Sequence[LogitsProcessor] = (),
    ) -> None:
        """`extra_logits_processors` run before the action constraint (e.g. a repetition
        penalty, or a test that scripts the model's text)."""
        self.extra_processors = list(extra_logits_processors)
        self.options = opts = (
            options if isinstance(options, VLAOptions) else VLAOptions(**(options or {}))
        )
        self.path = p = Path(path)
        self.action_space = action_space or ActionSpace()
        file_cfg = self._check_dir(p)
        self.prompt_template = opts.prompt_template or file_cfg.get(
            "prompt_template", "What action should the robot take to {instruction}?"
        )
        self.chain_of_thought = bool(
            opts.chain_of_thought
            if opts.chain_of_thought is not None
            else file_cfg.get("chain_of_thought", False)
        )
        self.marker_text = opts.action_marker or file_cfg.get("action_marker", "Action:")
        token_mode = opts.token_mode or file_cfg.get("token_mode", "number")
        n_bins = int(opts.n_bins or file_cfg.get("n_bins", 256))
        norm = file_cfg.get("normalization")
        self.device = torch.device(opts.device)
        self.dtype = getattr(torch, opts.dtype)
        self.model, self.processor = self._load(p)
        tok = self.tokenizer = self.processor.tokenizer
        tok.padding_side = "left"
        self.inputs = InputBuilder(self.processor, fast=opts.fast_inputs)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        kw = {
            "action_space": self.action_space,
            "n_bins": n_bins,
            "normalization": NormalizationStats.from_dict(norm) if norm else None,
        }
        if token_mode == "number":
            self.action_tokenizer = ActionTokenizer.with_number_tokens(self._number_token_id, **kw)
        else:
            self.action_tokenizer = ActionTokenizer.with_reserved_block(
                opts.reserved_vocab_size or len(tok), **kw
            )
        self.eos_id = int(tok.eos_token_id)
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        clash = {self.eos_id, self.pad_id} & set(self.action_tokenizer.token_ids.tolist())
        if clash:
            raise VLALoadError(
                f"{p}: action token ids {sorted(clash)} are the tokenizer's EOS/pad; "
                "choose another token_mode or reserved_vocab_size"
            )
        self.marker_ids = tuple(tok.encode(self.marker_text, add_special_tokens=False))
        if self.chain_of_thought and not self.marker_ids:
            raise VLALoadError(f"{p}: action marker {self.marker_text!r} tokenizes to nothing")
        self._table = self._mask_table()
        config = {
            "path": str(p.resolve()),
            "options": opts.model_dump(),
            "policy_file": file_cfg,
            "token_mode": token_mode,
        }
        files = [f for f in p.iterdir() if f.is_file()]
        self.metadata = PolicyMetadata(
            name=name or p.name,
            version=opts.version or file_cfg.get("version", VERSION),
            kind="vla",
            action_space=self.action_space,
            checksum=sha256_of(config | {"path": None}, files),
            config=config,
            io=replace(RT2_IO, camera_names=(opts.camera,) if opts.camera else ()),  # the camera it reads by name
        )
        self._instructions: dict[str, str] = {}

    # --- loading ----------------------------------------------------------------------
    @staticmethod
    def _check_dir(p: Path) -> dict:
        if not p.is_dir():
            raise VLALoadError(
                f"VLA model directory {p} does not exist; set the policy's 'path' "
                "to a local checkpoint directory (config.json + weights + processor)"
            )
        if not (p / "config.json").is_file():
            raise VLALoadError(
                f"{p} has no config.json, so it is not a Hugging Face model "
                "directory; save the model with save_pretrained() there"
            )
        pf = p / POLICY_FILE
        try:
            return json.loads(pf.read_text()) if pf.is_file() else {}
        except json.JSONDecodeError as e:
            raise VLALoadError(f"{pf} is not valid JSON ({e}); fix or delete it") from e

    def _load(self, p: Path):
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        try:
            cfg = AutoConfig.from_pretrained(p, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise VLALoadError(
                f"{p}/config.json cannot be read as a transformers config: {e}"
            ) from e
        if cfg.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            raise VLALoadError(
                f"{p} holds a {cfg.model_type!r} model, which is not a vision-language "
                "model (no AutoModelForImageTextToText class); point 'path' at an "
                "image-text-to-text checkpoint such as PaliGemma"
            )
        try:
            processor = AutoProcessor.from_pretrained(p, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise VLALoadError(f"{p}: cannot load its processor offline: {e}") from e
        if not (hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")):
            raise VLALoadError(
                f"{p}: the saved processor ({type(processor).__name__}) has no image "
                "processor + tokenizer; save the model's full processor there"
            )
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                p, local_files_only=True, dtype=self.dtype
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise VLALoadError(f"{p}: cannot load the model weights offline: {e}") from e
        return model.to(self.device).eval(), processor

    def _number_token_id(self, number: str) -> int | None:
        """The single id the tokenizer produces for `number` after "Action:", or None."""
        tok = self.tokenizer
        prefix = tok.encode(self.marker_text, add_special_tokens=False)
        ids = tok.encode(f"{self.marker_text} {number}", add_special_tokens=False)
        if (
            len(ids) == len(prefix) + 1
            and ids[: len(prefix)] == prefix
            and ids[-1] != tok.unk_token_id
        ):
            return int(ids[-1])
        return None

    def _mask_table(self) -> torch.Tensor:
        v, m = self.vocab_size, len(self.marker_ids)
        table = np.zeros((ACTION_LEN + 2 + max(m, 1), v), dtype=bool)
        table[:ACTION_LEN] = self.action_tokenizer.position_masks(v)
        table[ACTION_LEN, self.eos_id] = True
        table[ACTION_LEN + 1] = True  # free plan text ...
        table[ACTION_LEN + 1, [self.eos_id, self.pad_id]] = False  # ... that cannot end early
        for j, t in enumerate(self.marker_ids):
            table[ACTION_LEN + 2 + j, t] = True
        return torch.from_numpy(table).to(self.device)

    # --- Policy -----------------------------------------------------------------------
    def reset(self, arm: str, instruction: str) -> None:
        if not instruction or not instruction.strip():
            raise ValueError(f"VLAPolicy.reset: empty instruction for arm {arm!r}")
        self._instructions[arm] = instruction

    def prompt(self, instruction: str) -> str:
        text = self.prompt_template.replace("{instruction}", instruction.strip())
        image_token = getattr(self.processor, "image_token", None)
        if image_token and image_token not in text:
            text = image_token + text
        return text

    def max_new_tokens(self) -> int:
        plan = self.options.max_plan_tokens + len(self.marker_ids) if self.chain_of_thought else 0
        return plan + ACTION_LEN + 1

    @torch.inference_mode()
    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        t0 = time.perf_counter()
        if not inputs:
            return PolicyBatchResult([], 0.0)
        check_inputs(inputs, where="VLAPolicy.act")
        images = [
            check_frame(x, i, self.options.camera, "VLAPolicy.act") for i, x in enumerate(inputs)
        ]
        enc = self.inputs(images, [self.prompt(x.instruction) for x in inputs])
        enc = {
            k: (v.to(self.device, self.dtype) if k == "pixel_values" else v.to(self.device))
            for k, v in enc.items()
        }
        prompt_len = enc["input_ids"].shape[1]
        procs = LogitsProcessorList(self.extra_processors)
        if self.options.constrained:
            marker = (
                torch.tensor(self.marker_ids, device=self.device) if self.chain_of_thought else None
            )
            procs.append(
                ActionConstraint(self._table, prompt_len, marker, self.options.max_plan_tokens)
            )
        out = self.model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=self.max_new_tokens(),
            logits_processor=procs,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
        )
        gen = out[:, prompt_len:].cpu().numpy()
        outputs = [self._parse(row.tolist()) for row in gen]
        return PolicyBatchResult(outputs, time.perf_counter() - t0)

    def _parse(self, ids: list[int]) -> PolicyOutput:
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        ids = [i for i in ids if i != self.pad_id]
        raw = self.tokenizer.decode(ids, skip_special_tokens=True)
        m, pos = self.marker_ids, -1
        if m:
            pos = next(
                (k for k in range(len(ids) - len(m) + 1) if tuple(ids[k : k + len(m)]) == m), -1
            )
        act_ids = ids[pos + len(m) : pos + len(m) + ACTION_LEN] if pos >= 0 else ids[:ACTION_LEN]
        plan = None
        if pos > 0:
            plan = self.tokenizer.decode(ids[:pos], skip_special_tokens=True).strip()
            plan = plan[len("Plan:") :].strip() if plan.startswith("Plan:") else plan
            plan = plan or None
        try:
            action = self.action_tokenizer.decode_ids(act_ids)
        except ActionParseError as e:
            reason = f"model output is not an action ({e}); raw text: {raw!r}"
            log.warning("VLA %s: holding: %s", self.metadata.name, reason)
            return PolicyOutput(
                Action.hold(), tokens=tuple(ids), text=raw, plan=plan, hold_reason=reason
            )
        return PolicyOutput(action, tokens=tuple(act_ids), text=raw, plan=plan)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
