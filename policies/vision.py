"""VisionHeuristic: a vision-only baseline that knows the appearance of SEEN objects only.

Its "weights" are an appearance memory built from the catalogue's seen objects and seen
backgrounds (colours under the seen lighting) plus the nominal calibration of the main camera
in the seen kitchen. Each step it labels every pixel with the nearest remembered colour (a
lookup table; a pixel farther than `color_threshold` from every colour is "unexplained"),
finds the instruction's target (and destination, drawer) as the largest in-reach blob of its
colours, back-projects the blob through the nominal camera onto the object's height, and
feeds that estimated state to the same scripted skill controllers as the oracle (without
their ground-truth checks). The end effector comes from proprio.

So it fails for real where RT-2's generalization categories bite: an unseen object has no
remembered colour (optionally it tries the largest unexplained blob instead), an unseen
background gets confused with objects, other lighting shifts every colour and a jittered
camera shifts every position. It never sees privileged state.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

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
from policies.instructions import InstructionError, parse_instruction
from policies.scripts import STROKE, Episode, ScriptRunner
from robots.spaces import RT2_IO
from robots.types import Action, ActionSpace

VERSION = "1"
Q = 32  # LUT levels per channel
UNEXPLAINED = -1
DEFAULT_DIMS = (0.035, 0.08, False)
CABINET_DIST, CABINET_HALF_DEPTH, HANDLE_OUT, HANDLE_Z, TRAY_FLOOR = 0.30, 0.08, 0.015, 0.05, 0.02
REACH = 0.30


class VisionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    camera: str = "main"
    color_threshold: float = Field(30.0, gt=0.0, description="max RGB distance to a known colour")
    novelty_fallback: bool = Field(
        False, description="unseen target: try the largest unexplained blob"
    )
    min_blob_px: int = Field(8, ge=1)
    max_blob_frac: float = Field(0.05, gt=0.0, le=1.0, description="larger blobs are scenery")


@dataclass(frozen=True, eq=False)
class AppearanceMemory:
    labels: tuple[str, ...]  # object names + "background", "robot", "drawer", "cap"
    palette: np.ndarray  # [P, 3] float32 RGB
    label_of: np.ndarray  # [P] index into labels
    dims: dict  # seen object -> (radius, height, tall)

    @classmethod
    def from_seen_catalog(cls) -> AppearanceMemory:
        from robots.sim.catalog import BACKGROUNDS, ENVIRONMENTS, OBJECTS

        gains = sorted({float(e["light"]) for e in ENVIRONMENTS.values() if e["seen"]})
        labels: list[str] = ["background", "robot", "drawer", "cap"]
        colors: list[tuple] = []

        def add(label: str, rgb, ks=(1.0,)) -> None:
            if label not in labels:
                labels.append(label)
            for g in gains:
                for k in ks:
                    colors.append((labels.index(label), *(min(255.0, c * g * k) for c in rgb)))

        for b in BACKGROUNDS.values():
            if b["seen"]:
                add("background", b["color"], np.linspace(0.8, 1.2, 9))
        for rgb in [(175, 178, 185), (70, 72, 80), (40, 40, 40), (190, 190, 195)]:
            add("robot", rgb)
        add("cap", (205, 205, 210))
        dims = {}
        for name, k in OBJECTS.items():
            if not k.seen:
                continue
            if name == "drawer":
                add("drawer", k.color, (1.0, 0.68))
                add("drawer", (200, 170, 130))
                continue
            add(name, k.color, (1.0, 0.68, 1.3) if k.shape == "ball" else (1.0, 0.68))
            dims[name] = (k.size, k.height, k.uprightable)
        arr = np.asarray(colors, dtype=np.float32)
        return cls(tuple(labels), arr[:, 1:], arr[:, 0].astype(np.int64), dims)

    def fingerprint(self) -> bytes:
        return self.palette.tobytes() + self.label_of.tobytes() + "|".join(self.labels).encode()

    def lut(self, threshold: float) -> np.ndarray:
        return _lut(self.fingerprint(), self.palette.tobytes(), self.label_of.tobytes(), threshold)


@lru_cache(maxsize=4)
def _lut(_key: bytes, palette: bytes, label_of: bytes, threshold: float) -> np.ndarray:
    """[Q, Q, Q] label of the nearest remembered colour per quantized RGB, or UNEXPLAINED."""
    pal = np.frombuffer(palette, dtype=np.float32).reshape(-1, 3)
    lab = np.frombuffer(label_of, dtype=np.int64)
    centres = (np.arange(Q, dtype=np.float32) + 0.5) * (256 / Q)
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 3)
    d2 = ((grid[:, None, :] - pal[None, :, :]) ** 2).sum(-1)
    nearest = d2.argmin(1)
    out = np.where(d2[np.arange(len(grid)), nearest] <= threshold**2, lab[nearest], UNEXPLAINED)
    return out.reshape(Q, Q, Q).astype(np.int16)


@lru_cache(maxsize=8)
def nominal_camera(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(camera centre, K^-1 pre-multiplied by R^T) of the main camera in the seen kitchen."""
    from robots.sim.render import main_camera
    from robots.types import SceneSpec

    cam = main_camera(
        SceneSpec(skill="pick", target="apple", objects=("apple",), environment="kitchen_a"),
        width,
        height,
    )
    return -cam.R.T @ cam.t, cam.R.T @ np.linalg.inv(cam.K)


def back_project(
    u: float, v: float, z: float, width: int, height: int
) -> tuple[float, float, float]:
    centre, m = nominal_camera(width, height)
    ray = m @ np.array([u, v, 1.0])
    s = (z - centre[2]) / ray[2] if abs(ray[2]) > 1e-9 else 0.0
    p = centre + s * ray
    return float(p[0]), float(p[1]), float(z)


class VisionHeuristic(Policy):
    needs_privileged = False

    def __init__(
        self,
        options: VisionOptions | dict | None = None,
        name: str = "vision_heuristic",
        action_space: ActionSpace | None = None,
        memory: AppearanceMemory | None = None,
    ) -> None:
        self.options = o = (
            options if isinstance(options, VisionOptions) else VisionOptions(**(options or {}))
        )
        self.space = action_space or ActionSpace()
        self.memory = memory or AppearanceMemory.from_seen_catalog()
        self._lut = self.memory.lut(o.color_threshold)
        self.runner = ScriptRunner(self.space, self.dims, tolerance=0.008, verify=False)
        from robots.sim.catalog import OBJECTS

        self._vocabulary = tuple(OBJECTS)  # names are language; appearance is seen-only
        config = {"kind": "vision_heuristic", "version": VERSION, "options": o.model_dump()}
        self.metadata = PolicyMetadata(
            name=name,
            version=VERSION,
            kind="vision_heuristic",
            action_space=self.space,
            checksum=sha256_of(config, extra=hashlib.sha256(self.memory.fingerprint()).digest()),
            config=config,
            io=replace(RT2_IO, camera_names=(o.camera,) if o.camera else ()),  # the camera it reads by name
        )
        self._episodes: dict[str, Episode] = {}

    def dims(self, name: str) -> tuple[float, float, bool]:
        return self.memory.dims.get(name, DEFAULT_DIMS)

    def reset(self, arm: str, instruction: str) -> None:
        if not instruction or not instruction.strip():
            raise ValueError(f"VisionHeuristic.reset: empty instruction for arm {arm!r}")
        self._episodes[arm] = Episode(instruction, np.random.default_rng(zlib.crc32(arm.encode())))

    def act(self, inputs: Sequence[PolicyInput]) -> PolicyBatchResult:
        t0 = time.perf_counter()
        check_inputs(inputs, camera=self.options.camera, where="VisionHeuristic.act")
        outs = []
        for i, x in enumerate(inputs):
            ep = self._episodes.get(x.arm)
            if ep is None or ep.instruction != x.instruction:
                self.reset(x.arm, x.instruction)
                ep = self._episodes[x.arm]
            frame = check_frame(x, i, self.options.camera, "VisionHeuristic.act")
            outs.append(self._step(ep, frame, x.proprio))
        return PolicyBatchResult(outs, time.perf_counter() - t0)

    # --- perception -------------------------------------------------------------------
    def label_image(self, frame: np.ndarray) -> np.ndarray:
        q = (frame // (256 // Q)).astype(np.intp)
        return self._lut[q[..., 0], q[..., 1], q[..., 2]]

    def locate(
        self,
        labels: np.ndarray,
        name: str,
        z: float,
        exclude: Sequence[str] = (),
        reach: float = REACH,
        max_frac: float | None = None,
    ) -> tuple[float, float, float] | None:
        """World position of `name`'s largest in-reach blob (back-projected at height z)."""
        if name in self.memory.labels:
            mask = labels == self.memory.labels.index(name)
        elif self.options.novelty_fallback:
            mask = labels == UNEXPLAINED
        else:
            return None
        h, w = labels.shape
        largest = (max_frac or self.options.max_blob_frac) * h * w
        n, _, stats, cents = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        best, best_area = None, 0
        for k in range(1, n):
            area = int(stats[k, cv2.CC_STAT_AREA])
            if area < self.options.min_blob_px or area > largest:
                continue
            p = back_project(float(cents[k, 0]), float(cents[k, 1]), z, w, h)
            if max(abs(p[0]), abs(p[1])) > reach or area <= best_area:
                continue
            best, best_area = p, area
        return best

    def _locate_drawer(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(cabinet centre, axis) from the drawer blob's bearing and the lab's layout prior."""
        p = self.locate(labels, "drawer", HANDLE_Z, reach=0.5, max_frac=0.3)
        if p is None or np.hypot(p[0], p[1]) < 0.05:
            return None
        bearing = np.array(p[:2]) / np.hypot(p[0], p[1])
        return bearing * CABINET_DIST, -bearing

    # --- state estimate -> scripted controller ------------------------------------------
    def _step(self, ep: Episode, frame: np.ndarray, proprio: Sequence[float]) -> PolicyOutput:
        mem = ep.memory
        if "task" not in mem:
            try:
                mem["task"] = parse_instruction(ep.instruction, self._vocabulary)
            except InstructionError as e:
                return PolicyOutput(Action.hold(), hold_reason=f"vision heuristic: {e}")
        task = mem["task"]
        ee, gripper = list(proprio[:6]), float(proprio[6]) if len(proprio) > 6 else 1.0
        labels = self.label_image(frame)
        closed = gripper < 0.5
        names = [n for n in (task.target, task.destination) if n and n != "drawer"]
        for role, name in zip(("target", "destination"), names, strict=False):
            near = (
                np.hypot(ee[0] - mem[role][0], ee[1] - mem[role][1]) < 0.06
                if role in mem
                else False
            )
            if closed or (near and ee[2] < 0.2 and role == "target"):
                continue  # held, or the gripper is about to cover it: keep the last estimate
            _, h, _ = self.dims(name)
            z = h / 2 if task.skill != "place_upright" or role != "target" else self.dims(name)[0]
            p = self.locate(labels, name, z)
            if p is not None:
                mem[role] = p
        if (
            task.skill in ("open_drawer", "close_drawer", "place_into_drawer", "pick_from_drawer")
            and "drawer" not in mem
        ):
            d = self._locate_drawer(labels)
            if d is not None:
                mem["drawer"] = d
        missing = [
            r for r, n in zip(("target", "destination"), names, strict=False) if r not in mem
        ]
        if (
            task.skill in ("open_drawer", "close_drawer", "place_into_drawer")
            and "drawer" not in mem
        ):
            missing.append("drawer")
        if missing:
            return PolicyOutput(
                Action.hold(),
                hold_reason="vision heuristic: cannot see the "
                + ", ".join(missing)
                + f" in camera {self.options.camera!r}",
            )
        state = self._state(task, mem, ee, gripper)
        return PolicyOutput(self.runner.step(ep, state))

    def _state(self, task, mem: dict, ee: list, gripper: float) -> dict:
        objects = {}
        if task.target and task.target != "drawer" and "target" in mem:
            objects[task.target] = {
                "pos": list(mem["target"]),
                "upright": task.skill != "place_upright",
                "in_drawer": task.skill == "pick_from_drawer",
            }
        if task.destination and task.destination != "drawer":
            objects[task.destination] = {"pos": list(mem["destination"]), "upright": True}
        drawer = None
        if "drawer" in mem:
            centre, axis = mem["drawer"]
            opening0 = {"open_drawer": 0.0, "close_drawer": 0.92}.get(task.skill, 1.0)
            front = CABINET_HALF_DEPTH + opening0 * STROKE
            handle = centre + axis * (front + HANDLE_OUT)
            opening = opening0
            if gripper < 0.5 and np.hypot(ee[0] - handle[0], ee[1] - handle[1]) < 0.25:
                grab = mem.setdefault("grab", np.array(ee[:2]))  # holding the handle since here
                opening = float(np.clip(opening0 + (np.array(ee[:2]) - grab) @ axis / STROKE, 0, 1))
                handle = np.array(ee[:2])
            tray = centre + axis * (front - STROKE / 2)
            drawer = {
                "pos": [*tray, TRAY_FLOOR],
                "handle": [*handle, HANDLE_Z],
                "opening": opening,
                "axis": list(axis),
            }
        return {
            "ee": ee,
            "gripper": gripper,
            "grasped": task.target if gripper < 0.5 else None,
            "skill": task.skill,
            "target": task.target,
            "destination": task.destination,
            "objects": objects,
            "drawer": drawer,
        }
