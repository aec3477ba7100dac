"""Success detectors: pluggable labellers of recorded episodes (label source `auto`).

Kinds (docs/detectors.md): `sim` (the simulator's own predicate, optionally flipped on a
seeded share of episodes), `vlm` (a vision-language model's yes/no answer on the final
frames), `remote` (an HTTP server that judges). Pure parts: base (the typed seam), options
(validation, checksum), scoring. Shell: frames (PyAV), sim/vlm/remote, build, run
(`label_campaign`).
"""

from orchestrator.detectors.base import (
    Detector,
    DetectorError,
    DetectorInput,
    DetectorKind,
    Verdict,
)

__all__ = ["Detector", "DetectorError", "DetectorInput", "DetectorKind", "Verdict"]
