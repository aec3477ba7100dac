"""RT-2 action tokens: 256 uniform bins per continuous dimension, terminate discrete.

Pure (numpy only). One action is 8 integers in RT-2 order: terminate (0/1), then the bins of
dx dy dz droll dpitch dyaw gripper. Its text form is "1 128 91 241 5 101 127 217"; with a
chain-of-thought plan, "Plan: pick 7up can. Action: 1 143 129 123 145 114 115 127".

A bin b of a dimension with range [lo, hi] covers [lo + b*w, lo + (b+1)*w) with w = (hi-lo)/n_bins
and decodes to its centre, so decode(encode(a)) is within half a bin of any in-range a.

Bins map to vocabulary token ids through a table (`token_ids[b]` is the id of bin b), built
either from a tokenizer's number tokens ("0".."255", as RT-2 with PaLI-X) or from a reserved
block of ids (the last 256 of the vocabulary, as OpenVLA). The terminate flag t is written
with the token of bin t, as in RT-2's text form.

Optional per-policy normalization statistics (OpenVLA's dataset statistics: q01/q99 or
mean/std per dimension) map raw actions into a normalized range before binning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from robots.protocol_actions import action_of, action_values
from robots.types import CONTINUOUS_DIMS, Action, ActionSpace

N_DIMS = len(CONTINUOUS_DIMS)
ACTION_LEN = N_DIMS + 1  # terminate + 7 bins
_NUMBERS = re.compile(r"^\d+( \d+)*$")


class ActionParseError(ValueError):
    """Text or token ids that are not a valid RT-2 action."""


@dataclass(frozen=True)
class NormalizationStats:
    """Per-dimension action statistics (OpenVLA's dataset_statistics), stored with a policy.

    mode "bounds_q99": x -> 2 (x - q01) / (q99 - q01) - 1, binned over [-1, 1].
    mode "normal":     x -> (x - mean) / std, binned over [-clip_std, clip_std].
    `mask[i]` False leaves dimension i raw (OpenVLA does not normalize the gripper).
    """

    q01: tuple[float, ...]
    q99: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mask: tuple[bool, ...] = (True,) * 6 + (False,)
    mode: str = "bounds_q99"
    clip_std: float = 3.0

    def __post_init__(self) -> None:
        for name in ("q01", "q99", "mean", "std", "mask"):
            if len(getattr(self, name)) != N_DIMS:
                raise ValueError(f"NormalizationStats.{name} needs {N_DIMS} values (one per dim)")
        if self.mode not in ("bounds_q99", "normal"):
            raise ValueError(
                f"NormalizationStats.mode must be 'bounds_q99' or 'normal', got {self.mode!r}"
            )

    @classmethod
    def from_actions(
        cls, actions: np.ndarray, mode: str = "bounds_q99", mask: Sequence[bool] | None = None
    ) -> NormalizationStats:
        """Statistics of an [N, 7] array of continuous actions."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != N_DIMS or len(a) == 0:
            raise ValueError(f"from_actions needs an [N, {N_DIMS}] array with N > 0, got {a.shape}")
        tup = lambda v: tuple(float(x) for x in v)
        return cls(
            q01=tup(np.quantile(a, 0.01, axis=0)),
            q99=tup(np.quantile(a, 0.99, axis=0)),
            mean=tup(a.mean(axis=0)),
            std=tup(a.std(axis=0)),
            mask=tuple(bool(m) for m in (mask if mask is not None else cls.mask)),
            mode=mode,
        )

    def normalized_range(self) -> tuple[float, float]:
        return (-1.0, 1.0) if self.mode == "bounds_q99" else (-self.clip_std, self.clip_std)

    def _scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """normalized = (x - shift) / scale on masked dims."""
        if self.mode == "bounds_q99":
            scale = np.maximum(np.subtract(self.q99, self.q01), 1e-8) / 2.0
            shift = np.asarray(self.q01) + scale
        else:
            scale, shift = np.maximum(np.asarray(self.std), 1e-8), np.asarray(self.mean)
        m = np.asarray(self.mask)
        return np.where(m, scale, 1.0), np.where(m, shift, 0.0)

    def normalize(self, values: np.ndarray) -> np.ndarray:
        scale, shift = self._scale_shift()
        return (np.asarray(values, dtype=np.float64) - shift) / scale

    def unnormalize(self, values: np.ndarray) -> np.ndarray:
        scale, shift = self._scale_shift()
        return np.asarray(values, dtype=np.float64) * scale + shift

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> NormalizationStats:
        return cls(
            q01=tuple(d["q01"]),
            q99=tuple(d["q99"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            mask=tuple(bool(m) for m in d.get("mask", cls.mask)),
            mode=str(d.get("mode", "bounds_q99")),
            clip_std=float(d.get("clip_std", 3.0)),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> NormalizationStats:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class EncodedAction:
    bins: tuple[int, ...]  # terminate, then 7 bins
    token_ids: tuple[int, ...]
    clipped: tuple[str, ...]  # names of the dimensions that were out of range and clipped


@dataclass(frozen=True)
class ParsedActionText:
    bins: tuple[int, ...]
    plan: str | None = None


def format_action_text(bins: Sequence[int], plan: str | None = None) -> str:
    """RT-2 text form: "1 128 91 ..." or "Plan: <plan> Action: 1 128 91 ..."."""
    nums = " ".join(str(int(b)) for b in bins)
    return nums if plan is None else f"Plan: {plan} Action: {nums}"


def parse_action_text(text: str, n_bins: int = 256) -> ParsedActionText:
    """Parse RT-2's text form (with or without "Plan: ... Action: ..."); strict about numbers."""
    body, plan = text.strip(), None
    if "Action:" in body:
        head, _, body = body.rpartition("Action:")
        head, body = head.strip(), body.strip()
        if head:
            plan = head[len("Plan:") :].strip() if head.startswith("Plan:") else head
    if not _NUMBERS.match(body):
        raise ActionParseError(
            f"not an RT-2 action: expected {ACTION_LEN} integers after "
            f"'Action:' (or alone), got {body[:80]!r}"
        )
    bins = tuple(int(x) for x in body.split())
    _check_bins(bins, n_bins)
    return ParsedActionText(bins=bins, plan=plan)


def _check_bins(bins: Sequence[int], n_bins: int) -> None:
    if len(bins) != ACTION_LEN:
        raise ActionParseError(
            f"an RT-2 action has {ACTION_LEN} numbers, got {len(bins)}: {list(bins)}"
        )
    if bins[0] not in (0, 1):
        raise ActionParseError(f"terminate must be 0 or 1, got {bins[0]}")
    bad = [b for b in bins[1:] if not 0 <= b < n_bins]
    if bad:
        raise ActionParseError(f"bins must be in 0..{n_bins - 1}, got {bad}")


class ActionTokenizer:
    """Action <-> bins <-> vocabulary ids <-> RT-2 text.

    `low`/`high` are the raw per-dimension ranges (default: the ActionSpace's limits). With
    `normalization`, masked dimensions are binned over the normalized range instead.
    `token_ids[b]` is the vocabulary id of bin b (default: id == bin).
    Counts of clipped values accumulate in `clip_counts` (per dimension) and `n_encoded`.
    """

    def __init__(
        self,
        low: Sequence[float] | None = None,
        high: Sequence[float] | None = None,
        *,
        action_space: ActionSpace | None = None,
        n_bins: int = 256,
        token_ids: Sequence[int] | None = None,
        normalization: NormalizationStats | None = None,
    ) -> None:
        space = action_space or ActionSpace()
        lo = np.asarray(low if low is not None else space.low, dtype=np.float64)
        hi = np.asarray(high if high is not None else space.high, dtype=np.float64)
        if lo.shape != (N_DIMS,) or hi.shape != (N_DIMS,) or np.any(lo >= hi):
            raise ValueError(
                f"ActionTokenizer needs {N_DIMS} ranges with low < high, got {lo} / {hi}"
            )
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        self.n_bins = int(n_bins)
        self.low, self.high, self.normalization = lo, hi, normalization
        self._lo, self._hi = lo.copy(), hi.copy()  # binning range (normalized where masked)
        if normalization is not None:
            nlo, nhi = normalization.normalized_range()
            m = np.asarray(normalization.mask)
            self._lo, self._hi = np.where(m, nlo, lo), np.where(m, nhi, hi)
        self._width = (self._hi - self._lo) / self.n_bins
        ids = np.arange(self.n_bins) if token_ids is None else np.asarray(token_ids, dtype=np.int64)
        if ids.shape != (self.n_bins,) or len(set(ids.tolist())) != self.n_bins or ids.min() < 0:
            raise ValueError(
                f"token_ids needs {self.n_bins} distinct non-negative ids, got {ids.shape}"
            )
        self.token_ids = ids
        self._bin_of_id = {int(t): b for b, t in enumerate(ids)}
        self.clip_counts = np.zeros(N_DIMS, dtype=np.int64)
        self.n_encoded = 0

    # --- vocabulary tables ------------------------------------------------------------
    @classmethod
    def with_number_tokens(
        cls, token_id_of: Callable[[str], int | None] | Mapping[str, int], **kw
    ) -> ActionTokenizer:
        """Bins as the tokenizer's single-token numbers "0".."n_bins-1" (RT-2 / PaLI-X)."""
        n = int(kw.get("n_bins", 256))
        lookup = token_id_of.get if isinstance(token_id_of, Mapping) else token_id_of
        ids = [lookup(str(b)) for b in range(n)]
        missing = [b for b, i in enumerate(ids) if i is None]
        if missing:
            raise ValueError(
                f"the tokenizer has no single token for numbers {missing[:5]}...; "
                "use token_mode 'reserved' (last n_bins ids) instead"
            )
        return cls(token_ids=[i for i in ids if i is not None], **kw)

    @classmethod
    def with_reserved_block(cls, vocab_size: int, **kw) -> ActionTokenizer:
        """Bins as the last n_bins ids of the vocabulary, bin 0 = vocab_size-1 (OpenVLA)."""
        n = int(kw.get("n_bins", 256))
        if vocab_size < n:
            raise ValueError(f"vocab_size {vocab_size} is smaller than n_bins {n}")
        return cls(token_ids=[vocab_size - 1 - b for b in range(n)], **kw)

    @property
    def terminate_ids(self) -> tuple[int, int]:
        return int(self.token_ids[0]), int(self.token_ids[1])

    def allowed_ids(self, position: int) -> np.ndarray:
        """Vocabulary ids valid at action position 0 (terminate) .. 7 (gripper)."""
        if not 0 <= position < ACTION_LEN:
            raise IndexError(f"action position must be 0..{ACTION_LEN - 1}, got {position}")
        return self.token_ids[:2] if position == 0 else self.token_ids

    def position_masks(self, vocab_size: int) -> np.ndarray:
        """Boolean [8, vocab_size]: row p marks the ids allowed at action position p."""
        if int(self.token_ids.max()) >= vocab_size:
            raise ValueError(
                f"action token id {int(self.token_ids.max())} >= vocab size {vocab_size}"
            )
        mask = np.zeros((ACTION_LEN, vocab_size), dtype=bool)
        mask[0, self.token_ids[:2]] = True
        mask[1:, self.token_ids] = True
        return mask

    def bins_to_ids(self, bins: Sequence[int]) -> tuple[int, ...]:
        _check_bins(bins, self.n_bins)
        return tuple(int(self.token_ids[b]) for b in bins)

    def ids_to_bins(self, ids: Sequence[int]) -> tuple[int, ...]:
        if len(ids) != ACTION_LEN:
            raise ActionParseError(f"an action is {ACTION_LEN} tokens, got {len(ids)}")
        bad = [int(i) for i in ids if int(i) not in self._bin_of_id]
        if bad:
            raise ActionParseError(f"token ids {bad[:4]} are not action tokens")
        bins = tuple(self._bin_of_id[int(i)] for i in ids)
        _check_bins(bins, self.n_bins)
        return bins

    # --- values <-> bins --------------------------------------------------------------
    def encode_array(
        self,
        values: np.ndarray,
        terminate: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """[N, 7] raw values (+ [N] terminate) -> ([N, 8] bins, [N, 7] clipped mask)."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != N_DIMS:
            raise ValueError(f"encode_array needs [N, {N_DIMS}] values, got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("cannot encode non-finite action values (NaN/inf); hold instead")
        if self.normalization is not None:
            v = self.normalization.normalize(v)
        clipped = (v < self._lo) | (v > self._hi)
        v = np.clip(v, self._lo, self._hi)
        b = np.clip(np.floor((v - self._lo) / self._width), 0, self.n_bins - 1).astype(np.int64)
        t = np.zeros(len(v), np.int64) if terminate is None else np.asarray(terminate, np.int64)
        self.clip_counts += clipped.sum(axis=0)
        self.n_encoded += len(v)
        return np.concatenate([t[:, None], b], axis=1), clipped

    def decode_array(self, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N, 8] bins -> ([N, 7] raw values at bin centres, [N] terminate bool)."""
        b = np.asarray(bins, dtype=np.int64)
        if b.ndim != 2 or b.shape[1] != ACTION_LEN:
            raise ValueError(f"decode_array needs [N, {ACTION_LEN}] bins, got {b.shape}")
        if np.any((b[:, 0] < 0) | (b[:, 0] > 1)) or np.any(
            (b[:, 1:] < 0) | (b[:, 1:] >= self.n_bins)
        ):
            raise ActionParseError(f"bins out of range (terminate 0/1, bins 0..{self.n_bins - 1})")
        v = self._lo + (b[:, 1:] + 0.5) * self._width
        if self.normalization is not None:
            v = self.normalization.unnormalize(v)
        return v, b[:, 0].astype(bool)

    def encode(
        self, action: Action | Sequence[float], terminate: bool | None = None
    ) -> EncodedAction:
        if isinstance(action, Action):
            values, term = action_values(action), action.terminate
        else:
            values, term = tuple(action), False
        if terminate is not None:
            term = terminate
        b, clipped = self.encode_array(np.asarray([values]), np.asarray([int(term)]))
        bins = tuple(int(x) for x in b[0])
        return EncodedAction(
            bins=bins,
            token_ids=tuple(int(self.token_ids[x]) for x in bins),
            clipped=tuple(n for n, c in zip(CONTINUOUS_DIMS, clipped[0]) if c),
        )

    def decode(self, bins: Sequence[int]) -> Action:
        _check_bins(bins, self.n_bins)
        v, t = self.decode_array(np.asarray([bins]))
        return action_of(tuple(v[0]), terminate=bool(t[0]))

    def decode_ids(self, ids: Sequence[int]) -> Action:
        return self.decode(self.ids_to_bins(ids))

    def bin_width(self) -> np.ndarray:
        """Width of one bin per dimension in raw units (approximate if normalized)."""
        if self.normalization is None:
            return self._width.copy()
        scale, _ = self.normalization._scale_shift()
        return self._width * scale

    # --- text -------------------------------------------------------------------------
    def format_text(self, bins: Sequence[int], plan: str | None = None) -> str:
        _check_bins(bins, self.n_bins)
        return format_action_text(bins, plan)

    def parse_text(self, text: str) -> ParsedActionText:
        return parse_action_text(text, self.n_bins)

    # --- persistence ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "n_bins": self.n_bins,
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "normalization": None if self.normalization is None else self.normalization.to_dict(),
        }

    def clip_report(self) -> dict[str, int]:
        return {n: int(c) for n, c in zip(CONTINUOUS_DIMS, self.clip_counts)} | {
            "encoded": self.n_encoded
        }
