"""A lab's own policy class as a kind (`module.path:ClassName`): built, validated and matched
like a shipped kind, with one-line errors for every way the name or the class can be wrong."""

from __future__ import annotations

import pytest

from policies.registry import PolicyConfigError, build_policy, parse_policy_config, policy_io
from policies.registration import validate_registration
from tests.policy_kit import CHUNKED_KIND, ChunkedPolicy


class NotAPolicy:
    pass


def test_a_class_kind_builds_with_its_own_options() -> None:
    p = build_policy({"name": "mine", "kind": CHUNKED_KIND,
                      "options": {"horizon": 4, "execute_steps": 2}})
    assert isinstance(p, ChunkedPolicy)
    assert p.metadata.name == "mine" and p.metadata.chunking.horizon == 4


@pytest.mark.parametrize(("kind", "options", "message"), [
    ("no_such_module_xyz:Policy", {}, "cannot import no_such_module_xyz: ModuleNotFoundError"),
    ("tests.policy_kit:Missing", {}, "tests.policy_kit has no Policy subclass named Missing"),
    ("tests.unit.test_policy_class_kinds:NotAPolicy", {}, "has no Policy subclass named NotAPolicy"),
    (CHUNKED_KIND, {"horizn": 4}, "bad options: horizn: unknown key (allowed: horizon,"),
])
def test_a_wrong_class_kind_fails_in_one_line(kind: str, options: dict, message: str) -> None:
    with pytest.raises(PolicyConfigError) as e:
        build_policy({"name": "mine", "kind": kind, "options": options})
    assert message in str(e.value) and "\n" not in str(e.value)
    assert "policy 'mine'" in str(e.value)


def test_a_kind_that_is_neither_known_nor_a_class_path_is_refused() -> None:
    with pytest.raises(PolicyConfigError, match="unknown policy kind 'pi0'.*module.path:ClassName"):
        parse_policy_config({"name": "x", "kind": "pi0"})


def test_policy_io_comes_from_declared_io_without_building() -> None:
    calls: list[str] = []
    orig = ChunkedPolicy.__init__

    def spy(self, *a, **k):  # type: ignore[no-untyped-def]
        calls.append("built")
        orig(self, *a, **k)

    ChunkedPolicy.__init__ = spy  # type: ignore[method-assign]
    try:
        io = policy_io({"name": "c", "kind": CHUNKED_KIND, "options": {"space": "joint_position"}})
    finally:
        ChunkedPolicy.__init__ = orig  # type: ignore[method-assign]
    assert calls == [] and io.emits.value == "joint_position"


def test_a_class_kind_registers_with_typed_options() -> None:
    v = validate_registration(name="mine", version="1", kind=CHUNKED_KIND,
                              options={"horizon": "4", "execute_steps": "2"})
    assert v.config.kind == CHUNKED_KIND and v.config.options == {"horizon": 4, "execute_steps": 2}
