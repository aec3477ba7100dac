"""The pure rules of `policy register`: validation (one line naming the option) and the
immutability decision (a registered name + version never changes under a campaign)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.actors.policy import worker_start_error
from orchestrator.weights import (
    WeightsMismatchError,
    build_verified_policy,
    checksum_path,
    verify_weights,
)
from policies.registration import (
    Decision,
    PolicyChangeRefused,
    PolicyUsage,
    canonical_spec,
    decide,
    parse_options,
    spec_changes,
    validate_registration,
)
from policies.registry import PolicyConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def spec(kind: str = "random", options: dict | None = None, *, config_kind: str | None = None,
         checksum: str | None = None, path: str | None = None):
    cfg = {"kind": config_kind or kind, "path": path, "options": options or {}}
    return canonical_spec(kind, path, cfg, checksum)


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"kind": "orcale"},
         "unknown kind 'orcale' (choose from oracle, vision_heuristic, random, vla, openpi, "
         "openvla_rest, or a policy class"),
        ({"kind": "vla"}, "--kind vla needs --path"),
        ({"kind": "random", "options": {"bogus": "1"}},
         "unknown option 'bogus' for kind random (allowed: seed, scale, terminate_prob, space)"),
        ({"kind": "random", "options": {"scale": "5"}}, "option 'scale' for kind random"),
        ({"kind": "oracle", "options": {"seed": "x"}}, "option 'seed' for kind oracle"),
        ({"kind": "oracle", "path": "/tmp"}, "--kind oracle takes no --path"),
        ({"kind": "vla", "path": "/definitely/not/here"}, "--path /definitely/not/here"),
        ({"kind": "random", "version": "a b"}, "--version 'a b'"),
    ],
)
def test_bad_registrations_fail_with_one_line_naming_the_option(kwargs, needle) -> None:
    with pytest.raises(PolicyConfigError) as e:
        validate_registration("p", **kwargs)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["", "a b", "x@2", "n" * 101])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(PolicyConfigError, match="name"):
        validate_registration(name, "random")


def test_options_are_typed_so_the_same_registration_compares_equal(tmp_path: Path) -> None:
    a = validate_registration("p", "random", options=parse_options(["seed=3", "scale=0.5"]))
    b = validate_registration("p", "random", options=parse_options(["scale=.50", "seed=03"]))
    assert a.config.options == b.config.options == {"seed": 3, "scale": 0.5}
    vla = validate_registration("v", "vla", path=str(tmp_path / "." / ""))
    assert vla.config.path == str(tmp_path.resolve())


def test_parse_options_refuses_malformed_and_repeated_keys() -> None:
    assert parse_options(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(PolicyConfigError, match="expected key=value"):
        parse_options(["novalue"])
    with pytest.raises(PolicyConfigError, match="given twice"):
        parse_options(["seed=1", "seed=2"])


# -- the immutability decision ----------------------------------------------------------------


def test_new_name_version_is_created_and_identical_spec_is_unchanged() -> None:
    assert decide("p", "1", None, spec(), PolicyUsage()) is Decision.CREATE
    used = PolicyUsage(episodes=33, campaigns=("c1",))
    assert decide("p", "1", spec(), spec(), used) is Decision.UNCHANGED
    # older rows stored {} as config; the spec they mean is the same
    assert canonical_spec("random", None, {}, None) == spec()
    assert canonical_spec("random", None, {"kind": "random", "options": {}}, None) == spec()


def test_a_changed_spec_is_refused_without_force_even_when_unused() -> None:
    with pytest.raises(PolicyChangeRefused) as e:
        decide("oracle", "1", spec("oracle"), spec("random"), PolicyUsage())
    msg = str(e.value)
    assert "kind oracle -> random" in msg and "new --version" in msg and "--force" in msg
    assert "\n" not in msg


def test_a_used_policy_is_refused_force_or_not() -> None:
    used = PolicyUsage(episodes=33, campaigns=("c1",))
    for force in (False, True):
        with pytest.raises(PolicyChangeRefused, match="33 episode") as e:
            decide("oracle", "1", spec("oracle"), spec("random"), used, force=force)
        assert "immutable" in str(e.value) and "new --version" in str(e.value)
    leased = PolicyUsage(leased_trials=2)
    with pytest.raises(PolicyChangeRefused, match="2 trial"):
        decide("oracle", "1", spec("oracle"), spec("random"), leased, force=True)


def test_force_replaces_an_unused_policy_even_if_campaigns_list_it() -> None:
    listed = PolicyUsage(campaigns=("planned",))
    assert decide("p", "1", spec(), spec(options={"seed": 1}), listed, force=True) \
        is Decision.REPLACE


def test_spec_changes_name_every_difference() -> None:
    old = spec("vla", {"device": "cpu"}, checksum="a" * 64, path="/m/a")
    new = spec("vla", {"device": "cuda", "constrained": False}, checksum="b" * 64, path="/m/b")
    changes = spec_changes(old, new)
    assert "path /m/a -> /m/b" in changes
    assert f"weights {'a' * 12} -> {'b' * 12}" in changes
    assert "option device cpu -> cuda" in changes
    assert "option constrained (unset) -> False" in changes


# -- the weights checksum, checked at load ----------------------------------------------------


def test_verify_weights_names_policy_and_both_checksums(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"registered")
    expected = checksum_path(tmp_path)
    assert verify_weights("tiny", tmp_path, expected) == expected
    assert verify_weights("tiny", tmp_path, None) is None  # nothing registered to compare
    (tmp_path / "weights.bin").write_bytes(b"swapped")
    found = checksum_path(tmp_path)
    with pytest.raises(WeightsMismatchError) as e:
        verify_weights("tiny", tmp_path, expected)
    msg = str(e.value)
    assert "'tiny'" in msg and expected[:16] in msg and found[:16] in msg
    assert "new --version" in msg and "\n" not in msg
    with pytest.raises(WeightsMismatchError, match="missing"):
        verify_weights("tiny", tmp_path / "gone", expected)


def test_a_worker_refuses_changed_weights_before_loading_them(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"registered")
    expected = checksum_path(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"swapped")  # not even a model: never loaded
    config = {"name": "tiny", "kind": "vla", "path": str(tmp_path), "options": {}}
    with pytest.raises(WeightsMismatchError, match="tiny"):
        build_verified_policy(config, expected)
    # no checkpoint, no checksum: builds as before
    pol = build_verified_policy({"name": "r", "kind": "random", "options": {}}, None)
    assert pol.metadata.kind == "random"


def test_worker_start_error_keeps_the_one_line_message() -> None:
    wrapped = RuntimeError(
        "The actor died because of an error raised in its creation task, "
        "ray::PolicyWorker.__init__() (pid=1, ip=127.0.0.1)\n"
        '  File "orchestrator/weights.py", line 40, in verify_weights\n'
        "    raise WeightsMismatchError(\n"
        "orchestrator.weights.WeightsMismatchError: policy 'tiny': weights at /m have sha256 "
        "0123, expected 4567 (registered)\n"
    )
    assert worker_start_error(wrapped) == (
        "policy 'tiny': weights at /m have sha256 0123, expected 4567 (registered)"
    )


def test_registration_rules_import_no_shell_libraries() -> None:
    script = (
        "import json, sys, policies.registration\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'ray', 'zmq', 'sqlalchemy', 'torch', 'streamlit'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
