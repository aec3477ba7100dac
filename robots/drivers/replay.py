"""ReplayDriver: plays a recorded episode back through the bridge, step by step.

A recorded episode is a directory of `step_000000.npz`, `step_000001.npz`, ... (plain numpy
arrays, no pickle: they are read with `np.load(allow_pickle=False)`) and an optional
`episode.json` (format tag, step count, cameras, the scene spec). Each step file holds:

- `proprio`: float64 (7,): ee x y z roll pitch yaw, gripper;
- `frame__<camera>`: uint8 (H, W, 3) RGB, one per camera (camera names: [A-Za-z0-9_-]);
- `action` (optional): float64 (8,): terminate (0/1), dx dy dz droll dpitch dyaw gripper,
  the action that was applied after this observation;
- `sim_success`: int8 scalar: -1 unknown, 0 false, 1 true.

`record_episode_npz(directory, observations, actions, scene)` writes one. The driver
starts at step 0 on reset(); each apply() advances one step (the applied actions are kept
in `applied` for comparison with the recorded ones); at the end it stays on the last step
(or wraps with loop=True); hold() stays where it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robots.drivers.base import (
    CameraSpec,
    Capabilities,
    DriverObservation,
    ResetResult,
    RobotDriver,
)
from robots.protocol_actions import action_to_rt2_wire
from robots.types import Action, ActionSpace, SceneSpec

FORMAT = "evalfleet-replay/1"
_CAMERA = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ReplayStep:
    frames: dict[str, np.ndarray]
    proprio: tuple[float, ...]
    action: tuple[float, ...] | None = None  # terminate, then the 7 continuous values
    sim_success: bool | None = None


def _action_array(a: Action | Sequence[float]) -> np.ndarray:
    values = (
        tuple(action_to_rt2_wire(a))
        if isinstance(a, Action)
        else tuple(float(v) for v in a)
    )
    if len(values) != 8:
        raise ValueError(f"a recorded action needs 8 values (terminate + 7), got {len(values)}")
    return np.asarray(values, dtype=np.float64)


def _check_step(step: ReplayStep, where: str) -> None:
    if not step.frames:
        raise ValueError(f"{where}: no frames")
    for name, f in step.frames.items():
        if not _CAMERA.match(name):
            raise ValueError(f"{where}: bad camera name {name!r}")
        if not (
            isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3
        ):
            raise ValueError(f"{where}: frame {name!r} must be uint8 HxWx3, got "
                             f"{getattr(f, 'dtype', type(f))} {getattr(f, 'shape', '')}")
    if len(step.proprio) != 7:
        raise ValueError(f"{where}: proprio needs 7 values, got {len(step.proprio)}")


def record_episode_npz(
    directory: str | Path,
    observations: Sequence[DriverObservation | ReplayStep],
    actions: Sequence[Action | Sequence[float] | None] | None = None,
    scene: SceneSpec | None = None,
) -> Path:
    """Write an episode (one observation per step, the action applied after each) as .npz files."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if actions is not None and len(actions) > len(observations):
        raise ValueError("more actions than observations")
    cameras: dict[str, list[int]] = {}
    for i, obs in enumerate(observations):
        step = ReplayStep(dict(obs.frames), tuple(obs.proprio), None, obs.sim_success)
        _check_step(step, f"step {i}")
        arrays: dict[str, np.ndarray] = {
            "proprio": np.asarray(step.proprio, dtype=np.float64),
            "sim_success": np.int8(-1 if step.sim_success is None else int(step.sim_success)),
        }
        for name, frame in step.frames.items():
            arrays[f"frame__{name}"] = np.ascontiguousarray(frame)
            cameras.setdefault(name, list(frame.shape[:2]))
        act = (
            actions[i] if actions is not None and i < len(actions) else getattr(obs, "action", None)
        )
        if act is not None:
            arrays["action"] = _action_array(act)
        np.savez(out / f"step_{i:06d}.npz", **arrays)
    meta = {"format": FORMAT, "steps": len(observations), "cameras": cameras,
            "scene": scene.to_dict() if scene is not None else None}
    (out / "episode.json").write_text(json.dumps(meta, indent=1))
    return out


def load_episode_npz(directory: str | Path) -> tuple[list[ReplayStep], SceneSpec | None]:
    """Read an episode written by record_episode_npz (never unpickles anything)."""
    src = Path(directory)
    if not src.is_dir():
        raise FileNotFoundError(f"replay: {src} is not a directory of recorded steps")
    files = sorted(src.glob("step_*.npz"))
    if not files:
        raise ValueError(f"replay: no step_*.npz files in {src}")
    scene = None
    meta_path = src / "episode.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"replay: {meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}"
            )
        if meta.get("scene"):
            scene = SceneSpec.from_dict(meta["scene"])
    steps: list[ReplayStep] = []
    for path in files:
        try:
            with np.load(path, allow_pickle=False) as z:
                if "proprio" not in z.files:
                    raise ValueError("no 'proprio' array")
                frames = {k[len("frame__"):]: z[k] for k in z.files if k.startswith("frame__")}
                ok = int(z["sim_success"]) if "sim_success" in z.files else -1
                action = tuple(float(v) for v in z["action"]) if "action" in z.files else None
                step = ReplayStep(frames, tuple(float(v) for v in z["proprio"]), action,
                                  None if ok < 0 else bool(ok))
        except (ValueError, OSError, KeyError) as e:  # object arrays (pickle) are refused here too
            raise ValueError(f"replay: cannot read {path}: {e}") from e
        _check_step(step, f"replay: {path.name}")
        steps.append(step)
    return steps, scene


class ReplayDriver(RobotDriver):
    """Plays back a recorded episode (a directory of .npz steps, or an in-memory list)."""

    def __init__(self, source: str | Path | Sequence[ReplayStep], *, loop: bool = False,
                 control_hz: float = 5.0) -> None:
        self._source = source
        self.loop = loop
        self.control_hz = control_hz
        self._steps: list[ReplayStep] | None = None
        self.scene: SceneSpec | None = None
        self._i = 0
        self.applied: list[Action] = []

    def _load(self) -> list[ReplayStep]:
        if self._steps is None:
            if isinstance(self._source, (str, Path)):
                self._steps, self.scene = load_episode_npz(self._source)
            else:
                steps = list(self._source)
                if not steps:
                    raise ValueError("replay: the episode has no steps")
                for i, s in enumerate(steps):
                    _check_step(s, f"replay step {i}")
                self._steps = steps
            first = self._steps[0]
            for i, s in enumerate(self._steps):
                if {k: v.shape for k, v in s.frames.items()} != {
                    k: v.shape for k, v in first.frames.items()
                }:
                    raise ValueError(f"replay step {i}: cameras or frame sizes differ from step 0")
        return self._steps

    def connect(self) -> None:
        self._load()

    def capabilities(self) -> Capabilities:
        first = self._load()[0]
        cams = tuple(
            CameraSpec(n, int(f.shape[0]), int(f.shape[1])) for n, f in first.frames.items()
        )
        return Capabilities(
            driver="replay", cameras=cams, action_space=ActionSpace(control_hz=self.control_hz)
        )

    def reset(self, scene: SceneSpec) -> ResetResult:
        self._load()
        self._i = 0
        self.applied = []
        return ResetResult(ready=True)

    def observe(self) -> DriverObservation:
        steps = self._load()
        s = steps[self._i]
        info = {
            "replay_step": self._i,
            "replay_steps": len(steps),
            "replay_done": self._i == len(steps) - 1,
        }
        if s.action is not None:
            info["recorded_action"] = list(s.action)
        return DriverObservation(
            frames=dict(s.frames), proprio=s.proprio, sim_success=s.sim_success, info=info
        )

    def apply(self, action: Action) -> None:
        n = len(self._load())
        self.applied.append(action)
        self._i = (self._i + 1) % n if self.loop else min(self._i + 1, n - 1)

    def hold(self) -> None:
        """Stay on the current step."""

    def close(self) -> None:
        self._steps = None if isinstance(self._source, (str, Path)) else self._steps
