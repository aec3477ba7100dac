"""The pure parts of the openpi client and policy (policies/remote/openpi_client.py,
openpi_policy.py, presets.roboarena_config) and the data plane's `unavailable` failure."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from policies.remote.openpi_client import Backoff, OpenpiClient, error_line, server_timing
from policies.remote.openpi_policy import OpenpiOptions, api_key, json_safe, openpi_io
from policies.remote.presets import PresetError, preset, roboarena_config
from robots import protocol as P
from robots.spaces import SpaceKind


def test_backoff_grows_to_its_cap_and_the_first_reconnect_is_immediate() -> None:
    b = Backoff(first_s=0.5, factor=2.0, max_s=3.0)
    assert [b.delay(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_servers_traceback_becomes_its_last_line() -> None:
    tb = "Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'prompt'\n\n"
    assert error_line(tb) == "KeyError: 'prompt'"
    assert error_line("") == "server error (no message)"
    assert len(error_line("x" * 1000)) == 300


def test_server_timing_keeps_numbers_only() -> None:
    assert server_timing({"server_timing": {"infer_ms": 3, "prev_total_ms": 4.5, "x": "no",
                                            "b": True}}) == {"infer_ms": 3.0, "prev_total_ms": 4.5}
    assert server_timing({"actions": []}) == {}


def test_the_client_wants_a_websocket_url() -> None:
    with pytest.raises(ValueError, match="must look like ws://host:port"):
        OpenpiClient("http://host:8000")


def test_json_safe_metadata() -> None:
    meta = {b"k": np.arange(3), "s": np.float32(1.5), "raw": b"\x01\x02", "big": np.zeros(5000),
            "nested": [{"t": (1, 2)}], "obj": object}
    out = json_safe(meta)
    assert out["k"] == [0, 1, 2] and out["s"] == 1.5 and out["raw"] == "0102"
    assert out["big"] == "<array [5000] <f8>" and out["nested"] == [{"t": [1, 2]}]
    assert isinstance(out["obj"], str)


def test_options_are_checked_with_one_line_each() -> None:
    with pytest.raises(ValidationError, match="execute_steps 9 > horizon 4"):
        OpenpiOptions(url="ws://h:1", horizon=4, execute_steps=9)
    with pytest.raises(ValidationError, match="generic needs a mapping"):
        OpenpiOptions(url="ws://h:1", preset="generic")
    with pytest.raises(ValidationError, match="api_key_env"):
        OpenpiOptions(url="ws://h:1", api_key_env="not a name")
    assert openpi_io({"url": "ws://h:1"}).emits is SpaceKind.JOINT_VELOCITY


def test_the_api_key_is_read_from_the_named_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    o = OpenpiOptions(url="ws://h:1", api_key_env="MY_PI_KEY")
    monkeypatch.setenv("MY_PI_KEY", "k")
    assert api_key(o, "p") == "k"
    monkeypatch.delenv("MY_PI_KEY")
    with pytest.raises(ValueError, match="env var MY_PI_KEY"):
        api_key(o, "p")
    assert api_key(OpenpiOptions(url="ws://h:1"), "p") is None


def test_roboarena_metadata_is_recognised_and_adapts_the_preset() -> None:
    assert roboarena_config({"policy": "pi0"}) is None
    cfg = roboarena_config({"image_resolution": (180, 320), "needs_wrist_camera": False,
                            "n_external_cameras": 1, "action_space": "joint_velocity"})
    assert cfg is not None
    p = cfg.adapt(preset("droid"), "pi05")
    assert p.size == (180, 320) and [i.key for i in p.images] == ["observation/exterior_image_1_left"]
    assert p.io == preset("droid").io  # what the arms were matched with stays
    jp = roboarena_config({"image_resolution": None, "action_space": "joint_position"})
    assert jp is not None
    with pytest.raises(PresetError, match="action_space is 'joint_position'; preset droid emits"):
        jp.adapt(preset("droid"), "pi05")
    with pytest.raises(PresetError, match="image_resolution"):
        roboarena_config({"image_resolution": [0, 2], "action_space": "joint_velocity"})


def test_a_failure_marked_unavailable_crosses_the_data_plane() -> None:
    rid, f = P.decode_policy_reply([P.encode_policy_failure(5, "gone", unavailable=True)])
    assert rid == 5 and f == P.PolicyFailure("gone", True)
    assert P.decode_policy_reply([P.encode_policy_failure(6, "x")])[1] == P.PolicyFailure("x", False)
