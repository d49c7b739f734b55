"""Sim determinism, fall detection, pushes, and each task's reward sign on constructed states."""
import mujoco
import numpy as np
import pytest

from planner_node import spec
from planner_node.sim.env import EnvConfig, HumanoidEnv
from planner_node.robot.tasks import TASKS, get_task, healthy, kinematics


def rollout(env, seed, n=10):
    obs = [env.reset(seed)]
    rng = np.random.default_rng(seed)
    for _ in range(n):
        obs.append(env.step(env.zero_action + rng.normal(0, 0.05, 56))[0])
    return np.array(obs)


def test_determinism_under_seed(env):
    a, b = rollout(env, 5), rollout(HumanoidEnv(), 5)
    np.testing.assert_array_equal(a, b)
    c = rollout(env, 6)
    assert not np.allclose(a, c)


def test_zero_action_holds_pose_without_force(env):
    env.reset(0)
    force = env.data.actuator_force[env.layout.ctrl_idx]
    assert np.max(np.abs(force)) < 1e-6 * 300 + 2.0  # only the small reset noise is resisted


def test_fall_detected_when_lying(env):
    env.reset(0)
    assert not env.step(env.zero_action)[1]
    d = env.data
    d.qpos[2] = 0.05
    d.qpos[3:7] = [1, 0, 0, 0]  # CMU root frame is y-up: identity quaternion lies it down
    mujoco.mj_forward(env.model, d)
    assert env.step(env.zero_action)[1]


def test_push_changes_base_velocity():
    e = HumanoidEnv(EnvConfig(push_every=2, push_speed=0.5))
    e.reset(0)
    e.step(e.zero_action)
    v0 = e.data.qvel[:2].copy()
    e.push(direction_rad=0.0)
    assert e.data.qvel[0] - v0[0] == pytest.approx(0.5)


def test_bad_action_rejected(env):
    env.reset(0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(55))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(56, np.nan))


@pytest.fixture
def upright(env):
    return env.reset(0)


def with_motion(obs, v=(0, 0, 0), w=(0, 0, 0)):
    """Set heading-frame velocity (fwd, left, up) and rates (roll, pitch, yaw) in an observation."""
    from planner_node.robot.tasks import heading_frame
    o = obs.copy()
    f, lft, up = heading_frame(o)
    o[spec.OBS_SLICES["sensors_velocimeter"]] = v[0] * f + v[1] * lft + v[2] * up
    o[spec.OBS_SLICES["sensors_gyro"]] = w[0] * f + w[1] * lft + w[2] * up
    return o


def fallen_obs(obs):
    o = obs.copy()
    o[spec.OBS_SLICES["body_height"]] = 0.2
    o[spec.OBS_SLICES["world_zaxis"]] = [0.0, 0.0, 1.0]  # torso horizontal
    return o


def test_kinematics_roundtrip(upright):
    k = kinematics(with_motion(upright, (0.7, -0.2, 0.1), (0.3, -0.4, 0.5)))
    assert k["v_fwd"] == pytest.approx(0.7) and k["v_left"] == pytest.approx(-0.2)
    assert k["roll_rate"] == pytest.approx(0.3) and k["yaw_rate"] == pytest.approx(0.5)


def test_healthy_upright_vs_fallen(upright):
    assert healthy(upright) > 0.9
    assert healthy(fallen_obs(upright)) == 0.0


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_prefers_upright_to_fallen(name, upright):
    t = get_task(name)
    good = with_motion(upright, (0.5, 0.0, 0.0))
    assert t.reward(good) > t.reward(fallen_obs(good))


@pytest.mark.parametrize("name,pos,neg", [
    ("forward", dict(v=(1, 0, 0)), dict(v=(-1, 0, 0))),
    ("backward", dict(v=(-1, 0, 0)), dict(v=(1, 0, 0))),
    ("shift_left", dict(v=(0, 1, 0)), dict(v=(0, -1, 0))),
    ("speed", dict(v=(0, 1, 0)), dict(v=(0, 0, 0))),
    ("jump", dict(v=(0, 0, 1)), dict(v=(0, 0, -1))),
    ("rotate_x", dict(w=(1, 0, 0)), dict(w=(0, 0, 0))),
    ("rotate_y", dict(w=(0, 1, 0)), dict(w=(0, 0, 0))),
    ("rotate_z", dict(w=(0, 0, 1)), dict(w=(0, 0, 0))),
    ("stand", dict(v=(0, 0, 0)), dict(v=(1, 0, 0))),
])
def test_task_reward_sign(name, pos, neg, upright):
    t = get_task(name)
    assert t.reward(with_motion(upright, **pos)) > t.reward(with_motion(upright, **neg))


def test_track_follows_command(upright):
    t = get_task("track")
    fast = with_motion(upright, (0.8, 0, 0))
    still = with_motion(upright, (0.0, 0, 0))
    assert t.reward(fast, (0.8, 0, 0)) > t.reward(still, (0.8, 0, 0))
    assert t.reward(still, (0.0, 0, 0)) > t.reward(fast, (0.0, 0, 0))


def test_rewards_vectorize(upright):
    batch = np.stack([upright, fallen_obs(upright)] * 3).reshape(3, 2, 224)
    for t in TASKS.values():
        assert t.reward(batch).shape == (3, 2)


def test_unknown_task_lists_valid():
    with pytest.raises(KeyError, match="stand.*forward"):
        get_task("moonwalk")
