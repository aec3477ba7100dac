"""robots.safety: pure rules, no zmq, no clocks (time is passed in)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robots import safety as S
from robots.spaces import ActionSpec, SpaceKind, ee_delta_spec
from robots.types import Action, ActionSpace, Workspace

SPACE = ActionSpace()
WS = Workspace()
MS = 1_000_000


def test_clip_within_limits_is_untouched():
    a = Action(dx=0.01, dy=-0.02, dz=0.0, droll=0.1, gripper=0.5)
    r = S.clip_action(a, SPACE, WS, (0.0, 0.0, 0.2))
    assert r.action == a and r.clipped == (False,) * 7 and not r.any_clipped


def test_clip_per_step_limits_and_flags():
    a = Action(dx=0.5, dy=-0.5, droll=9.0, gripper=2.0)
    r = S.clip_action(a, SPACE, WS, None)
    assert r.action.dx == 0.05 and r.action.dy == -0.05 and r.action.droll == 0.25 and r.action.gripper == 1.0
    assert r.clipped == (True, True, False, True, False, False, True)


def test_clip_workspace_given_ee_pose():
    # 1 cm from the +x wall: a 5 cm step is cut to 1 cm; z at the floor: no further down
    r = S.clip_action(Action(dx=0.05, dz=-0.03), SPACE, WS, (0.34, 0.0, 0.0))
    assert math.isclose(r.action.dx, 0.01, abs_tol=1e-12) and r.action.dz == 0.0
    assert r.clipped[:3] == (True, False, True)


def test_clip_outside_workspace_allows_moving_back_only():
    ee = (0.40, 0.0, 0.2)  # 5 cm beyond +x
    out = S.clip_action(Action(dx=0.03), SPACE, WS, ee)
    assert out.action.dx == 0.0 and out.clipped[0]
    back = S.clip_action(Action(dx=-0.03), SPACE, WS, ee)
    assert back.action.dx == -0.03 and not back.clipped[0]


def test_terminate_passes_through():
    assert S.clip_action(Action(terminate=True), SPACE, WS, None).action.terminate


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_refused_not_clipped(bad):
    with pytest.raises(S.NonFiniteAction):
        S.clip_action(Action(dz=bad), SPACE, WS, (0.0, 0.0, 0.2))
    with pytest.raises(S.NonFiniteAction):
        S.clip_action(Action(), SPACE, WS, (bad, 0.0, 0.2))
    assert not S.is_finite_values([0.0, bad])


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@given(st.lists(finite, min_size=7, max_size=7), st.tuples(finite, finite, finite))
def test_clip_properties(vals, ee):
    r = S.clip_action(Action.from_continuous(vals), SPACE, WS, ee)
    out = r.action.continuous()
    for i, (o, v) in enumerate(zip(out, vals)):
        assert SPACE.low[i] <= o <= SPACE.high[i]
        assert r.clipped[i] == (o != v)
    for i in range(3):  # never further outside the box than before
        before = max(WS.low[i] - ee[i], ee[i] - WS.high[i], 0.0)
        after = max(WS.low[i] - (ee[i] + out[i]), ee[i] + out[i] - WS.high[i], 0.0)
        assert after <= before + 1e-9
    again = S.clip_action(r.action, SPACE, WS, ee)  # idempotent
    assert again.action == r.action


def test_watchdog_disarmed_never_fires():
    st0 = S.WatchdogState()
    st1, fire = S.watchdog_tick(st0, 10**12, 500 * MS)
    assert not fire and st1 == st0 and S.watchdog_deadline(st0, 500 * MS) is None


def test_watchdog_fires_once_after_silence_and_feed_rearms():
    w = S.watchdog_arm(S.WatchdogState(), 1_000 * MS)
    assert S.watchdog_deadline(w, 500 * MS) == 1_500 * MS
    w, fire = S.watchdog_tick(w, 1_499 * MS, 500 * MS)
    assert not fire and not w.holding
    w, fire = S.watchdog_tick(w, 1_500 * MS, 500 * MS)
    assert fire and w.holding and w.fires == 1 and w.last_fire_delay_ns == 500 * MS
    w, fire = S.watchdog_tick(w, 5_000 * MS, 500 * MS)
    assert not fire and w.fires == 1  # once per silence
    w = S.watchdog_feed(w, 6_000 * MS)
    assert not w.holding
    w, fire = S.watchdog_tick(w, 6_400 * MS, 500 * MS)
    assert not fire
    w, fire = S.watchdog_tick(w, 6_600 * MS, 500 * MS)
    assert fire and w.fires == 2


def test_watchdog_explicit_hold_and_disarm():
    w = S.watchdog_arm(S.WatchdogState(), 0)
    w = S.watchdog_mark_held(w, 100 * MS)
    assert S.watchdog_deadline(w, 500 * MS) is None
    assert not S.watchdog_tick(w, 10_000 * MS, 500 * MS)[1]
    w = S.watchdog_disarm(S.watchdog_feed(w, 200 * MS))
    assert not S.watchdog_tick(w, 10_000 * MS, 500 * MS)[1]


def test_estop_latches_until_rearm():
    e = S.estop_trigger(S.EstopState(), "operator", 5)
    assert e.latched and e.reason == "operator" and e.count == 1
    e = S.estop_trigger(e, "again", 9)
    assert e.latched and e.since_ns == 5 and e.count == 2
    e = S.estop_rearm(e)
    assert not e.latched and e.rearms == 1
    assert S.estop_rearm(e) == e  # re-arming an unlatched stop changes nothing


def test_sequence_must_increase():
    s = S.SeqState()
    V = S.CommandVerdict
    assert S.check_command(s, 0, 0, 0, 0) is V.OK
    s = S.accept_seq(s, 5)
    assert S.check_command(s, 5, 0, 0, 0) is V.SEQ_NOT_INCREASING
    assert S.check_command(s, 3, 0, 0, 0) is V.SEQ_NOT_INCREASING
    assert S.check_command(s, 6, 0, 0, 0) is V.OK


def test_command_age():
    s, V = S.SeqState(), S.CommandVerdict
    now = 10_000 * MS
    assert S.check_command(s, 1, now - 100 * MS, now, 250 * MS) is V.OK
    assert S.check_command(s, 1, now - 300 * MS, now, 250 * MS) is V.TOO_OLD
    assert S.check_command(s, 1, now + 300 * MS, now, 250 * MS) is V.FROM_FUTURE
    assert S.check_command(s, 1, 0, now, 0) is V.OK  # age check off


def test_large_finite_values_are_clipped_not_refused():
    assert S.is_finite_values([1e308, 1e308])  # finite: clipped, never refused as NaN/inf
    assert not S.is_finite_values(["0.1"])  # not numbers
    r = S.clip_action(Action(dx=1e308, dy=-1e308, dz=1e300), SPACE, WS, None)
    assert r.action.continuous()[:3] == (0.05, -0.05, 0.05) and r.clipped[:3] == (True, True, True)
    r = S.clip_action(Action(dx=1e308), SPACE, WS, (0.0, 0.0, 0.2))
    assert r.action.dx == 0.05


JOINT = ActionSpec(SpaceKind.JOINT_POSITION, ("j1", "j2", "j3", "gripper"), ("rad", "rad", "rad", "1"),
                   (-1.0, -2.0, -0.5, 0.0), (1.0, 2.0, 0.5, 1.0))


def test_clip_command_joint_position_per_joint_limits_only():
    r = S.clip_command((0.5, -3.0, 1e300, 2.0), JOINT, WS, None)
    assert r.values == (0.5, -2.0, 0.5, 1.0) and r.clipped == (False, True, True, True) and r.any_clipped
    # joint spaces never see the workspace box, even with an ee position far outside it
    r = S.clip_command((0.9, 0.0, 0.0, 0.0), JOINT, WS, (5.0, 5.0, 5.0))
    assert r.values == (0.9, 0.0, 0.0, 0.0) and not r.any_clipped
    with pytest.raises(S.NonFiniteAction):
        S.clip_command((0.0, math.nan, 0.0, 0.0), JOINT, WS, None)
    with pytest.raises(S.NonFiniteAction):
        S.clip_command((0.0, 0.0, -math.inf, 0.0), JOINT, WS, None)
    with pytest.raises(ValueError, match=r"joint_position\[4\]: action has 3 values"):
        S.clip_command((0.0, 0.0, 0.0), JOINT, WS, None)


def test_clip_command_ee_delta_matches_clip_action():
    spec = ee_delta_spec(SPACE)
    for vals, ee in [((0.2, -0.2, 0.0, 1.0, 0.0, 0.0, 2.0), None), ((0.05, 0.0, -0.05, 0.0, 0.0, 0.0, 0.5),
                                                                    (0.34, 0.0, 0.01))]:
        a = S.clip_action(Action.from_continuous(vals), SPACE, WS, ee)
        c = S.clip_command(vals, spec, WS, ee)
        assert c.values == a.action.continuous() and c.clipped == a.clipped
