"""The single observation builder: MuJoCo arrays -> H-GAP's 224-D vector in spec order.

Vectorized over leading axes so the same code builds one observation for the sim, the
node and dataset tools, and a (samples, steps, 224) batch from ``mujoco.rollout`` output.
"""
from __future__ import annotations

import numpy as np

from planner_node import spec
from planner_node.robot.humanoid import TORQUE_THRESHOLD, TOUCH_THRESHOLD, Layout


def world_zaxis_from_quat(quat: np.ndarray) -> np.ndarray:
    """World z expressed in the body frame (third row of R) for (w, x, y, z) quaternions."""
    w, x, y, z = (quat[..., i] for i in range(4))
    return np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1)


def build_observation(layout: Layout, qpos: np.ndarray, qvel: np.ndarray, act: np.ndarray,
                      sensordata: np.ndarray) -> np.ndarray:
    """Observation(s) of shape (..., OBS_DIM) from state arrays of shape (..., n)."""
    def pick(idx, n):  # sensors a planning model dropped read as zeros
        return sensordata[..., idx] if idx is not None else np.zeros(sensordata.shape[:-1] + (n,))

    quat = qpos[..., 3:7]
    quat = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
    blocks = {
        "actuator_activation": act[..., layout.act_idx],
        "appendages_pos": sensordata[..., layout.appendages],
        "body_height": qpos[..., 2:3],
        "end_effectors_pos": sensordata[..., layout.end_eff],
        "joints_pos": qpos[..., layout.qpos_idx],
        "joints_vel": qvel[..., layout.qvel_idx],
        "sensors_accelerometer": pick(layout.accel, 3),
        "sensors_gyro": sensordata[..., layout.gyro],
        "sensors_torque": np.tanh(2.0 * pick(layout.torque, 6) / TORQUE_THRESHOLD),
        "sensors_touch": (pick(layout.touch, 10) > TOUCH_THRESHOLD).astype(qpos.dtype),
        "sensors_velocimeter": sensordata[..., layout.veloc],
        "world_zaxis": world_zaxis_from_quat(quat),
    }
    out = np.concatenate([blocks[name] for name, _ in spec.OBS_BLOCKS], axis=-1)
    assert out.shape[-1] == spec.OBS_DIM
    return out
