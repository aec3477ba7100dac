"""OpenCV renderer of the simulated tabletop: RGB uint8 HxWx3 frames that depend on the scene.

Cameras: "main" (also named "front": the same view), a perspective camera behind and above the
robot base (at -x) looking at the table, posed per environment with a deterministic jitter
from the scene seed, role external; and "wrist", a camera on the end effector looking straight
down past the fingers, turning with the gripper's yaw, role wrist. The table texture and colour come from the
scene's background, the lighting gain (and a dim vignette or a sunlit patch) from its
environment; the environment's clutter sits at the table's rim. Objects are drawn by shape
and colour (cans with a metal top, hollow cups, balls, boxes, sponges with pores, bananas,
flat markers with a symbol or a number, person cards with glasses or a hat), standing or
lying, with the gripper, its arm and its shadow.

Speed: the main camera's background (table, lighting, clutter) is warped once per episode
and cached; a frame is a copy of it plus a few dozen cv2 fill calls. No anti-aliasing and no
randomness per frame: same state -> byte-identical frames.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from robots.sim import kinematics
from robots.sim.catalog import BACKGROUNDS, ENVIRONMENTS, OBJECTS
from robots.sim.world import (
    CAB_DEPTH,
    CAB_HEIGHT,
    CAB_WIDTH,
    HANDLE_OUT,
    HANDLE_Z,
    TRAY_FLOOR,
    Clutter,
    DrawerState,
    ObjectState,
    WorldState,
)
from robots.spaces import CameraRole
from robots.types import SceneSpec

CAMERAS = ("main", "front", "wrist")
EXTERNAL_VIEWS = ("main", "front")  # the same external view under either name
TABLE_HALF = 0.5  # the table texture covers [-0.5, 0.5]^2 m
TEX = 512  # texture pixels per side
SHOULDER = np.array([-0.28, -0.42, 0.42])
NEAR = 0.02  # nothing closer to a camera than this is drawn
_N = 12
_ANG = np.linspace(0, 2 * np.pi, _N, endpoint=False)
_C, _S = np.cos(_ANG), np.sin(_ANG)
_STAR = np.array([[(0.45 if i % 2 else 1.0) * math.cos(math.pi / 2 + i * math.pi / 5),
                   (0.45 if i % 2 else 1.0) * math.sin(math.pi / 2 + i * math.pi / 5)]
                  for i in range(10)])
_UP = np.array([0.0, 0.0, 1.0])
Color = tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class Camera:
    K: np.ndarray  # 3x3 intrinsics
    R: np.ndarray  # world -> camera rotation (rows: right, down, forward)
    t: np.ndarray
    width: int
    height: int

    @property
    def f(self) -> float:
        return float(self.K[0, 0])

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> pixel coordinates (N, 2) and depths (N,)."""
        pc = pts @ self.R.T + self.t
        depth = pc[:, 2]
        uv = pc[:, :2] / np.maximum(depth, 1e-6)[:, None] * self.f + self.K[:2, 2]
        return uv, depth

    def table_homography(self) -> np.ndarray:
        """Texture pixel -> image pixel, for the table plane z = 0."""
        hw = self.K @ np.column_stack([self.R[:, 0], self.R[:, 1], self.t])
        s = 2 * TABLE_HALF / TEX
        a = np.array([[s, 0, -TABLE_HALF + s / 2], [0, s, -TABLE_HALF + s / 2], [0, 0, 1]])
        return hw @ a


def camera_role(name: str) -> CameraRole:
    """The role of a sim camera by its name (robots.spaces.CameraSpec.role)."""
    return CameraRole.WRIST if name == "wrist" else CameraRole.EXTERNAL


def _camera(eye, right, down, forward, fov_v: float, width: int, height: int) -> Camera:
    rot = np.stack([right, down, forward]).astype(np.float64)
    f = (height / 2) / math.tan(fov_v / 2)
    k = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    return Camera(k, rot, -rot @ np.asarray(eye, dtype=np.float64), width, height)


def main_camera(scene: SceneSpec, width: int, height: int) -> Camera:
    jitter = float(ENVIRONMENTS[scene.environment]["camera_jitter"])
    key = zlib.crc32(scene.environment.encode())
    n = np.random.default_rng([scene.seed & 0xFFFFFFFF, key, 7]).normal(size=7)
    eye = np.array([-0.42, 0.0, 0.62]) + jitter * 1.5 * n[:3] * np.array([1.0, 1.0, 0.6])
    target = np.array([0.07, 0.0, 0.0]) + jitter * 0.5 * np.array([n[3], n[4], 0.0])
    fwd = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(fwd, _UP)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    cr, sr = math.cos(jitter * n[5]), math.sin(jitter * n[5])  # roll
    right, down = cr * right + sr * down, -sr * right + cr * down
    fov = math.radians(58) * (1 + 0.5 * jitter * n[6])
    return _camera(eye, right, down, fwd, fov, width, height)


def wrist_camera(ee: tuple[float, ...], width: int, height: int) -> Camera:
    x, y, z, _, _, yaw = ee
    s, c = math.sin(yaw), math.cos(yaw)
    return _camera((x, y, z + 0.06), (s, -c, 0.0), (-c, -s, 0.0), (0.0, 0.0, -1.0),
                   math.radians(75), width, height)


def _lit(color: Iterable[float], gain: float, k: float = 1.0) -> Color:
    return tuple(int(min(255, max(0, round(c * gain * k)))) for c in color)  # type: ignore


def _px(p: np.ndarray) -> tuple[int, int]:
    return round(float(p[0])), round(float(p[1]))


def _ipts(uv: np.ndarray) -> np.ndarray:
    return np.round(uv).astype(np.int32)


def _rect(hx: float, hy: float, yaw: float) -> np.ndarray:
    """A yawed rectangle's corners (4, 2) around the origin."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[hx, hy], [-hx, hy], [-hx, -hy], [hx, -hy]]) @ np.array([[c, s], [-s, c]])


def _ring(x: float, y: float, z: float, xy: np.ndarray) -> np.ndarray:
    return np.column_stack([x + xy[:, 0], y + xy[:, 1], np.full(len(xy), z)])


def _smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    low = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(low, (TEX, TEX), interpolation=cv2.INTER_CUBIC)


def table_texture(scene: SceneSpec) -> np.ndarray:
    """The background's texture over the table, lighting gain applied, float32 RGB 0..255."""
    bg = BACKGROUNDS[scene.background]
    rng = np.random.default_rng([scene.seed & 0xFFFFFFFF, zlib.crc32(scene.background.encode())])
    base = np.array(bg["color"], dtype=np.float32)
    ii, jj = np.mgrid[0:TEX, 0:TEX].astype(np.float32)
    kind = bg["texture"]
    if kind == "grain":
        warp = _smooth_noise(rng, 6) * 9.0
        mod = 1.0 + 0.13 * np.sin(jj * 0.09 + warp) + 0.05 * (_smooth_noise(rng, 64) - 0.5)
    elif kind == "weave":
        threads = np.where(((ii // 3) + (jj // 3)) % 2 == 0, 1.08, 0.86)
        mod = threads * (1 + 0.04 * (_smooth_noise(rng, 32) - 0.5))
    elif kind == "speckle":
        mod = 1 + 0.12 * (_smooth_noise(rng, 24) - 0.5)
    else:  # plain (checker: squares of the colour and off-white)
        mod = 1 + 0.04 * (_smooth_noise(rng, 16) - 0.5)
    tex = mod[..., None] * base
    if kind == "checker":
        cell = int(TEX * 0.08 / (2 * TABLE_HALF))
        light = np.array([235, 228, 215], dtype=np.float32)
        tex = np.where((((ii // cell) + (jj // cell)) % 2 == 0)[..., None], base, light)
    elif kind == "speckle":
        tex[rng.random((TEX, TEX)) < 0.025] = np.array([205, 205, 200], dtype=np.float32)
    gain = float(ENVIRONMENTS[scene.environment]["light"])
    return np.clip(tex * gain, 0, 255).astype(np.float32)


def _light_mask(scene: SceneSpec, width: int, height: int) -> np.ndarray | None:
    light = float(ENVIRONMENTS[scene.environment]["light"])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2
    if light < 0.7:  # dim: vignette
        return (1.0 - 1.6 * r2)[..., None].clip(0.35, 1.0)
    if light > 1.2:  # sunlit: a bright diagonal patch
        band = np.exp(-(((xx / width) - (yy / height) - 0.1) ** 2) / 0.03)
        return (1.0 + 0.35 * band)[..., None]
    return None


class Renderer:
    """Renders one episode's frames; caches what does not change within the episode."""

    def __init__(self, scene: SceneSpec, world: WorldState,
                 cameras: Iterable = (("main", 256, 256),)) -> None:
        self.scene = scene
        self.gain = g = float(ENVIRONMENTS[scene.environment]["light"])
        wall = np.random.default_rng(zlib.crc32(scene.environment.encode())).integers(90, 170, 3)
        self.wall = _lit(wall, g)
        self.views: dict[str, tuple[int, int]] = {}
        for cam in cameras:
            name, h, w = (cam.name, cam.height, cam.width) if hasattr(cam, "name") else cam
            if name not in CAMERAS:
                raise ValueError(f"unknown sim camera {name!r}; the sim has {CAMERAS}")
            self.views[name] = (int(h), int(w))
        tex = table_texture(scene)
        self._tex_u8 = tex.astype(np.uint8)
        self._colors = {n: (_lit(k.color, g), _lit(k.color, g, 0.68)) for n, k in OBJECTS.items()}
        self._bg: dict[str, np.ndarray] = {}
        self._main: dict[str, Camera] = {}
        for name, (h, w) in self.views.items():
            if name not in EXTERNAL_VIEWS:
                continue
            cam = main_camera(scene, w, h)
            img = cv2.warpPerspective(tex, cam.table_homography(), (w, h), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT,
                                      borderValue=tuple(float(c) for c in self.wall))
            mask = _light_mask(scene, w, h)
            img = np.clip(img * mask if mask is not None else img, 0, 255).astype(np.uint8)
            far_first = sorted(world.clutter, key=lambda c: -cam.project(np.array([c.pos]))[1][0])
            for c in far_first:
                self._clutter(img, cam, c)
            self._bg[name], self._main[name] = img, cam

    def render(self, state: WorldState,
               joints: tuple[float, ...] | None = None) -> dict[str, np.ndarray]:
        """Every camera's frame. `joints`: a joint_position arm's UR5e joints, whose links
        the external view draws (else a plain arm from a fixed shoulder)."""
        return {name: self.render_camera(state, name, joints) for name in self.views}

    def render_camera(self, state: WorldState, name: str,
                      joints: tuple[float, ...] | None = None) -> np.ndarray:
        h, w = self.views[name]
        if name in EXTERNAL_VIEWS:
            cam, img = self._main[name], self._bg[name].copy()
        else:
            cam = wrist_camera(state.ee, w, h)
            img = cv2.warpPerspective(self._tex_u8, cam.table_homography(), (w, h),
                                      flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                      borderValue=self.wall)
            for c in state.clutter:
                self._clutter(img, cam, c)
        self._draw_scene(img, cam, state, arm=name in EXTERNAL_VIEWS, joints=joints)
        return img

    # ------------------------------------------------------------------ drawing

    def _draw_scene(self, img: np.ndarray, cam: Camera, state: WorldState, arm: bool,
                    joints: tuple[float, ...] | None = None) -> None:
        x, y, z = state.ee[:3]
        d = state.drawer
        surface = CAB_HEIGHT if d is not None and d.over_cabinet(x, y) else 0.0
        uv, depth = cam.project(np.array([[x, y, surface]]))
        if depth[0] > NEAR:  # the gripper's shadow
            rad = max(1, int(cam.f * 0.025 / depth[0]))
            cv2.circle(img, _px(uv[0]), rad, _lit((40, 40, 40), self.gain), -1)
        for o in state.objects:
            if o.kind.height < 0.01:
                self._flat(img, cam, o)
        hidden = set()
        if d is not None:
            self._drawer(img, cam, d)
            for o in state.objects:
                if o.in_drawer:
                    if d.over_tray(o.pos[0], o.pos[1]):
                        self._object(img, cam, o)
                    hidden.add(o.name)
        items = [o for o in state.objects if o.name not in hidden and o.kind.height >= 0.01]
        _, depths = cam.project(np.array([o.pos for o in items] + [[x, y, z + 0.03]]))
        for i in sorted(range(len(items) + 1), key=lambda i: -depths[i]):  # far to near
            if i == len(items):
                self._gripper(img, cam, state, arm, joints)
            else:
                self._object(img, cam, items[i])

    def _extrude(self, img, cam: Camera, ring: np.ndarray, v: np.ndarray, side: Color,
                 cap: Color, inner: Color | None = None) -> None:
        """A prism: `ring` (N, 3) swept by `v`; sides, then the end nearer the camera."""
        uv, depth = cam.project(np.concatenate([ring, ring + v]))
        if depth.min() < NEAR:
            return
        pts = _ipts(uv)
        cv2.fillConvexPoly(img, cv2.convexHull(pts), side)
        n = len(ring)
        near = pts[n:] if depth[n:].mean() <= depth[:n].mean() else pts[:n]
        cv2.fillConvexPoly(img, cv2.convexHull(near), cap)
        if inner is not None:
            c = near.mean(axis=0)
            cv2.fillConvexPoly(img, cv2.convexHull(_ipts(c + 0.75 * (near - c))), inner)

    def _object(self, img, cam: Camera, o: ObjectState) -> None:
        k, g = o.kind, self.gain
        top, side = self._colors[o.name]
        x, y, zc = o.pos
        cy, sy = math.cos(o.yaw), math.sin(o.yaw)
        if k.shape in ("can", "cup"):
            cap = _lit((205, 205, 210), g) if k.shape == "can" else top
            inner = _lit(k.color, g, 0.35) if k.shape == "cup" else None
            if o.upright:
                ring = _ring(x, y, zc - k.height / 2, k.size * np.column_stack([_C, _S]))
                self._extrude(img, cam, ring, k.height * _UP, side, cap, inner)
            else:
                u, w = np.array([cy, sy, 0.0]), np.array([-sy, cy, 0.0])
                end = np.array([x, y, zc]) - u * k.height / 2
                ring = end + k.size * (_C[:, None] * w + _S[:, None] * _UP)
                self._extrude(img, cam, ring, u * k.height, side, cap, inner)
        elif k.shape in ("box", "sponge"):
            hy = k.size * (0.6 if k.shape == "sponge" else 0.75)
            ring = _ring(x, y, zc - k.height / 2, _rect(k.size, hy, o.yaw))
            self._extrude(img, cam, ring, k.height * _UP, side, top)
            if k.shape == "sponge":  # pores on the top face
                uv, depth = cam.project(ring * 0.45 + np.array([x, y, zc + k.height / 2]) * 0.55)
                if depth.min() > NEAR:
                    for p in _ipts(uv):
                        cv2.circle(img, _px(p), 1, side, -1)
        elif k.shape == "ball":
            uv, depth = cam.project(np.array([[x, y, zc]]))
            if depth[0] > NEAR:
                r = max(1, round(cam.f * k.size / depth[0]))
                c = _px(uv[0])
                cv2.circle(img, c, r, top, -1)
                cv2.circle(img, (c[0] - r // 3, c[1] - r // 3), max(1, r // 3),
                           _lit(k.color, g, 1.3), -1)
        elif k.shape == "banana":
            s = np.linspace(-1, 1, 7)
            bend = 0.5 * k.size * (1 - s**2)
            pts = np.column_stack([x + cy * s * k.size - sy * bend, y + sy * s * k.size + cy * bend,
                                   np.full(7, zc)])
            uv, depth = cam.project(pts)
            if depth.min() > NEAR:
                th = max(2, int(cam.f * 0.03 / depth.mean()))
                cv2.polylines(img, [_ipts(uv)], False, top, th)
                for p in (uv[0], uv[-1]):
                    cv2.circle(img, _px(p), max(1, th // 3), _lit((90, 70, 20), g), -1)

    def _flat(self, img, cam: Camera, o: ObjectState) -> None:
        k, g = o.kind, self.gain
        uv, depth = cam.project(np.array([o.pos]))
        if depth[0] <= NEAR:
            return
        s = cam.f * k.size / depth[0]
        c = uv[0]
        ink = _lit((20, 20, 20), g)
        if k.shape == "person":  # a picture card: head, body, glasses or a hat
            card = [[-0.8, -1.0], [0.8, -1.0], [0.8, 1.0], [-0.8, 1.0]]
            cv2.fillConvexPoly(img, _ipts(c + s * np.array(card)), _lit((235, 235, 225), g))
            head = _px(c - [0, 0.35 * s])
            cv2.circle(img, head, max(1, int(0.3 * s)), self._colors[o.name][0], -1)
            body = [[-0.55, 0.95], [0.55, 0.95], [0.35, 0.05], [-0.35, 0.05]]
            cv2.fillConvexPoly(img, _ipts(c + s * np.array(body)), _lit((60, 90, 150), g))
            if o.name.endswith("glasses"):
                for dx in (-0.13, 0.13):
                    cv2.circle(img, _px(c + [dx * s, -0.35 * s]), max(1, int(0.1 * s)), ink,
                               max(1, int(s / 12)))
            else:
                hat = [[-0.35, -0.62], [0.35, -0.62], [0.25, -0.95], [-0.25, -0.95]]
                cv2.fillConvexPoly(img, _ipts(c + s * np.array(hat)), ink)
            return
        ground = self._colors[o.name][0]
        if o.name.startswith("number_"):  # a card with its digit
            square = _rect(0.8 * k.size, 0.8 * k.size, 0.0)
            uvc, _ = cam.project(_ring(o.pos[0], o.pos[1], 0.0, square))
            cv2.fillConvexPoly(img, _ipts(uvc), ground)
            scale, text = max(0.25, 1.4 * s / 22), o.name.split("_")[-1]
            thick = max(1, int(scale * 2))
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            cv2.putText(img, text, _px(c + [-tw / 2, th / 2]), cv2.FONT_HERSHEY_SIMPLEX, scale, ink,
                        thick)
            return
        shape = _STAR if "star" in o.name else np.column_stack([_C, _S])
        uvp, _ = cam.project(_ring(o.pos[0], o.pos[1], 0.0, k.size * shape))
        cv2.fillPoly(img, [_ipts(uvp)], ground)

    def _clutter(self, img, cam: Camera, c: Clutter) -> None:
        top, side = _lit(c.color, self.gain), _lit(c.color, self.gain, 0.68)
        x, y, zc = c.pos
        if c.shape == "ball":
            uv, depth = cam.project(np.array([[x, y, zc]]))
            if depth[0] > NEAR:
                cv2.circle(img, _px(uv[0]), max(1, int(cam.f * c.size / depth[0])), top, -1)
            return
        if c.shape == "can":
            xy = c.size * np.column_stack([_C, _S])
        else:
            xy = _rect(c.size, c.size, c.yaw)
        self._extrude(img, cam, _ring(x, y, 0.0, xy), c.height * _UP, side, top)

    def _drawer(self, img, cam: Camera, d: DrawerState) -> None:
        top, side = self._colors["drawer"]

        def box(a0: float, a1: float, hb: float, z0: float) -> np.ndarray:
            corners = ((a0, -hb), (a1, -hb), (a1, hb), (a0, hb))
            return np.array([d.world(a, b, z0) for a, b in corners])

        cabinet = box(-CAB_DEPTH / 2, CAB_DEPTH / 2, CAB_WIDTH / 2, 0.0)
        self._extrude(img, cam, cabinet, CAB_HEIGHT * _UP, side, top)
        if d.front > CAB_DEPTH / 2 + 0.005:  # the open tray, its inside darker
            tray = box(CAB_DEPTH / 2, d.front, CAB_WIDTH / 2 - 0.005, 0.0)
            self._extrude(img, cam, tray, 0.06 * _UP, side, _lit((200, 170, 130), self.gain))
            inside = box(CAB_DEPTH / 2 + 0.008, d.front - 0.008, CAB_WIDTH / 2 - 0.015,
                         TRAY_FLOOR + 0.04)
            uv, depth = cam.project(inside)
            if depth.min() > NEAR:
                cv2.fillConvexPoly(img, _ipts(uv), _lit((70, 50, 35), self.gain))
        ends = np.array([d.world(d.front + HANDLE_OUT, b, HANDLE_Z) for b in (-0.045, 0.045)])
        uv, depth = cam.project(ends)
        if depth.min() > NEAR:
            th = max(1, int(cam.f * 0.012 / depth.mean()))
            cv2.line(img, _px(uv[0]), _px(uv[1]), _lit((190, 190, 195), self.gain), th)

    def _links(self, img, cam: Camera, joints: tuple[float, ...],
               grip_top: tuple[float, float, float]) -> None:
        """The UR5e's links (base to flange, then down to the gripper), far to near."""
        pts = np.array([f[:3, 3] for f in kinematics.frames(joints)[:7]] + [grip_top])
        uv, depth = cam.project(pts)
        dark, light = _lit((70, 72, 80), self.gain), _lit((150, 160, 175), self.gain)
        segs = sorted(range(len(pts) - 1), key=lambda i: -(depth[i] + depth[i + 1]))
        for i in segs:
            if min(depth[i], depth[i + 1]) < NEAR:
                continue
            th = max(2, int(cam.f * (0.045 if i < 3 else 0.032) / (depth[i] + depth[i + 1]) * 2))
            cv2.line(img, _px(uv[i]), _px(uv[i + 1]), light if i in (1, 2) else dark, th)

    def _gripper(self, img, cam: Camera, state: WorldState, arm: bool,
                 joints: tuple[float, ...] | None = None) -> None:
        x, y, z, _, _, yaw = state.ee
        metal, dark = _lit((175, 178, 185), self.gain), _lit((70, 72, 80), self.gain)
        if arm:
            if joints is not None:
                self._links(img, cam, joints, (x, y, z + 0.095))
            else:
                uv, depth = cam.project(np.array([SHOULDER, [x, y, z + 0.10]]))
                if depth.min() > NEAR:
                    th = max(2, int(cam.f * 0.035 / depth.mean()))
                    cv2.line(img, _px(uv[0]), _px(uv[1]), dark, th)
            self._extrude(img, cam, _ring(x, y, z + 0.045, _rect(0.02, 0.045, yaw)),
                          0.05 * _UP, dark, metal)
        gap = 0.015 + 0.06 * state.gripper
        for sgn in (-1, 1):
            fx, fy = x - math.sin(yaw) * sgn * gap / 2, y + math.cos(yaw) * sgn * gap / 2
            finger = _ring(fx, fy, z - 0.005, _rect(0.012, 0.006, yaw))
            self._extrude(img, cam, finger, (0.05 if arm else 0.012) * _UP, dark, metal)


def render(state: WorldState, scene: SceneSpec, camera: str = "main", height: int = 256,
           width: int = 256) -> np.ndarray:
    """One frame, without caching (tests and tools; drivers keep a Renderer per episode)."""
    return Renderer(scene, state, ((camera, height, width),)).render_camera(state, camera)
