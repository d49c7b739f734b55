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


def _tilt(z_body: np.ndarray) -> np.ndarray:
    """The rotation (3, 3), body to world, with no yaw of its own, that takes the observed world
    z axis (expressed in the body frame) to the world's z: the shortest arc."""
    a = z_body / max(np.linalg.norm(z_body), 1e-9)
    b = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:  # upside down: any half turn about a horizontal axis
        return np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def _rz(psi: float) -> np.ndarray:
    c, s = np.cos(psi), np.sin(psi)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _heading_angle(R: np.ndarray) -> float:
    h = R @ spec.BODY_FORWARD
    return float(np.arctan2(h[1], h[0]))


def dead_reckon(height: np.ndarray, zaxis: np.ndarray, veloc: np.ndarray, gyro: np.ndarray,
                start_xy=(0.0, 0.0), start_heading_rad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Base positions (T, 3) [m] and quaternions (T, 4) (w, x, y, z) from what observations hold
    of the base: height (T,) [m], world z in the root frame (T, 3), velocimeter (T, 3) [m/s] and
    gyro (T, 3) [rad/s] in the root frame. Height and tilt are observed; the heading and x, y are
    integrated (trapezoid rule), from ``start_xy`` [m] facing ``start_heading_rad`` (the body's
    forward axis, world frame). Each step the integrated attitude keeps only its heading: the tilt
    is observed. A dataset episode (no world pose recorded) and a plan's predicted states use it."""
    dt = spec.CONTROL_PERIOD_S
    T = len(height)
    pos, quat = np.zeros((T, 3)), np.zeros((T, 4))
    tilt = _tilt(zaxis[0])
    R = _rz(start_heading_rad - _heading_angle(tilt)) @ tilt
    xy = np.asarray(start_xy, float).copy()
    for k in range(T):
        if k:
            w = 0.5 * (gyro[k - 1] + gyro[k]) * dt  # body frame [rad]
            step = np.empty(4)
            mujoco.mju_axisAngle2Quat(step, w / max(np.linalg.norm(w), 1e-12), float(np.linalg.norm(w)))
            dR = np.empty(9)
            mujoco.mju_quat2Mat(dR, step)
            R_pred = R @ dR.reshape(3, 3)
            tilt = _tilt(zaxis[k])
            R_next = _rz(_heading_angle(R_pred) - _heading_angle(tilt)) @ tilt
            v = 0.5 * (R @ veloc[k - 1] + R_next @ veloc[k])
            xy = xy + dt * v[:2]
            R = R_next
        pos[k] = (xy[0], xy[1], float(height[k]))
        mujoco.mju_mat2Quat(quat[k], R.reshape(-1))
    return pos, quat


def heading_angle(q_wxyz: np.ndarray) -> float:
    """The body's forward axis, projected on the floor, as an angle from world +x [rad]."""
    R = np.empty(9)
    mujoco.mju_quat2Mat(R, np.asarray(q_wxyz, float))
    return _heading_angle(R.reshape(3, 3))


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
