"""The command stream is safe whatever the inputs or the planner do (ROS-free; no rclpy.init).

Output guard: nothing non-finite or outside the joint ranges is ever returned, on any path
(plan, shifted plan, hold, stand). State validation names what is wrong, per reason. The
stamp gate judges stamps against the clock and never lets a rejected message move its
reference (one message stamped an hour ahead used to block the real stream for good).
"""
import numpy as np
import pytest
from states import measured_state as _state

from planner_node import spec
from planner_node.control.controller import COUNTERS, Controller, ControllerConfig
from planner_node.control.output_guard import OutputGuard
from planner_node.planning import Plan, Planner
from planner_node.control.state_validation import (REJECT_REASONS, Rejected, StampGate, StateLimits, check_command,
                                           check_joints, check_odometry)


class _Scripted(Planner):
    """Returns the given action chunks in turn (the last one forever)."""

    def __init__(self, *chunks):
        self.chunks = list(chunks)

    def plan(self, request):
        a = self.chunks.pop(0) if len(self.chunks) > 1 else self.chunks[0]
        return Plan(np.array(a, float), 0.0)



def _safe(c: Controller, r) -> bool:
    q = r.positions
    lo, hi = c.estimator.layout.joint_range.T
    return q.shape == (56,) and np.all(np.isfinite(q)) and np.all(q >= lo - 1e-6) and np.all(q <= hi + 1e-6)


def test_output_guard_reasons():
    rng = np.array([[-1.0, 1.0]] * 3)
    g = OutputGuard(rng)
    assert g.check([0.0, 1.0, -1.0]) is None
    assert g.check([0.0, np.nan, 0.0]) == "non_finite"
    assert g.check([0.0, np.inf, 0.0]) == "non_finite"
    assert g.check([0.0, 1.01, 0.0]) == "out_of_limits"
    assert g.check([0.0, 0.0]) == "bad_shape"
    assert g.check(None) == "bad_shape"


@pytest.mark.parametrize("bad,reason", [(np.nan, "non_finite"), (np.inf, "non_finite"), (1.5, "out_of_limits"),
                                        (-3.0, "out_of_limits")])
def test_guard_replaces_a_bad_plan_with_the_next_fallback(env, bad, reason):
    env.reset(0)
    good = np.tile(np.linspace(-0.5, 0.5, 56), (4, 1))
    broken = good.copy()
    broken[0, 7] = bad
    c = Controller(_Scripted(good, broken), ControllerConfig())
    r1 = c.tick(_state(env, 1.0), 1.0)
    assert r1.source == "plan" and _safe(c, r1)
    r2 = c.tick(_state(env, 1.03), 1.03)  # the planner now returns an unusable first action
    assert _safe(c, r2) and "plan rejected by the guard" in r2.source, r2.source
    np.testing.assert_allclose(r2.action, good[1])  # the shifted previous plan
    st = c.stats()
    assert st[f"guard_{reason}_plan"] == 1 and st["fallback_plan_rejected"] == 1 and st["fallbacks"] == 1


def test_guard_skips_a_bad_shifted_plan_and_holds(env):
    env.reset(0)
    plan = np.tile(np.linspace(-0.5, 0.5, 56), (4, 1))
    plan[1:, 3] = np.nan  # only the first step is usable
    c = Controller(_Scripted(plan), ControllerConfig())
    s = _state(env, 1.0)
    r1 = c.tick(s, 1.0)
    assert r1.source == "plan"
    r2 = c.tick(s, 2.0)  # stale: the shifted plan is next, but it holds NaN
    assert _safe(c, r2)
    np.testing.assert_allclose(r2.action, c.estimator.positions_to_action(s.joint_pos))
    st = c.stats()
    assert st["guard_non_finite_shifted_plan"] == 1 and st["fallback_stale_state"] == 1


def test_nothing_unsafe_is_ever_returned_under_random_garbage(env):
    """Planners that return garbage of every kind, states that go stale: every command passes."""
    env.reset(0)
    rng = np.random.default_rng(0)
    garbage = [np.full((3, 56), np.nan), np.full((3, 56), -np.inf), rng.normal(0, 5, (3, 56)),
               np.zeros((0, 56)), np.zeros((3, 55)), np.full((3, 56), 1e300), rng.uniform(-1, 1, (5, 56))]
    c = Controller(_Scripted(*(garbage * 20)), ControllerConfig())
    for k in range(140):
        stamp = 1.0 + 0.03 * k
        r = c.tick(_state(env, stamp), stamp + (0.5 if k % 5 == 0 else 0.0))
        assert _safe(c, r), (k, r.source)
    st = c.stats()
    assert st["guard_non_finite_plan"] > 0 and st["guard_out_of_limits_plan"] > 0 and st["planner_errors"] > 0


def test_stats_list_every_counter_from_the_start():
    c = Controller(None)
    st = c.stats()
    assert set(COUNTERS) <= set(st) and all(st[k] == 0 for k in COUNTERS)


def test_state_limits_name_each_reason(env):
    env.reset(0)
    s = _state(env, 0.0)
    lim, rng, names = StateLimits(), env.layout.joint_range, spec.JOINT_NAMES

    def reason(fn, *args):
        with pytest.raises(Rejected) as e:
            fn(*args)
        return e.value.reason, str(e.value)

    check_joints(s.joint_pos, s.joint_vel, rng, names, lim)  # the real state passes
    check_odometry(s.base_pos, s.base_quat, s.base_lin_vel, s.base_ang_vel, lim)
    pos = s.joint_pos.copy()
    pos[5] = rng[5, 1] + 1.0
    r, msg = reason(check_joints, pos, s.joint_vel, rng, names, lim)
    assert r == "position_limit" and names[5] in msg
    vel = s.joint_vel.copy()
    vel[2] = 1e4
    assert reason(check_joints, s.joint_pos, vel, rng, names, lim)[0] == "velocity_bound"
    vel[2] = np.nan
    assert reason(check_joints, s.joint_pos, vel, rng, names, lim)[0] == "non_finite"
    assert reason(check_odometry, s.base_pos, s.base_quat * 1.01, s.base_lin_vel, s.base_ang_vel, lim)[0] == "quaternion"
    assert reason(check_odometry, s.base_pos + 1e6, s.base_quat, s.base_lin_vel, s.base_ang_vel, lim)[0] == "position_bound"
    assert reason(check_odometry, s.base_pos, s.base_quat, s.base_lin_vel + 1e3, s.base_ang_vel, lim)[0] == "twist_bound"
    assert reason(check_odometry, s.base_pos, s.base_quat, s.base_lin_vel, s.base_ang_vel * np.inf, lim)[0] == "non_finite"
    assert reason(check_command, (np.nan, 0, 0), lim)[0] == "non_finite"
    assert reason(check_command, (0, 0, 100.0), lim)[0] == "bound"
    check_command((0.5, 0.0, 0.5), lim)
    with pytest.raises(ValueError, match="joint_velocity_max"):
        StateLimits(joint_velocity_max=-1.0)


def test_one_future_stamp_does_not_block_the_real_stream():
    gate = StampGate(future_tolerance_s=0.1, max_age_s=0.5)
    now = 100.0
    gate.check("odom", now, now)
    with pytest.raises(Rejected) as e:
        gate.check("odom", now + 3600.0, now)  # stamped an hour ahead
    assert e.value.reason == "stamp_future"
    for k in range(1, 50):  # the real stream goes on, accepted
        gate.check("odom", now + 0.03 * k, now + 0.03 * k)
    with pytest.raises(Rejected) as e:
        gate.check("odom", now - 10.0, now + 1.5)
    assert e.value.reason == "stamp_past"
    with pytest.raises(Rejected) as e:
        gate.check("odom", now + 1.40, now + 1.5)  # older than the last accepted, inside the window
    assert e.value.reason == "stamp_backwards"
    gate.check("odom", now + 1.47, now + 1.5)
    with pytest.raises(Rejected) as e:
        gate.check("odom", float("nan"), now + 1.5)
    assert e.value.reason == "stamp_future"
    assert gate.clock_resets == 0


def test_a_restarted_clock_is_judged_on_its_own():
    """A new simulator's /clock starts again from zero: its states are accepted at once."""
    gate = StampGate()
    for k in range(100):
        gate.check("joint_states", 300.0 + 0.03 * k, 300.0 + 0.03 * k)
    gate.check("joint_states", 0.03, 0.03)
    assert gate.clock_resets == 1
    gate.check("joint_states", 0.06, 0.06)
    with pytest.raises(Rejected):
        gate.check("joint_states", 0.045, 0.06)  # backwards within the new time source


def test_every_reject_reason_is_reachable_and_named():
    for topic, reasons in REJECT_REASONS.items():
        assert len(set(reasons)) == len(reasons), topic
    with pytest.raises(AssertionError):
        Rejected("odom", "not_a_reason", "x")


class _Shift(Planner):
    def plan(self, request):
        return Plan(np.tile(np.linspace(-0.5, 0.5, 56), (4, 1)), 0.0)


def test_action_filter_sits_between_plan_and_guard(env):
    """A filter chooses the action; what it returns still goes through the output guard."""
    from planner_node.control.action_filter import ActionFilter, Filtered

    class Halve(ActionFilter):
        def filter(self, observation, plan):
            return Filtered(plan.actions[0] * 0.5, intervened=True)

    class Broken(ActionFilter):
        def filter(self, observation, plan):
            return Filtered(np.full(56, np.nan), intervened=True)

    env.reset(0)
    c = Controller(_Shift(), ControllerConfig(), action_filter=Halve())
    r = c.tick(_state(env, 1.0), 1.0)
    np.testing.assert_allclose(r.action, np.linspace(-0.5, 0.5, 56) * 0.5)
    assert c.stats()["filter_interventions"] == 1
    c = Controller(_Shift(), ControllerConfig(), action_filter=Broken())
    r = c.tick(_state(env, 1.0), 1.0)
    assert _safe(c, r) and c.stats()["guard_non_finite_plan"] == 1


def test_filter_registry_names_the_parameter():
    from planner_node.control.action_filter import PassThrough, make_filter
    assert isinstance(make_filter("none"), PassThrough)
    with pytest.raises(ValueError, match="safety_filter: unknown filter 'bogus'; valid: none, ldm"):
        make_filter("bogus")
    with pytest.raises(ValueError, match="safety_filter_config"):
        make_filter("none", "threshold: 3")
    with pytest.raises(ValueError, match="safety_filter_config: expected a mapping"):
        make_filter("none", "[1, 2]")


def test_one_parameter_table_for_node_config_and_yaml():
    """The node's declarations, ControllerConfig's defaults and config/humanoid.yaml agree."""
    import dataclasses
    from pathlib import Path

    import yaml

    from planner_node.control.parameters import PARAMS
    root = Path(__file__).resolve().parents[1]
    on_file = yaml.safe_load((root / "config" / "humanoid.yaml").read_text())["planner"]["ros__parameters"]
    table = {p.name: p.default for p in PARAMS}
    assert list(on_file) == list(table), "names (or their order) differ"
    for name, value in table.items():
        assert type(on_file[name]) is type(value) and on_file[name] == value, (name, on_file[name], value)
    for f in dataclasses.fields(ControllerConfig):
        if f.name in table:
            assert f.default == table[f.name], f.name


def test_clock_mismatch_is_named_only_when_two_clocks_explain_it():
    from planner_node.control.state_validation import clock_mismatch_hint
    wall = 1.79e9
    hint = clock_mismatch_hint("stamp_past", 86.55, wall, use_sim_time=False, clock_publishers=1)
    assert hint and "use_sim_time:=true" in hint and "86.550" in hint
    assert clock_mismatch_hint("stamp_past", 86.55, wall, use_sim_time=False, clock_publishers=0) is None
    assert clock_mismatch_hint("stamp_past", wall - 2.0, wall, use_sim_time=False, clock_publishers=1) is None  # late
    hint = clock_mismatch_hint("stamp_future", wall, 0.0, use_sim_time=True, clock_publishers=0)
    assert hint and "use_sim_time:=false" in hint
    assert clock_mismatch_hint("stamp_future", wall, 0.0, use_sim_time=True, clock_publishers=1) is None
    assert clock_mismatch_hint("stamp_backwards", 86.55, wall, use_sim_time=False, clock_publishers=1) is None
    assert clock_mismatch_hint("stamp_past", float("nan"), wall, use_sim_time=False, clock_publishers=1) is None
