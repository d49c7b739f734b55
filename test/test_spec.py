"""The spec is the one source of truth: check it against the MJCF by name."""
import mujoco
import numpy as np

from planner_node import spec
from planner_node.robot.humanoid import Layout, load_model


def test_dimensions():
    assert spec.NUM_JOINTS == 56 and len(set(spec.JOINT_NAMES)) == 56
    assert spec.OBS_DIM == 224
    assert spec.SUBSTEPS * spec.PHYSICS_TIMESTEP_S == spec.CONTROL_PERIOD_S
    sizes = dict(spec.OBS_BLOCKS)
    assert sizes["joints_pos"] == sizes["joints_vel"] == sizes["actuator_activation"] == spec.NUM_JOINTS


def test_model_matches_spec_by_name():
    m = load_model()
    assert (m.nq, m.nv, m.nu, m.na) == (63, 62, 56, 56)
    assert m.opt.timestep == spec.PHYSICS_TIMESTEP_S
    actuators = {m.actuator(i).name for i in range(m.nu)}
    assert actuators == set(spec.JOINT_NAMES)
    for i in range(m.nu):  # every actuator drives the joint of the same name
        assert m.joint(m.actuator_trnid[i, 0]).name == m.actuator(i).name
    lay = Layout(m)
    # joints_pos in the observation is qpos mapped by name: perturb one joint, see it move.
    d = mujoco.MjData(m)
    j = spec.JOINT_NAMES.index("rtibiarx")
    d.qpos[m.joint("rtibiarx").qposadr[0]] = 0.7
    mujoco.mj_forward(m, d)
    from planner_node.robot.observation import build_observation
    obs = build_observation(lay, d.qpos, d.qvel, d.act, d.sensordata)
    jp = spec.obs_block(obs, "joints_pos")
    assert jp[j] == 0.7 and np.count_nonzero(jp == 0.7) == 1


def test_spec_hash_reflects_layout():
    changed = spec.Spec(control_period_s=0.02)
    assert changed.hash != spec.SPEC_HASH
    assert spec.Spec().hash == spec.SPEC_HASH


def test_unknown_block_named():
    try:
        spec.obs_block(np.zeros(224), "nope")
    except KeyError as e:
        assert "nope" in str(e) and "joints_pos" in str(e)
    else:
        raise AssertionError("expected KeyError")


def test_observation_blocks_match_state(env):
    obs = env.reset(3)
    d, lay = env.data, env.layout
    assert obs.shape == (224,)
    np.testing.assert_allclose(spec.obs_block(obs, "joints_vel"), d.qvel[lay.qvel_idx])
    np.testing.assert_allclose(spec.obs_block(obs, "body_height"), [d.qpos[2]])
    # world_zaxis is the third row of the root's rotation matrix
    np.testing.assert_allclose(spec.obs_block(obs, "world_zaxis"), d.xmat[m_root(env)][6:9], atol=1e-9)
    # egocentric end effectors: rotate the world offset into the root frame
    R = d.xmat[m_root(env)].reshape(3, 3)
    head = d.xpos[mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "head")]
    np.testing.assert_allclose(spec.obs_block(obs, "appendages_pos")[12:15], (head - d.xpos[m_root(env)]) @ R,
                               atol=1e-9)
    assert set(np.unique(spec.obs_block(obs, "sensors_touch"))) <= {0.0, 1.0}


def m_root(env):
    return mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "root")
