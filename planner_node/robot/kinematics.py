"""Forward kinematics of the humanoid from what the robot publishes (/joint_states, /odom).

One MjData of the robot's own model, posed by ``mj_kinematics`` only (no dynamics, no contacts):
the viewer poses every geom from it, and the bridge's /tf frames come from the same numbers.
Frames: the world frame is /odom's ``odom``; MuJoCo's quaternions are (w, x, y, z).
"""
from __future__ import annotations

import mujoco
import numpy as np

from planner_node import spec
from planner_node.robot.humanoid import Layout, heading_world, load_model


def quat_rotate(q_wxyz: np.ndarray, v: np.ndarray) -> np.ndarray:
    """v (3,) rotated by the unit quaternion (w, x, y, z)."""
    w, u = q_wxyz[0], np.asarray(q_wxyz[1:], float)
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def heading_velocity(q_wxyz: np.ndarray, lin_base: np.ndarray, ang_base: np.ndarray) -> np.ndarray:
    """(vx, vy [m/s], wz [rad/s]) in the heading frame (the frame /cmd_vel is in: x along the
    body's horizontal forward axis, z up), from a base-frame twist (/odom's) and the base orientation."""
    q = np.asarray(q_wxyz, float)
    v_world = quat_rotate(q, np.asarray(lin_base, float))
    h = heading_world(q)
    return np.array([v_world[:2] @ h, v_world[:2] @ np.array([-h[1], h[0]]), quat_rotate(q, np.asarray(ang_base, float))[2]])


class Kinematics:
    """Pose the robot at (joint positions, base pose) and read geom and body frames in the world."""

    def __init__(self, model: mujoco.MjModel | None = None):
        self.model = model if model is not None else load_model()
        self.data = mujoco.MjData(self.model)
        self.layout = Layout(self.model)
        self.qpos = self.model.qpos0.copy()

    def qpos_from(self, joint_pos: np.ndarray, base_pos: np.ndarray, base_quat_wxyz: np.ndarray) -> np.ndarray:
        """Full qpos from joint angles [rad] in spec order, the base position [m] and orientation."""
        joint_pos = np.asarray(joint_pos, float)
        if joint_pos.shape != (spec.NUM_JOINTS,):
            raise ValueError(f"joint_pos must have shape ({spec.NUM_JOINTS},), got {joint_pos.shape}")
        q = self.model.qpos0.copy()
        q[0:3] = base_pos
        quat = np.asarray(base_quat_wxyz, float)
        q[3:7] = quat / max(np.linalg.norm(quat), 1e-12)
        q[self.layout.qpos_idx] = joint_pos
        return q

    def pose(self, qpos: np.ndarray) -> None:
        """Run MuJoCo's kinematics at ``qpos``; geom_xpos/xmat and xpos/xquat are then current."""
        self.qpos = np.asarray(qpos, float).copy()
        self.data.qpos[:] = self.qpos
        mujoco.mj_kinematics(self.model, self.data)

    def geom_poses(self) -> tuple[np.ndarray, np.ndarray]:
        """Every geom's world position (ngeom, 3) [m] and rotation matrix (ngeom, 3, 3)."""
        return self.data.geom_xpos.copy(), self.data.geom_xmat.reshape(-1, 3, 3).copy()

    def body_frames(self) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
        """Each body's (name, parent name, translation (3,) [m], rotation (w, x, y, z)) relative
        to its parent body, as /tf carries them; the root's parent is the world frame ``odom``."""
        m, d = self.model, self.data
        names, parents, trans, quats = [], [], [], []
        for b in range(1, m.nbody):
            p = int(m.body_parentid[b])
            Rp = d.xmat[p].reshape(3, 3)
            t = Rp.T @ (d.xpos[b] - d.xpos[p])
            qp_inv = np.empty(4)
            mujoco.mju_negQuat(qp_inv, d.xquat[p])
            q = np.empty(4)
            mujoco.mju_mulQuat(q, qp_inv, d.xquat[b])
            names.append(m.body(b).name)
            parents.append("odom" if p == 0 else m.body(p).name)
            trans.append(t)
            quats.append(q)
        return names, parents, np.array(trans), np.array(quats)

    def body_paths(self, bodies: tuple[str, ...], joint_paths: np.ndarray, base_pos, base_quat_wxyz) -> dict[str, np.ndarray]:
        """Where each of ``bodies`` goes, {body: (T, 3) [m, world]}, if the joints follow
        ``joint_paths`` (T, 56) and the base stays where it is: a plan's intent for the feet and
        hands. Leaves the model posed at the last row."""
        ids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, b) for b in bodies]
        missing = [b for b, i in zip(bodies, ids) if i < 0]
        if missing:
            raise ValueError(f"no bodies {missing} in the model")
        out = np.empty((len(bodies), len(joint_paths), 3))
        for k, q in enumerate(joint_paths):
            self.pose(self.qpos_from(q, base_pos, base_quat_wxyz))
            out[:, k] = self.data.xpos[ids]
        return dict(zip(bodies, out))
