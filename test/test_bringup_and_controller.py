"""Launch file and `planner up` agree; the ROS-free controller's fallbacks (no rclpy.init here)."""
import ast
import re
from pathlib import Path

import numpy as np
import pytest
from states import measured_state as _state
import yaml

from planner_node import spec
from planner_node.control.controller import Controller, ControllerConfig
from planner_node.ros.launch_description import ARGUMENTS, NODES, PARAMS_FILE, node_overrides
from planner_node.planning import Plan, Planner

ROOT = Path(__file__).resolve().parents[1]


def test_launch_file_and_runner_share_one_description():
    tree = ast.parse((ROOT / "launch" / "humanoid.launch.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "planner_node.ros.launch_description"
                for a in n.names}
    assert {"ARGUMENTS", "NODES", "PARAMS_FILE", "node_overrides"} <= imported
    scripts = re.findall(r'"(\w+) = ([\w.]+):main"', (ROOT / "setup.py").read_text())
    assert set(NODES.values()) <= {name for name, _ in scripts}
    # `planner up` exposes exactly the launch arguments
    from planner_node.cli import build_parser
    up = build_parser()._subparsers._group_actions[0].choices["up"]
    # view and rrd start `planner view` beside the nodes: no node parameter (a ROS 2 install runs
    # it beside the launch: ros2 run planner_node planner_view --view web)
    flags = {a.dest for a in up._actions} - {"help", "system", "duration", "quiet", "log_dir", "view", "rrd"}
    trust = {"trusted_keys", "bundle_root", "lock_parameters"}
    base = {"bundle", "backend", "task", "lockstep", "use_sim_time", "reset_on_fall"}
    assert base | {"planner_kind"} | trust == flags
    assert set(ARGUMENTS) == base | {"planner"} | trust
    # the launch defaults are the parameters file's, so `ros2 launch` and `planner up` trust alike
    params = yaml.safe_load((ROOT / "config" / PARAMS_FILE).read_text())
    for arg in trust | {"reset_on_fall"}:
        (node, param, _), = ARGUMENTS[arg][1]
        assert str(ARGUMENTS[arg][0]).lower() == str(params[node]["ros__parameters"][param]).lower(), arg


def test_params_file_covers_every_declared_parameter():
    from planner_node.ros.node import PARAMETERS
    params = yaml.safe_load((ROOT / "config" / PARAMS_FILE).read_text())
    assert set(params) == set(NODES)
    assert set(params["planner"]["ros__parameters"]) == set(PARAMETERS)
    bridge_src = (ROOT / "planner_node" / "ros" / "bridge.py").read_text()
    declared = set(re.findall(r'declare_parameter\("(\w+)"', bridge_src))
    assert set(params["sim_bridge"]["ros__parameters"]) == declared


def test_argument_mapping():
    o = node_overrides({"bundle": "/b", "lockstep": "true", "use_sim_time": "true"})
    assert o["planner"]["bundle_path"] == "/b" and o["planner"]["lockstep"] is True
    assert o["sim_bridge"]["mode"] == "lockstep" and o["planner"]["use_sim_time"] is True
    # The bridge is the clock's source: it never runs on /clock itself.
    assert "use_sim_time" not in o["sim_bridge"]
    assert "bundle_path" not in node_overrides({"bundle": ""})["planner"]


class _Fixed(Planner):
    def __init__(self, fail=False):
        self.fail, self.calls = fail, 0

    def plan(self, request):
        self.calls += 1
        if self.fail:
            raise RuntimeError("boom")
        return Plan(np.tile(np.linspace(-0.5, 0.5, 56), (4, 1)) * (np.arange(4)[:, None] + 1) / 4, 1.0)



def test_controller_plans_then_falls_back_in_order(env):
    env.reset(0)
    c = Controller(_Fixed(), ControllerConfig())
    r0 = c.tick(None, 0.0)
    assert r0.source.startswith("fallback: no state")
    np.testing.assert_allclose(r0.action, c.stand_action)
    r1 = c.tick(_state(env, 1.0), 1.0)
    assert r1.source == "plan" and r1.positions.shape == (56,)
    r2 = c.tick(_state(env, 1.0), 1.5)  # stale: shifted previous plan
    assert "old" in r2.source
    np.testing.assert_allclose(r2.action, r1.plan.actions[1])
    for _ in range(3):
        r = c.tick(_state(env, 1.0), 2.0)
    s = _state(env, 1.0)
    np.testing.assert_allclose(r.action, c.estimator.positions_to_action(s.joint_pos))  # plan used up: hold pose
    st = c.stats()
    assert st["stale_state"] == 4 and st["fallbacks"] == 5


def test_lockstep_plans_on_a_state_however_late_the_tick(env):
    """Lockstep (realtime=False): the sim waits for the command, so a tick that ran late on a
    loaded machine still plans on its state; in real time the same delay is a stale state."""
    env.reset(0)
    late = Controller(_Fixed(), ControllerConfig())
    assert late.tick(_state(env, 1.0), 1.5, realtime=False).source == "plan"
    assert late.stats()["fallbacks"] == 0
    rt = Controller(_Fixed(), ControllerConfig())
    assert rt.tick(_state(env, 1.0), 1.5).source.startswith("fallback")
    assert rt.stats()["fallback_stale_state"] == 1


def test_controller_survives_planner_errors_and_bad_state(env):
    env.reset(0)
    c = Controller(_Fixed(fail=True), ControllerConfig())
    r = c.tick(_state(env, 1.0), 1.0)
    assert "planner error: RuntimeError: boom" in r.source and np.all(np.isfinite(r.positions))
    bad = _state(env, 1.0)
    bad.joint_pos[3] = np.nan
    r = c.tick(bad, 1.0)
    assert r.source.startswith("fallback") and np.all(np.isfinite(r.positions))
    assert c.stats()["planner_errors"] == 1 and c.stats()["fallback_observation_non_finite"] == 1


@pytest.mark.parametrize("field,value", [("deadline_ms", 0.0), ("deadline_ms", 31.0), ("task", "moonwalk"),
                                         ("control_period", 0.02), ("fallback", "freeze")])
def test_controller_config_names_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        ControllerConfig(**{field: value})


def test_command_positions_round_trip(env):
    c = Controller(None)
    a = np.linspace(-0.9, 0.9, spec.NUM_JOINTS)
    np.testing.assert_allclose(c.estimator.positions_to_action(c.estimator.action_to_positions(a)), a, atol=1e-9)


def test_estimator_rebuilds_the_sim_observation_from_measured_state():
    """What the node builds from /joint_states + /odom equals the simulator's own observation
    (all blocks but those needing accelerations, which a robot's IMU would measure)."""
    from planner_node.sim.env import HumanoidEnv
    from planner_node.control.state_estimator import StateEstimator
    env = HumanoidEnv()
    env.reset(1)
    est = StateEstimator()
    rng = np.random.default_rng(0)
    for _ in range(15):  # the activation estimate forgets its unknown start as 0.335^steps
        a = np.clip(env.zero_action + rng.normal(0, 0.1, 56), -1, 1)
        obs, _ = env.step(a)
        est.commanded(a)
    o2 = est.observe(_state(env, 0.0))
    for name, sl in spec.OBS_SLICES.items():
        if name in ("sensors_accelerometer", "sensors_torque"):
            continue
        np.testing.assert_allclose(o2[sl], obs[sl], atol=1e-6, err_msg=name)


def test_demo_tracking_error_ignores_sway_but_not_bias():
    from planner_node.ros.demo import tracking_rmse
    t = np.arange(200) * 0.03
    sway = 1.0 * np.sin(2 * np.pi * t / 0.99)  # +-1 m/s at the stride period (one window)
    assert tracking_rmse(0.3 + sway, np.zeros_like(t), (0.3, 0.0, 0.0)) < 0.05
    assert abs(tracking_rmse(0.1 + sway, np.zeros_like(t), (0.3, 0.0, 0.0)) - 0.2) < 0.05  # 0.2 m/s too slow
    assert abs(tracking_rmse(np.zeros_like(t), np.full_like(t, 0.1), (0.0, 0.0, 0.5)) - 0.4) < 1e-9


def test_demo_marks_a_segment_that_does_not_track():
    from planner_node.ros.demo import tracks
    assert tracks(0.008, 0.0, (0.3, 0.0, 0.0)) == "NO"        # the shipped policy's walk segment
    assert tracks(0.25, 0.0, (0.3, 0.0, 0.0)) == "yes"
    assert tracks(0.25, 0.1, (0.3, 0.0, 0.5)) == "NO"         # walks, but does not turn
    assert tracks(-0.2, 0.0, (0.3, 0.0, 0.0)) == "NO"         # backwards is not tracking
    assert tracks(0.0, 0.0, (0.0, 0.0, 0.0)) == "-"


def test_eval_tracking_summary():
    from planner_node.sim.evaluate import tracking_summary
    rows = [(0.3, 0.0, 0.0)] * 100
    t = tracking_summary(rows, (0.3, 0.0, 0.0))
    assert t["fwd_fraction"] == pytest.approx(1.0) and t["rmse"] == pytest.approx(0.0)
    assert "left_fraction" not in t and "yaw_fraction" not in t
    t = tracking_summary([(0.0, 0.1, 0.0)] * 100, (0.0, 0.2, 0.0))
    assert t["left_fraction"] == pytest.approx(0.5) and t["rmse"] == pytest.approx(0.1)
    assert tracking_summary([], (0.3, 0.0, 0.0)) == {}
