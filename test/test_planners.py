"""The Planner registry, the zero baseline and the MPPI expert (small configs, seconds)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from planner_node.planning import LEARNED, PLANNERS, PlanRequest, planner_class
from planner_node.sim.mppi import MPPIConfig, MPPIPlanner

SMALL = dict(samples=8, horizon=5, knots=3, threads=1)


@pytest.mark.parametrize("name", [n for n in PLANNERS if n not in LEARNED])
def test_baseline_registry_smoke(name, env):
    """Every registered baseline builds and returns a valid chunk of actions (learned kinds: test_kinds.py)."""
    planner = planner_class(name)(**({"mppi": SMALL}.get(name, {})))
    obs = env.reset(0)
    planner.reset(0)
    plan = planner.plan(PlanRequest(obs=obs, task="stand", sim_state=env.get_state()))
    assert plan.actions.ndim == 2 and plan.actions.shape[1] == 56
    assert np.all(np.abs(plan.actions) <= 1.0) and np.all(np.isfinite(plan.actions))


def test_unknown_planner_lists_valid():
    with pytest.raises(KeyError, match=", ".join(PLANNERS)):
        planner_class("no_such_planner")


def test_mppi_deterministic_under_seed(env):
    def first_actions(seed):
        p = MPPIPlanner(seed=seed, **SMALL)
        obs = env.reset(1)
        out = []
        for _ in range(3):
            plan = p.plan(PlanRequest(obs=obs, task="forward", sim_state=env.get_state()))
            out.append(plan.actions[0])
            obs, _ = env.step(plan.actions[0])
        return np.array(out)
    np.testing.assert_array_equal(first_actions(3), first_actions(3))
    assert not np.allclose(first_actions(3), first_actions(4))


def test_mppi_threaded_plan_ignores_earlier_rollouts(env):
    """Two rollout threads: a plan depends on the state and seed only, not on which rollouts
    the threads' MjData ran before (what makes the lockstep HIL runs repeatable)."""
    obs = env.reset(0)
    state = env.get_state()
    p = MPPIPlanner(seed=0, **{**SMALL, "threads": 2})
    a = p.plan(PlanRequest(obs=obs, task="stand", sim_state=state)).actions
    for _ in range(2):
        p.plan(PlanRequest(obs=obs, task="jump", sim_state=state))
    p.reset(0)
    np.testing.assert_array_equal(a, p.plan(PlanRequest(obs=obs, task="stand", sim_state=state)).actions)


def test_walk_lead_direction_and_cap():
    from planner_node.robot.humanoid import heading_world
    from planner_node.sim.mppi import _desired_velocity
    assert _desired_velocity("forward", None, 0.0) is None  # off by default
    assert _desired_velocity("stand", None, 0.2) is None
    np.testing.assert_allclose(_desired_velocity("backward", None, 0.2), [-0.2, 0.0])
    np.testing.assert_allclose(_desired_velocity("track", (0.5, 0.0, 0.3), 0.2), [0.2, 0.0])  # capped
    np.testing.assert_allclose(_desired_velocity("track", (0.1, 0.05, 0.0), 0.2), [0.1, 0.05])
    # The standing root quaternion faces world +x (the frame the HIL travel is measured in).
    from planner_node import spec
    np.testing.assert_allclose(heading_world(np.array(spec.STAND_ROOT_QUAT)), [1.0, 0.0], atol=1e-6)
    yaw90 = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])  # 90 deg about world z, then the stand pose
    q = np.empty(4)
    import mujoco
    mujoco.mju_mulQuat(q, yaw90, np.array(spec.STAND_ROOT_QUAT))
    np.testing.assert_allclose(heading_world(q), [0.0, 1.0], atol=1e-6)


def test_predictive_sampling_never_worse_than_holding(env):
    """With temperature 0 the chosen plan scores at least as well as the hold posture (sample 1)."""
    obs = env.reset(2)
    state = env.get_state()
    ps = MPPIPlanner(seed=0, **{**SMALL, "temperature": 0.0})
    best = ps.plan(PlanRequest(obs=obs, task="stand", sim_state=state)).score
    hold = MPPIPlanner(seed=0, **{**SMALL, "temperature": 0.0, "noise": 0.0})
    assert best >= hold.plan(PlanRequest(obs=obs, task="stand", sim_state=state)).score


def test_mppi_needs_sim_state(env):
    with pytest.raises(ValueError, match="sim_state"):
        MPPIPlanner(**SMALL).plan(PlanRequest(obs=env.reset(0)))


@pytest.mark.parametrize("field,value", [("samples", 1), ("knots", 9), ("noise", -1.0), ("budget_ms", 0.0),
                                         ("timestep", 0.007), ("timestep", 0.06), ("integrator", "verlet"),
                                         ("solver", "lu"), ("replan_every", 0), ("elite", 99),
                                         ("w_terminal", -1.0), ("terminal_critic", "")])
def test_mppi_config_errors_name_field(field, value):
    extra = {"w_terminal": 1.0} if field == "terminal_critic" else {}  # a weight without a critic
    with pytest.raises(ValueError, match=f"MPPIConfig.{field}"):
        MPPIConfig(**{**SMALL, **extra, field: value})


def test_planning_copy_is_the_robot_made_cheaper():
    """The expert's planning copy differs from the executed robot only in what it was told to:
    step, solver, integrator, self-collision. Bodies, joints, actuators are the same."""
    import mujoco

    from planner_node.robot.humanoid import load_model
    from planner_node.sim.mppi import planning_copy
    robot = load_model()
    m = planning_copy(MPPIConfig(timestep=0.015, solver="cg", integrator="implicitfast", self_collision=False))
    assert (m.opt.timestep, m.opt.solver, m.opt.integrator) == (0.015, mujoco.mjtSolver.mjSOL_CG,
                                                                 mujoco.mjtIntegrator.mjINT_IMPLICITFAST)
    assert (m.nq, m.nv, m.nu, m.nbody) == (robot.nq, robot.nv, robot.nu, robot.nbody)
    np.testing.assert_array_equal(m.actuator_gainprm, robot.actuator_gainprm)
    floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    body = [g for g in range(m.ngeom) if g != floor]
    collide = lambda a, b: bool(m.geom_contype[a] & m.geom_conaffinity[b] or m.geom_contype[b] & m.geom_conaffinity[a])  # noqa: E731
    assert all(collide(g, floor) for g in body) and not any(collide(a, b) for a in body[:5] for b in body)


def test_replan_every_executes_the_shifted_plan_in_between(env):
    obs = env.reset(0)
    p = MPPIPlanner(seed=0, **{**SMALL, "replan_every": 2})
    first = p.plan(PlanRequest(obs=obs, task="stand", sim_state=env.get_state()))
    obs, _ = env.step(first.actions[0])
    second = p.plan(PlanRequest(obs=obs, task="stand", sim_state=env.get_state()))
    assert first.info["replanned"] and not second.info["replanned"]
    np.testing.assert_array_equal(second.actions[:-1], first.actions[1:])
    third = p.plan(PlanRequest(obs=obs, task="stand", sim_state=env.get_state()))
    assert third.info["replanned"]


def test_elite_update_averages_only_the_best_samples(env):
    """elite=1 with temperature > 0 is predictive sampling: the nominal is the best sample."""
    obs = env.reset(0)
    state = env.get_state()
    a = MPPIPlanner(seed=0, **{**SMALL, "elite": 1}).plan(PlanRequest(obs=obs, task="stand", sim_state=state))
    b = MPPIPlanner(seed=0, **{**SMALL, "temperature": 0.0}).plan(PlanRequest(obs=obs, task="stand", sim_state=state))
    np.testing.assert_allclose(a.actions, b.actions)


def test_budget_caps_samples():
    p = MPPIPlanner(budget_ms=5.0, horizon=5, knots=2, threads=1)
    big = MPPIPlanner(budget_ms=500.0, horizon=5, knots=2, threads=1)
    assert 2 <= p.samples < big.samples


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "planner_node.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_eval_writes_json(tmp_path):
    out = tmp_path / "r.json"
    r = run_cli("eval", "--planner", "zero", "--task", "stand", "--episodes", "2", "--steps", "20",
                "--json", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    for key in ("mean_return", "fall_rate", "ctrl_steps_per_s", "episodes"):
        assert key in res
    assert len(res["episodes"]) == 2 and res["mean_return"] > 0
    assert "zero" in r.stdout and "stand" in r.stdout


def test_cli_eval_bundle_takes_its_temperature_and_records_the_bundle(tmp_path, hgap_bundle):
    out = {}
    for temp in ("0.3", "4.0"):
        out[temp] = tmp_path / f"r{temp}.json"
        r = run_cli("eval", "--bundle", str(hgap_bundle), "--temperature", temp, "--task", "stand", "--episodes", "1",
                    "--steps", "6", "--json", str(out[temp]), "--quiet")
        assert r.returncode == 0, r.stderr
    a, b = (json.loads(f.read_text()) for f in out.values())
    assert (a["temperature"], b["temperature"]) == (0.3, 4.0) and a["bundle"] == str(hgap_bundle)
    assert a["episodes"][0]["return"] != b["episodes"][0]["return"]  # the setting reached the planner


@pytest.mark.parametrize("flag,bad,valid", [("--task", "moonwalk", "rotate_z"), ("--planner", "nope", "mppi")])
def test_cli_unknown_names_list_valid(flag, bad, valid):
    r = run_cli("eval", flag, bad, "--episodes", "1", "--steps", "1", "--quiet")
    assert r.returncode == 2
    assert bad in r.stderr and valid in r.stderr


def test_cli_video_renders_mp4(tmp_path):
    from planner_node.sim.render import RenderUnavailable, VideoRecorder
    from planner_node.robot.humanoid import load_model
    try:
        VideoRecorder(load_model(), str(tmp_path / "probe.mp4")).close()
    except RenderUnavailable as e:
        pytest.skip(f"headless rendering unavailable here: {e}")
    out = tmp_path / "ep.mp4"
    r = run_cli("eval", "--planner", "zero", "--episodes", "1", "--steps", "12", "--video", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    import imageio_ffmpeg
    nframes, secs = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert nframes == 12 and secs > 0.3


def test_mppi_warm_up_optimises_in_place_without_shifting(env):
    """warm_up(k) runs k MPPI updates at one state; the next plan starts from that nominal as it
    is (not shifted one period, as a plan made a step ago would be); warm_up(0) changes nothing."""
    obs = env.reset(2)
    req = PlanRequest(obs=obs, task="stand", sim_state=env.get_state())
    cold, zero, warm = (MPPIPlanner(seed=0, **SMALL) for _ in range(3))
    zero.warm_up(req, 0)
    np.testing.assert_array_equal(zero.plan(req).actions, cold.plan(req).actions)
    cold.reset(0)
    warm.warm_up(req, 3)
    nominal = warm.nominal.copy()
    warm.rng = np.random.default_rng(7)
    warm.plan(req)
    # The plan's sample 0 is the nominal itself: reproduce its update from the unshifted nominal.
    check = MPPIPlanner(seed=0, **SMALL)
    check.nominal, check.rng = nominal, np.random.default_rng(7)
    check._warmed = True
    check.plan(req)
    np.testing.assert_array_equal(warm.nominal, check.nominal)
    shifted = MPPIPlanner(seed=0, **SMALL)
    shifted.nominal, shifted.rng = nominal, np.random.default_rng(7)
    shifted.plan(req)
    assert not np.allclose(shifted.nominal, warm.nominal)   # the shift would have changed it
    with pytest.raises(ValueError, match="sim_state"):
        warm.warm_up(PlanRequest(obs=obs, task="stand"), 2)


def test_mppi_warm_up_lowers_the_cost_of_a_cold_start(env):
    """At a pushed state, the plan after 6 warm-up updates costs less than the cold first plan."""
    obs = env.reset(4)
    for _ in range(3):
        obs, _ = env.step(env.zero_action)
    env.push(0.0, 0.6)
    req = PlanRequest(obs=env.observation(), task="stand", sim_state=env.get_state())
    cold, warm = MPPIPlanner(seed=0, **SMALL), MPPIPlanner(seed=0, **SMALL)
    warm.warm_up(req, 6)
    assert warm.plan(req).score > cold.plan(req).score
