"""Replay driver round trip and the real-arm template's behaviour."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from robots.drivers.base import CameraSpec, DriverObservation
from robots.drivers.replay import ReplayDriver, ReplayStep, load_episode_npz, record_episode_npz
from robots.drivers.sim import SimDriver, SimOptions
from robots.drivers.template import TemplateArmDriver
from robots.types import Action, SceneSpec

SCENE = SceneSpec("pick", "coke_can", ("coke_can",), None, ("apple",), seed=5)


def record_sim(n: int) -> tuple[list[DriverObservation], list[Action]]:
    rng = np.random.default_rng(1)
    actions = [
        Action(
            dx=float(rng.uniform(-0.03, 0.03)),
            dy=float(rng.uniform(-0.03, 0.03)),
            dz=-0.01,
            gripper=float(i < n // 2),
        )
        for i in range(n)
    ]
    obs = []
    with SimDriver(
        SimOptions(cameras=(CameraSpec("main", 64, 80), CameraSpec("wrist", 32, 32)))
    ) as d:
        d.reset(SCENE)
        for a in actions:
            obs.append(d.observe())
            d.apply(a)
    return obs, actions


def test_replay_round_trip_through_npz(tmp_path) -> None:
    obs, actions = record_sim(12)
    out = record_episode_npz(tmp_path / "ep", obs, actions, scene=SCENE)
    files = sorted(out.glob("step_*.npz"))
    assert len(files) == 12
    meta = json.loads((out / "episode.json").read_text())
    assert meta["steps"] == 12 and meta["cameras"] == {"main": [64, 80], "wrist": [32, 32]}
    for f in files:  # plain arrays only: loading never needs pickle
        with zipfile.ZipFile(f) as z, np.load(f, allow_pickle=False) as arrays:
            assert all(n.endswith(".npy") for n in z.namelist())
            assert all(arrays[k].dtype != object for k in arrays.files)

    steps, scene = load_episode_npz(out)
    assert scene == SCENE and len(steps) == 12
    drv = ReplayDriver(out)
    drv.connect()
    caps = drv.capabilities()
    assert caps.driver == "replay" and not caps.privileged_state and not caps.needs_operator_reset
    assert {c.name: (c.height, c.width) for c in caps.cameras} == {
        "main": (64, 80),
        "wrist": (32, 32),
    }
    assert drv.reset(SCENE).ready
    for i, (o, a) in enumerate(zip(obs, actions, strict=True)):
        r = drv.observe()
        assert r.proprio == pytest.approx(o.proprio) and r.sim_success == o.sim_success
        for cam in o.frames:
            assert r.frames[cam].tobytes() == o.frames[cam].tobytes()
        assert r.info["replay_step"] == i
        assert r.info["recorded_action"] == pytest.approx([float(a.terminate), *a.continuous()])
        drv.apply(a)
    assert drv.observe().info["replay_done"]  # stays on the last step
    assert len(drv.applied) == 12
    drv.hold()
    assert drv.observe().info["replay_step"] == 11
    drv.reset(SCENE)
    assert drv.observe().info["replay_step"] == 0
    drv.close()


def test_replay_in_memory_and_loop() -> None:
    frames = [{"main": np.full((8, 8, 3), i, dtype=np.uint8)} for i in range(3)]
    steps = [ReplayStep(f, (0.0, 0.0, 0.1 * i, 0.0, 0.0, 0.0, 1.0)) for i, f in enumerate(frames)]
    drv = ReplayDriver(steps, loop=True)
    drv.reset(SCENE)
    seen = []
    for _ in range(5):
        seen.append(int(drv.observe().frames["main"][0, 0, 0]))
        drv.apply(Action())
    assert seen == [0, 1, 2, 0, 1]
    assert drv.observe().sim_success is None


def test_replay_rejects_bad_recordings(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        ReplayDriver(tmp_path / "missing").connect()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no step"):
        ReplayDriver(tmp_path / "empty").connect()
    bad = [ReplayStep({"main": np.zeros((8, 8), dtype=np.uint8)}, (0.0,) * 7)]
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        ReplayDriver(bad).connect()
    with pytest.raises(ValueError, match="proprio"):
        ReplayDriver([ReplayStep({"main": np.zeros((8, 8, 3), np.uint8)}, (0.0,) * 3)]).connect()
    # an object array smuggled into a step file is refused, never unpickled
    (tmp_path / "evil").mkdir()
    np.savez(tmp_path / "evil" / "step_000000.npz", proprio=np.zeros(7),
             frame__main=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="cannot read .*step_000000.npz"):
        ReplayDriver(tmp_path / "evil").connect()


def test_template_driver_is_operator_reset_and_raises_helpful_errors() -> None:
    drv = TemplateArmDriver()
    caps = drv.capabilities()
    assert caps.needs_operator_reset and not caps.privileged_state and caps.driver == "template"
    r = drv.reset(SceneSpec("move_near", "coke_can", ("coke_can", "apple"), "apple", ("sponge",)))
    assert r.ready is False and "coke_can" in r.instructions and "sponge" in r.instructions
    for call in (drv.connect, drv.observe, lambda: drv.apply(Action()), drv.hold):
        with pytest.raises(NotImplementedError, match="SDK") as e:
            call()
        assert "checklist" in str(e.value)
    assert drv.privileged_state() is None
    drv.close()  # never raises, even unconnected
    doc = TemplateArmDriver.__module__
    import importlib

    text = importlib.import_module(doc).__doc__ or ""
    for item in ("e-stop", "Workspace limits", "Speed", "watchdog", "CURVE"):
        assert item.lower() in text.lower()
