"""Observation/action presets for openpi-style servers (policies/remote/presets.py), pure:
the exact keys, shapes and dtypes each preset sends, state picked by the arm's field names,
the first D action dims, both directions, and the PolicyIO that is matched before leasing."""

from __future__ import annotations

import numpy as np
import pytest

from policies.base import ActionChunk, PolicyInput
from policies.remote.msgpack_numpy import packb, unpackb
from policies.remote.presets import PresetError, preset, resize_with_pad
from robots import protocol as P
from robots.drivers.sim import JOINT_STATE, joint_action_spec
from robots.spaces import (
    EE_STATE,
    Adapter,
    ArmSpaces,
    CameraRole,
    CameraSpec,
    GripperConvention,
    SpaceKind,
    SpaceMismatch,
    ee_delta_spec,
    match_pair,
)

SIM_CAMERAS = (CameraSpec("main", 96, 128), CameraSpec("wrist", 96, 128, role=CameraRole.WRIST))
LIBERO_LIKE = {
    "images": {"observation/image": {"camera": "main"},
               "observation/wrist_image": {"camera": "wrist", "role": "wrist"}},
    "state": {"observation/state": ["ee_x", "ee_y", "ee_z", "ee_roll", "ee_pitch", "ee_yaw",
                                    "gripper", 0.0]},
    "actions": {"space": "ee_delta", "dim": 7, "gripper": "open_is_1"},
}


def _frame(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _sim_input(names: tuple[str, ...] = EE_STATE.names) -> PolicyInput:
    return PolicyInput(frames={"main": _frame(seed=1), "wrist": _frame(seed=2)},
                       proprio=tuple(float(i) / 10 for i in range(len(names))),
                       instruction="put the cube in the bowl", arm="sim-0", state_names=names)


def test_resize_with_pad_keeps_aspect_and_centres_with_zero_padding() -> None:
    img = np.full((100, 200, 3), 255, np.uint8)
    out = resize_with_pad(img, 224, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # 200x100 -> 224x112, centred: rows 56..167 image, the rest black
    assert (out[:56] == 0).all() and (out[168:] == 0).all()
    assert (out[56:168] == 255).all()
    assert resize_with_pad(out, 224, 224) is out


def test_droid_request_has_openpi_keys_shapes_and_dtypes() -> None:
    names = (*(f"joint_{i}" for i in range(1, 8)), "gripper", "extra")
    inp = PolicyInput(frames={"main": _frame(480, 640), "wrist": _frame(480, 640, 3)},
                      proprio=tuple(range(9)), instruction="wipe", arm="droid-1",
                      state_names=names)
    obs = preset("droid").request(inp)
    assert set(obs) == {"observation/exterior_image_1_left", "observation/wrist_image_left",
                        "observation/joint_position", "observation/gripper_position", "prompt"}
    for k in ("observation/exterior_image_1_left", "observation/wrist_image_left"):
        assert obs[k].shape == (224, 224, 3) and obs[k].dtype == np.uint8
    assert obs["observation/joint_position"].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert obs["observation/gripper_position"].tolist() == [7.0]
    assert obs["prompt"] == "wipe"


def test_droid_reply_keeps_the_first_8_dims_of_every_row() -> None:
    actions = np.arange(10 * 10, dtype=np.float32).reshape(10, 10)
    c = preset("droid").chunk({"actions": actions, "server_timing": {"infer_ms": 3.0}}, 15.0)
    assert c.horizon == 10 and c.dim == 8 and c.control_hz == 15.0
    assert np.array_equal(c.values, actions[:, :8].astype(np.float64))


def test_aloha_sends_nested_chw_images_and_14_state_values() -> None:
    p = preset("aloha")
    names = p.io.state
    inp = PolicyInput(frames={n: _frame() for n in ("cam_high", "cam_left_wrist", "cam_right_wrist")},
                      proprio=tuple(range(14)), instruction="fold", arm="aloha", state_names=names)
    obs = p.request(inp)
    assert set(obs) == {"images", "state", "prompt"}
    assert set(obs["images"]) == {"cam_high", "cam_left_wrist", "cam_right_wrist"}
    assert obs["images"]["cam_high"].shape == (3, 224, 224)
    assert obs["state"].shape == (14,)
    assert p.io.emits is SpaceKind.JOINT_POSITION and p.io.action_dim == 14
    assert p.io.gripper is GripperConvention.NONE
    back = p.input(unpackb(packb(obs)), "aloha")
    assert np.array_equal(back.frames["cam_high"], obs["images"]["cam_high"].transpose(1, 2, 0))


def test_libero_preset_declares_ee_delta_7_and_8_state_values() -> None:
    p = preset("libero")
    assert p.io.label == "ee_delta[7]" and len(p.io.state) == 8
    assert [s.key for s in p.state] == ["observation/state"]


def test_generic_mapping_round_trips_through_the_wire_both_ways() -> None:
    p = preset("generic", LIBERO_LIKE)
    inp = _sim_input()
    obs = unpackb(packb(p.request(inp)))
    assert obs["observation/state"].tolist() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0]
    assert obs["observation/image"].shape == (224, 224, 3)
    server_side = p.input(obs, "sim-0")
    assert server_side.state_names == EE_STATE.names
    assert server_side.proprio == inp.proprio and server_side.instruction == inp.instruction
    assert set(server_side.frames) == {"main", "wrist"}
    chunk = ActionChunk(np.arange(14.0).reshape(2, 7), 10.0)
    assert p.chunk(unpackb(packb(p.reply(chunk))), 10.0) == chunk


def test_state_is_read_by_the_arms_field_names_in_any_order() -> None:
    names = tuple(reversed(EE_STATE.names))
    inp = PolicyInput({"main": _frame(), "wrist": _frame()}, tuple(range(7)), "x", arm="a",
                      state_names=names)
    obs = preset("generic", LIBERO_LIKE).request(inp)
    assert obs["observation/state"].tolist() == [6, 5, 4, 3, 2, 1, 0, 0]


def test_unnamed_state_is_read_in_the_presets_order_only_when_the_count_fits() -> None:
    p = preset("generic", LIBERO_LIKE)
    inp = PolicyInput({"main": _frame(), "wrist": _frame()}, tuple(range(7)), "x", arm="a")
    assert p.request(inp)["observation/state"].tolist() == [0, 1, 2, 3, 4, 5, 6, 0]
    with pytest.raises(PresetError, match="sent 3 unnamed state values"):
        p.request(PolicyInput({"main": _frame(), "wrist": _frame()}, (1.0, 2.0, 3.0), "x", arm="a"))


@pytest.mark.parametrize("inp, match", [
    (PolicyInput({"main": _frame()}, (0.0,) * 7, "x", arm="a", state_names=EE_STATE.names),
     "sent no camera 'wrist'"),
    (PolicyInput({"main": _frame(), "wrist": _frame()}, (0.0,) * 3, "x", arm="a",
                 state_names=("ee_x", "ee_y", "ee_z")), r"reports no state \['ee_roll'"),
    (PolicyInput({"main": np.zeros((8, 8), np.uint8), "wrist": _frame()}, (0.0,) * 7, "x",
                 arm="a", state_names=EE_STATE.names), "must be H x W x 3 uint8"),
])
def test_inputs_that_do_not_fit_are_refused_with_one_line(inp: PolicyInput, match: str) -> None:
    with pytest.raises(PresetError, match=match) as e:
        preset("generic", LIBERO_LIKE).request(inp)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("reply, match", [
    ({}, "has no 'actions'"),
    ({"actions": np.zeros((4, 6))}, r"shape \[4, 6\]; expected \(H, D\) with D >= 7"),
    ({"actions": np.zeros((2, 3, 7))}, "shape"),
    ({"actions": np.array([["a"] * 7])}, "dtype"),
    ({"actions": np.full((1, 7), np.nan)}, "non-finite"),
])
def test_bad_replies_are_refused(reply: dict, match: str) -> None:
    with pytest.raises(PresetError, match=match):
        preset("generic", LIBERO_LIKE).chunk(reply, 10.0)


def test_a_single_action_reply_is_a_chunk_of_one() -> None:
    c = preset("generic", LIBERO_LIKE).chunk({"actions": [0.1] * 7}, 10.0)
    assert c.horizon == 1 and c.row(0) == (0.1,) * 7


@pytest.mark.parametrize("obs, match", [
    ({"observation/image": _frame(), "observation/wrist_image": _frame(), "prompt": "x"},
     "observation 'observation/state' must be 8 numbers, got NoneType"),
    ({"observation/image": _frame(), "observation/wrist_image": _frame(),
      "observation/state": np.zeros(3), "prompt": "x"}, "must be 8 numbers"),
    ({"observation/image": _frame(), "observation/wrist_image": _frame(),
      "observation/state": np.zeros(8), "prompt": 5}, "must be the instruction text"),
    ({"observation/image": _frame(), "observation/state": np.zeros(8), "prompt": "x"},
     "has no 'observation/wrist_image'"),
])
def test_server_side_refuses_observations_that_do_not_fit(obs: dict, match: str) -> None:
    with pytest.raises(PresetError, match=match):
        preset("generic", LIBERO_LIKE).input(obs, "client")


def test_mapping_errors_are_one_line() -> None:
    with pytest.raises(PresetError, match="unknown preset 'pi0'"):
        preset("pi0")
    with pytest.raises(PresetError, match="generic needs a mapping"):
        preset("generic")
    with pytest.raises(PresetError, match=r"mapping actions.space"):
        preset("generic", {**LIBERO_LIKE, "actions": {"space": "warp", "dim": 7}})
    with pytest.raises(PresetError, match="mapping colour: Extra inputs"):
        preset("generic", {**LIBERO_LIKE, "colour": 1})
    with pytest.raises(PresetError, match="named twice"):
        preset("generic", {**LIBERO_LIKE, "state": {"a": ["ee_x"], "b": ["ee_x"]}})


def test_a_named_preset_takes_overrides_of_its_cameras() -> None:
    p = preset("droid", {"images": {"observation/exterior_image_1_left": {"camera": "ext1"},
                                    "observation/wrist_image_left": {"camera": "hand",
                                                                     "role": "wrist"}}})
    assert p.io.camera_names == ("ext1", "hand") and p.io.emits is SpaceKind.JOINT_VELOCITY


# --- matching before leasing -----------------------------------------------------------------


def test_the_generic_preset_matches_a_sim_ee_delta_arm() -> None:
    arm = ArmSpaces(ee_delta_spec(), SIM_CAMERAS, EE_STATE)
    assert match_pair("remote", preset("generic", LIBERO_LIKE).io, "sim-0", arm) == ()


def test_a_joint_position_generic_preset_matches_a_sim_joint_arm() -> None:
    mapping = {"images": {"image": {"camera": "main"}},
               "state": {"state": list(JOINT_STATE.names[:7])},
               "actions": {"space": "joint_position", "dim": 7}}
    arm = ArmSpaces(joint_action_spec(10.0), SIM_CAMERAS, JOINT_STATE)
    assert match_pair("remote", preset("generic", mapping).io, "sim-0", arm) == ()


def test_droid_preset_does_not_match_a_sim_arm_with_one_line() -> None:
    arm = ArmSpaces(ee_delta_spec(), SIM_CAMERAS, EE_STATE)
    with pytest.raises(SpaceMismatch, match=r"emits joint_velocity\[8\]; arm sim-0 accepts ee_delta\[7\]"):
        match_pair("pi05-droid", preset("droid").io, "sim-0", arm)


def test_libero_gripper_convention_gets_the_flip_adapter_on_an_open_is_1_arm() -> None:
    p = preset("libero", {"state": {"observation/state": [*EE_STATE.names, 0.0]}})
    arm = ArmSpaces(ee_delta_spec(), SIM_CAMERAS, EE_STATE)
    assert match_pair("pi0-libero", p.io, "sim-0", arm) == (Adapter.FLIP_GRIPPER,)


def test_a_missing_camera_name_is_refused_before_leasing() -> None:
    arm = ArmSpaces(ee_delta_spec(), (CameraSpec("main", 96, 128),), EE_STATE)
    with pytest.raises(SpaceMismatch, match="reads camera 'wrist'"):
        match_pair("remote", preset("generic", LIBERO_LIKE).io, "sim-0", arm)


def test_state_names_cross_the_policy_data_plane() -> None:
    inp = _sim_input()
    parts = [p if isinstance(p, bytes) else memoryview(p).tobytes()
             for p in P.encode_policy_request(3, inp)]
    msg = P.decode_policy_message(parts)
    assert isinstance(msg, P.PolicyRequest) and msg.input.state_names == EE_STATE.names
