"""A registered detector, built to judge: its options validated again, its weights checked
against the checksum taken at registration (a changed model never labels under the old
detector's name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.detectors.base import Detector, DetectorError, DetectorKind
from orchestrator.detectors.options import (
    OptionsModel,
    RemoteOptions,
    SimOptions,
    VlmOptions,
    detector_checksum,
    parse_kind,
    validate_options,
)
from orchestrator.store.detectors import DetectorSpec


def weights_of(kind: DetectorKind, options: OptionsModel) -> str | None:
    """sha256 over the vlm model directory (orchestrator.weights.checksum_path); None else."""
    if not isinstance(options, VlmOptions):
        return None
    from orchestrator.weights import checksum_path

    p = Path(options.model_path).expanduser()
    if not p.is_dir():
        raise DetectorError(f"detector kind {kind.value}: model_path {p} is not a directory "
                            "(the local model + processor, saved with save_pretrained)")
    try:
        return checksum_path(p)
    except OSError as e:
        raise DetectorError(f"detector kind {kind.value}: cannot read model_path {p}: "
                            f"{e.strerror or e}") from None


def prepare(kind_name: str, options: dict[str, Any]) -> tuple[DetectorKind, OptionsModel,
                                                              dict[str, Any], str]:
    """What `detector register` stores: kind, typed options, config JSON, checksum."""
    kind = parse_kind(kind_name)
    if isinstance(options.get("model_path"), str):  # stored absolute, like a policy's path
        options = {**options, "model_path": str(Path(options["model_path"]).expanduser()
                                                 .resolve())}
    opts = validate_options(kind, options)
    weights = weights_of(kind, opts)
    from orchestrator.detectors.options import normalized

    config = {"options": normalized(opts), "weights_sha256": weights}
    return kind, opts, config, detector_checksum(kind, opts, weights)


def build_detector(name: str, kind_name: str, config: dict[str, Any],
                   checksum: str) -> Detector:
    """The detector a registered row describes; DetectorError when it no longer matches."""
    kind = parse_kind(kind_name)
    opts = validate_options(kind, config.get("options") or {})
    weights = weights_of(kind, opts)
    if weights != config.get("weights_sha256"):
        raise DetectorError(
            f"detector {name!r}: the model at {getattr(opts, 'model_path', '?')} has sha256 "
            f"{str(weights)[:16]}, registered {str(config.get('weights_sha256'))[:16]}: the "
            "weights changed since `evalfleet detector register`; restore them or register a "
            "new --version")
    if detector_checksum(kind, opts, weights) != checksum:
        raise DetectorError(f"detector {name!r}: its stored config does not give its checksum "
                            f"{checksum[:12]}; register it again under a new --version")
    if isinstance(opts, SimOptions):
        from orchestrator.detectors.sim import SimDetector

        return SimDetector(opts)
    if isinstance(opts, RemoteOptions):
        from orchestrator.detectors.remote import RemoteDetector

        return RemoteDetector(opts, name)
    from orchestrator.detectors.vlm import VlmDetector

    return VlmDetector(opts, name)


def detector_spec(name: str, kind: str, options: dict[str, Any],
                  version: str = "1") -> DetectorSpec:
    """What to register (orchestrator.store.detectors.register_detector) for a detector:

        with store.write() as s:
            register_detector(s, detector_spec("sim-90", "sim", {"flip_rate": 0.1}))
    """
    kind_, _, config, checksum = prepare(kind, options)
    return DetectorSpec(name, version, kind_.value, config, checksum)
