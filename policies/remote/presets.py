"""Observation and action mappings between evalfleet and openpi-style policy servers (pure).

A `Preset` says which of the arm's cameras goes to which key of the observation dict (resized
with padding to the server's resolution, HWC or CHW), which of the arm's state fields make up
each state key, where the instruction goes, and how many dimensions of the server's
`{"actions": (H, D)}` reply the arm executes (the first `action_dim`). It maps both ways: the
client side (`request`, `chunk`: kind `openpi`) and the server side (`input`, `reply`:
`evalfleet policy serve`). Its `io` (robots.spaces.PolicyIO) is matched against the arm's
declared spaces before any trial is leased, so a preset never silently reinterprets values.

Presets, named in the policy config (`preset: droid`):
- `droid`: `observation/exterior_image_1_left` (external) and `observation/wrist_image_left`
  (wrist), 224x224 HWC uint8; `observation/joint_position` (7), `observation/gripper_position`
  (1); `prompt`. Replies: joint_velocity[8] (7 joint velocities + gripper, closed_is_1).
- `libero`: `observation/image`, `observation/wrist_image` 224x224 HWC; `observation/state`
  (8: ee position, axis-angle, two gripper fingers); `prompt`. Replies: ee_delta[7].
- `aloha`: `images.cam_high` (external), `images.cam_left_wrist`, `images.cam_right_wrist`
  (wrist), 224x224 CHW; `state` (14); `prompt`. Replies: joint_position[14], no single gripper.
- `generic`: the mapping written in YAML (`GenericMapping`). A named preset takes the same
  mapping keys as overrides (e.g. `images` to name the arm's cameras).

Keys with dots (`images.cam_high`) are nested dicts on the wire. State values are found by the
arm's state field names (`PolicyInput.state_names`); a number in a state list is a constant
(padding). An input that does not name its state is read in the preset's order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policies.base import ActionChunk, PolicyInput
from robots.spaces import CameraRole, GripperConvention, PolicyIO, SpaceKind

PRESETS: tuple[str, ...] = ("droid", "libero", "aloha", "generic")
MAX_HORIZON = 4096


class PresetError(ValueError):
    """An observation or reply that does not fit its preset; one line saying what and where."""


class Layout(StrEnum):
    HWC = "HWC"
    CHW = "CHW"


@dataclass(frozen=True)
class ImageSlot:
    key: str  # observation key (dots: nested dicts)
    camera: str  # the arm's camera name
    role: CameraRole = CameraRole.EXTERNAL


@dataclass(frozen=True)
class StateSlot:
    key: str
    fields: tuple[str | float, ...]  # the arm's state field names, or constants (padding)


@dataclass(frozen=True)
class Preset:
    """How one kind of policy server sees an arm. See the module docstring."""

    name: str
    io: PolicyIO
    images: tuple[ImageSlot, ...]
    state: tuple[StateSlot, ...]
    prompt_key: str | None = "prompt"
    size: tuple[int, int] | None = (224, 224)  # (H, W) the images are resized to (padding)
    layout: Layout = Layout.HWC
    actions_key: str = "actions"

    @property
    def action_dim(self) -> int:
        return self.io.action_dim

    # --- client side ---------------------------------------------------------------------

    def request(self, inp: PolicyInput) -> dict[str, Any]:
        """One arm's input as the server's observation dict."""
        obs: dict[str, Any] = {}
        for slot in self.images:
            if slot.camera not in inp.frames:
                raise PresetError(f"preset {self.name}: arm {inp.arm!r} sent no camera "
                                  f"{slot.camera!r} (for {slot.key}); cameras: {sorted(inp.frames)}")
            img = _hwc_uint8(inp.frames[slot.camera], f"preset {self.name}: camera {slot.camera!r}")
            if self.size is not None:
                img = resize_with_pad(img, *self.size)
            _put(obs, slot.key, np.ascontiguousarray(img.transpose(2, 0, 1))
                 if self.layout is Layout.CHW else img)
        for st in self.state:
            _put(obs, st.key, self._state_values(st, inp))
        if self.prompt_key is not None:
            _put(obs, self.prompt_key, inp.instruction)
        return obs

    def _state_values(self, st: StateSlot, inp: PolicyInput) -> np.ndarray:
        names = [f for s in self.state for f in s.fields if isinstance(f, str)]
        if inp.state_names:
            index = {n: i for i, n in enumerate(inp.state_names)}
            missing = [f for f in st.fields if isinstance(f, str) and f not in index]
            if missing:
                raise PresetError(f"preset {self.name}: arm {inp.arm!r} reports no state {missing} "
                                  f"(for {st.key}); its state: {list(inp.state_names)}")
            pos = {n: index[n] for n in names}
        elif len(inp.proprio) == len(names):
            pos = {n: i for i, n in enumerate(names)}
        else:
            raise PresetError(f"preset {self.name}: arm {inp.arm!r} sent {len(inp.proprio)} unnamed "
                              f"state values; the preset reads {len(names)} ({names})")
        return np.asarray([float(inp.proprio[pos[f]]) if isinstance(f, str) else float(f)
                           for f in st.fields], dtype=np.float64)

    def chunk(self, reply: Mapping[str, Any], control_hz: float) -> ActionChunk:
        """The server's `{"actions": (H, D) or (D,)}` reply as a chunk of the first
        `action_dim` dimensions."""
        a = _get(reply, self.actions_key)
        if a is None:
            raise PresetError(f"preset {self.name}: the reply has no {self.actions_key!r} "
                              f"(keys: {sorted(map(str, reply))[:8]})")
        arr = np.asarray(a)
        if arr.dtype.kind not in "fiub":
            raise PresetError(f"preset {self.name}: reply {self.actions_key!r} has dtype "
                              f"{arr.dtype.str!r}; expected numbers")
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or not 1 <= arr.shape[0] <= MAX_HORIZON or arr.shape[1] < self.action_dim:
            raise PresetError(f"preset {self.name}: reply {self.actions_key!r} has shape "
                              f"{list(np.shape(a))}; expected (H, D) with D >= {self.action_dim}")
        values = arr[:, :self.action_dim].astype(np.float64)
        if not np.isfinite(values).all():
            raise PresetError(f"preset {self.name}: reply {self.actions_key!r} has non-finite values")
        return ActionChunk(values, control_hz)

    # --- server side ---------------------------------------------------------------------

    def input(self, obs: Mapping[str, Any], arm: str) -> PolicyInput:
        """A client's observation dict as an evalfleet input (frames HWC uint8 by camera name,
        state in the preset's field order, named)."""
        frames: dict[str, np.ndarray] = {}
        for slot in self.images:
            img = _get(obs, slot.key)
            if img is None:
                raise PresetError(f"preset {self.name}: observation has no {slot.key!r}")
            if self.layout is Layout.CHW:
                img = _chw_to_hwc(img, f"preset {self.name}: {slot.key}")
            frames[slot.camera] = _hwc_uint8(img, f"preset {self.name}: {slot.key}")
        names: list[str] = []
        values: list[float] = []
        for st in self.state:
            raw = _get(obs, st.key)
            arr = np.asarray(raw, dtype=np.float64).reshape(-1) if _numeric(raw) else None
            if arr is None or arr.shape[0] != len(st.fields):
                raise PresetError(f"preset {self.name}: observation {st.key!r} must be "
                                  f"{len(st.fields)} numbers, got {_describe(raw)}")
            for f, v in zip(st.fields, arr, strict=True):
                if isinstance(f, str):
                    names.append(f)
                    values.append(float(v))
        prompt = _get(obs, self.prompt_key) if self.prompt_key is not None else None
        if self.prompt_key is not None and not isinstance(prompt, str):
            raise PresetError(f"preset {self.name}: observation {self.prompt_key!r} must be the "
                              f"instruction text, got {_describe(prompt)}")
        return PolicyInput(frames=frames, proprio=tuple(values), instruction=prompt or "",
                           arm=arm, state_names=tuple(names))

    def reply(self, chunk: ActionChunk) -> dict[str, Any]:
        """A chunk as the server's reply, `{"actions": (H, D) float64}`."""
        return {self.actions_key: np.ascontiguousarray(chunk.values, dtype=np.float64)}


# --- images ----------------------------------------------------------------------------------


def resize_with_pad(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """`img` (H x W x C uint8) scaled to fit height x width keeping its aspect ratio
    (bilinear), centred, zero padding around it: what openpi's clients send. Same size: as is."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    ratio = max(w / width, h / height)
    rh, rw = max(1, int(h / ratio)), max(1, int(w / ratio))
    small = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_LINEAR).reshape(rh, rw, -1)
    out = np.zeros((height, width, img.shape[2]), dtype=img.dtype)
    top, left = max(0, (height - rh) // 2), max(0, (width - rw) // 2)
    out[top:top + rh, left:left + rw] = small
    return out


def _hwc_uint8(img: Any, where: str) -> np.ndarray:
    if (not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3
            or img.dtype != np.uint8 or min(img.shape[:2]) < 1):
        raise PresetError(f"{where}: image must be H x W x 3 uint8, got {_describe(img)}")
    return img


def _chw_to_hwc(img: Any, where: str) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[0] != 3:
        raise PresetError(f"{where}: image must be 3 x H x W uint8 (CHW), got {_describe(img)}")
    return np.ascontiguousarray(img.transpose(1, 2, 0))


def _describe(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"shape {list(v.shape)} dtype {v.dtype.str!r}"
    return f"{type(v).__name__}"


def _numeric(v: Any) -> bool:
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "fiub"
    return isinstance(v, (list, tuple)) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)


# --- nested keys -----------------------------------------------------------------------------


def _put(obs: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    d = obs
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def _get(obs: Mapping[Any, Any], key: str) -> Any:
    if key in obs:
        return obs[key]
    d: Any = obs
    for p in key.split("."):
        if not isinstance(d, Mapping) or p not in d:
            return None
        d = d[p]
    return d


# --- the named presets and the YAML mapping --------------------------------------------------


class _Image(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    camera: str = Field(min_length=1)
    role: CameraRole = CameraRole.EXTERNAL


class _Actions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    space: SpaceKind = SpaceKind.EE_DELTA
    dim: int = Field(default=7, ge=1, le=32)
    gripper: GripperConvention = GripperConvention.OPEN_IS_1
    key: str = "actions"


class GenericMapping(BaseModel):
    """The YAML mapping of a policy server's observation and reply (see docs/policies.md).

        images: {observation/image: {camera: main, role: external},
                 observation/wrist_image: {camera: wrist, role: wrist}}
        size: [224, 224]          # or null: images as the camera sends them
        layout: HWC               # or CHW
        state: {observation/state: [ee_x, ee_y, ee_z, ee_roll, ee_pitch, ee_yaw, gripper, 0.0]}
        prompt: prompt            # or null
        actions: {space: ee_delta, dim: 7, gripper: open_is_1}
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    images: dict[str, _Image] = Field(default_factory=dict)
    size: tuple[int, int] | None = (224, 224)
    layout: Layout = Layout.HWC
    state: dict[str, list[str | float]] = Field(default_factory=dict)
    prompt: str | None = "prompt"
    actions: _Actions = _Actions()


_FRANKA = tuple(f"joint_{i}" for i in range(1, 8))
_ALOHA_ARM = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")

NAMED: dict[str, dict[str, Any]] = {
    "droid": {
        "images": {"observation/exterior_image_1_left": {"camera": "main", "role": "external"},
                   "observation/wrist_image_left": {"camera": "wrist", "role": "wrist"}},
        "state": {"observation/joint_position": list(_FRANKA),
                  "observation/gripper_position": ["gripper"]},
        "actions": {"space": "joint_velocity", "dim": 8, "gripper": "closed_is_1"},
    },
    "libero": {
        "images": {"observation/image": {"camera": "main", "role": "external"},
                   "observation/wrist_image": {"camera": "wrist", "role": "wrist"}},
        "state": {"observation/state": ["ee_x", "ee_y", "ee_z", "ee_ax", "ee_ay", "ee_az",
                                        "gripper_left", "gripper_right"]},
        "actions": {"space": "ee_delta", "dim": 7, "gripper": "closed_is_1"},
    },
    "aloha": {
        "images": {"images.cam_high": {"camera": "cam_high", "role": "external"},
                   "images.cam_left_wrist": {"camera": "cam_left_wrist", "role": "wrist"},
                   "images.cam_right_wrist": {"camera": "cam_right_wrist", "role": "wrist"}},
        "layout": "CHW",
        "state": {"state": [f"{side}_{j}" for side in ("left", "right") for j in _ALOHA_ARM]},
        "actions": {"space": "joint_position", "dim": 14, "gripper": "none"},
    },
}


def preset(name: str, mapping: Mapping[str, Any] | None = None) -> Preset:
    """The preset `name` (droid | libero | aloha | generic). `mapping`: the generic preset's
    YAML mapping, or top-level overrides of a named preset's (e.g. its `images`)."""
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; expected one of {list(PRESETS)}")
    if name == "generic" and not mapping:
        raise PresetError("preset generic needs a mapping (images, state, prompt, actions)")
    data = {**NAMED.get(name, {}), **dict(mapping or {})}
    try:
        m = GenericMapping(**data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "mapping"
        raise PresetError(f"preset {name}: mapping {loc}: {err['msg']}") from None
    return from_mapping(name, m)


def from_mapping(name: str, m: GenericMapping) -> Preset:
    images = tuple(ImageSlot(k, v.camera, v.role) for k, v in m.images.items())
    state = tuple(StateSlot(k, tuple(v)) for k, v in m.state.items())
    fields = [f for s in state for f in s.fields if isinstance(f, str)]
    if len(set(fields)) != len(fields):
        raise PresetError(f"preset {name}: a state field is named twice ({fields})")
    if len({i.camera for i in images}) != len(images):
        raise PresetError(f"preset {name}: a camera feeds two image keys")
    if m.size is not None and min(m.size) < 1:
        raise PresetError(f"preset {name}: size must be positive [H, W]")
    a = m.actions
    io = PolicyIO(emits=a.space, action_dim=a.dim, gripper=a.gripper,
                  cameras=tuple(i.role for i in images), state=tuple(fields),
                  camera_names=tuple(i.camera for i in images))
    return Preset(name, io, images, state, m.prompt, m.size, m.layout, a.key)


# --- RoboArena's server config ---------------------------------------------------------------

_ROBOARENA_SPACES = {"joint_position": SpaceKind.JOINT_POSITION,
                     "joint_velocity": SpaceKind.JOINT_VELOCITY,
                     "cartesian_position": SpaceKind.EE_POSE}


@dataclass(frozen=True)
class RoboArenaConfig:
    """A RoboArena-style server's metadata (its `PolicyServerConfig`): the resolution it
    wants images at, whether it reads the wrist camera, its action space."""

    image_resolution: tuple[int, int] | None
    needs_wrist_camera: bool
    action_space: str

    def adapt(self, p: Preset, policy: str) -> Preset:
        """`p` sending what this server asks for; refuses a server whose action space is not
        the one the preset declared (and the arms were matched with)."""
        kind = _ROBOARENA_SPACES.get(self.action_space)
        if kind is not p.io.emits:
            raise PresetError(f"policy {policy}: the server's action_space is "
                              f"{self.action_space!r}; preset {p.name} emits {p.io.label}: pick "
                              "a preset or mapping (actions.space) that matches the server")
        images = p.images if self.needs_wrist_camera else tuple(
            i for i in p.images if i.role is not CameraRole.WRIST)
        return replace(p, images=images, size=self.image_resolution)


def roboarena_config(metadata: Mapping[str, Any]) -> RoboArenaConfig | None:
    """The server's RoboArena config when its metadata is one (else None: plain openpi)."""
    if not isinstance(metadata, Mapping) or not {"image_resolution", "action_space"} <= set(metadata):
        return None
    res = metadata["image_resolution"]
    size: tuple[int, int] | None = None
    if res is not None:
        if not (isinstance(res, (list, tuple)) and len(res) == 2
                and all(isinstance(n, int) and n > 0 for n in res)):
            raise PresetError(f"RoboArena metadata: image_resolution {res!r} is not [H, W]")
        size = (int(res[0]), int(res[1]))
    return RoboArenaConfig(size, bool(metadata.get("needs_wrist_camera", True)),
                           str(metadata["action_space"]))
