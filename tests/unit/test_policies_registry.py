"""Policy registry: small configs -> policies, one-line errors for everything wrong."""

from __future__ import annotations

import numpy as np
import pytest

from policies.base import Policy, PolicyInput
from policies.registry import (
    PolicyConfig,
    PolicyConfigError,
    build_policy,
    load_policy_config,
    parse_policy_config,
)


@pytest.mark.parametrize("kind", ["oracle", "vision_heuristic", "random"])
def test_build_baselines(kind):
    pol = build_policy({"name": f"my-{kind}", "kind": kind})
    assert isinstance(pol, Policy)
    assert pol.metadata.name == f"my-{kind}" and pol.metadata.kind == kind
    assert len(pol.metadata.checksum) == 64
    assert pol.needs_privileged == (kind == "oracle")


def test_options_change_the_checksum():
    a = build_policy({"name": "r", "kind": "random", "options": {"seed": 1}})
    b = build_policy({"name": "r", "kind": "random", "options": {"seed": 2}})
    c = build_policy(PolicyConfig(name="r", kind="random", options={"seed": 1}))
    assert a.metadata.checksum != b.metadata.checksum
    assert a.metadata.checksum == c.metadata.checksum


def test_unknown_kind_is_one_clear_line():
    with pytest.raises(PolicyConfigError) as e:
        build_policy({"name": "x", "kind": "rt3"})
    msg = str(e.value)
    assert "unknown policy kind 'rt3'" in msg and "vla" in msg and "\n" not in msg


def test_unknown_option_names_the_policy_and_allowed_options():
    with pytest.raises(PolicyConfigError) as e:
        build_policy({"name": "o", "kind": "oracle", "options": {"nosie": 0.1}})
    msg = str(e.value)
    assert "policy 'o'" in msg and "nosie" in msg and "unknown key" in msg and "noise" in msg
    assert "\n" not in msg


def test_bad_option_value():
    with pytest.raises(PolicyConfigError, match="noise"):
        build_policy({"name": "o", "kind": "oracle", "options": {"noise": -1}})
    with pytest.raises(PolicyConfigError, match="dtype"):
        build_policy({"name": "v", "kind": "vla", "path": ".", "options": {"dtype": "float8"}})


def test_vla_needs_an_existing_path(tmp_path):
    with pytest.raises(PolicyConfigError, match="'path' is required"):
        build_policy({"name": "v", "kind": "vla"})
    with pytest.raises(PolicyConfigError, match="does not exist"):
        build_policy({"name": "v", "kind": "vla", "path": str(tmp_path / "missing")})


def test_unknown_top_level_key_and_missing_name():
    with pytest.raises(PolicyConfigError, match="weights: unknown key"):
        parse_policy_config({"name": "x", "kind": "random", "weights": "a"})
    with pytest.raises(PolicyConfigError, match="name"):
        parse_policy_config({"kind": "random"})
    with pytest.raises(PolicyConfigError, match="mapping"):
        parse_policy_config(["random"])


def test_load_yaml_resolves_relative_path(tmp_path):
    (tmp_path / "ckpt").mkdir()
    f = tmp_path / "policy.yaml"
    f.write_text("name: tiny\nkind: vla\npath: ckpt\noptions: {constrained: true}\n")
    cfg = load_policy_config(f)
    assert cfg.path == str((tmp_path / "ckpt").resolve()) and cfg.options == {"constrained": True}
    with pytest.raises(PolicyConfigError, match="does not exist"):
        load_policy_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(PolicyConfigError, match="not valid YAML"):
        load_policy_config(tmp_path / "bad.yaml")


def test_random_policy_is_reproducible_and_in_range():
    pol = build_policy({"name": "r", "kind": "random", "options": {"seed": 3}})
    x = PolicyInput({"main": np.zeros((32, 32, 3), np.uint8)}, (0.0,) * 7, "pick apple", arm="a")
    pol.reset("a", "pick apple")
    first = [pol.act([x]).outputs[0].action for _ in range(5)]
    pol2 = build_policy({"name": "r", "kind": "random", "options": {"seed": 3}})
    pol2.reset("a", "pick apple")
    assert [pol2.act([x]).outputs[0].action for _ in range(5)] == first
    sp = pol.metadata.action_space
    for a in first:
        assert all(lo <= v <= hi for v, lo, hi in zip(a.continuous(), sp.low, sp.high))
    outs, seconds = pol.act([x, x])
    assert len(outs) == 2 and seconds >= 0
