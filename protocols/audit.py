"""Which episodes humans audit: a stratified Bernoulli sample with a known inclusion
probability (pure).

A campaign created with an audit rate r (`campaign create --audit-rate r`, stored in
campaigns.audit_rate and fixed from then on) sends to the human Label queue only the
episodes of its *drawn* trials. A trial is drawn iff a keyed hash of (campaign seed, trial
id) maps below r:

    u = BLAKE2b(key = campaign seed, message = trial id) / 2**64 in [0, 1);  drawn iff u < r

Why this is a known-probability sample (what prediction-powered inference needs):

* The draw depends on nothing but the seed, the trial id and r. All three are fixed when the
  campaign is planned, before any episode runs: so the draw is independent of the episode's
  outcome, of its human labels and of any detector's label (a detector registered later
  cannot move an episode in or out of the audit).
* The hash is a pseudo-random function of the trial id: u is uniform on [0, 1) and the u's of
  distinct trials are independent for every practical purpose, so each trial is drawn with
  probability exactly r, independently of the others (Bernoulli sampling).
* The stratum (policy x category) is not an input either: every stratum is Bernoulli-sampled
  at the same known rate r. A stratified estimator weights each stratum by its share of the
  episodes N_h / N (protocols.ppi.ppi_stratified), which here is also weighting each audited
  episode by 1 / r.
* It is keyed on the trial, not the episode: a retried trial keeps its draw, so aborting and
  re-running an episode can never move a trial into or out of the audit.

The realised sample size per stratum is random (Binomial(N_h, r)); the estimators condition
on it. tests/unit/test_audit.py checks the realised fraction per stratum over many trial ids.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

__all__ = ["audit_fraction", "audit_u", "check_audit_rate", "drawn", "drawn_ids"]

_SCALE = float(2**64)


def check_audit_rate(rate: float, where: str = "--audit-rate") -> float:
    """The rate as a float, or ValueError with one line saying what to give."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{where} {rate!r}: give the share of episodes humans audit, a number "
                         "in (0, 1], e.g. 0.2") from None
    if not (math.isfinite(r) and 0.0 < r <= 1.0):
        raise ValueError(f"{where} {rate!r}: must be in (0, 1] (the share of episodes humans "
                         "audit, e.g. 0.2)")
    return r


def _hasher(seed: int) -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=8, key=str(int(seed)).encode("ascii"),
                           person=b"evalfleet-audit")


def _digest(keyed: hashlib.blake2b, trial_id: int) -> int:
    h = keyed.copy()
    h.update(str(int(trial_id)).encode("ascii"))
    return int.from_bytes(h.digest(), "big")


def audit_u(seed: int, trial_id: int) -> float:
    """The trial's uniform draw in [0, 1): a keyed BLAKE2b hash of the trial id, keyed by the
    campaign seed, over 2**64."""
    return _digest(_hasher(seed), trial_id) / _SCALE


def drawn(seed: int, trial_id: int, rate: float | None) -> bool:
    """Is the trial in the human audit? (rate None: the campaign has no audit sampling, every
    trial goes to humans.)"""
    if rate is None:
        return True
    return _digest(_hasher(seed), trial_id) < rate * _SCALE  # exact int-float comparison


def drawn_ids(seed: int, trial_ids: Iterable[int], rate: float | None) -> frozenset[int]:
    """The drawn trials among these (the same as `drawn` one by one)."""
    if rate is None:
        return frozenset(trial_ids)
    keyed, bound = _hasher(seed), rate * _SCALE
    return frozenset(t for t in trial_ids if _digest(keyed, t) < bound)


def audit_fraction(seed: int, trial_ids: Iterable[int], rate: float) -> float:
    """The realised share of drawn trials (NaN for no trials)."""
    ids = list(trial_ids)
    return len(drawn_ids(seed, ids, rate)) / len(ids) if ids else math.nan
