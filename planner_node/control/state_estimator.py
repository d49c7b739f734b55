"""Measured robot state -> the 224-D observation, with the one observation builder.

A robot (or the sim bridge) publishes joint positions/velocities and the floating base's
pose/twist. The observation also needs quantities a robot does not publish directly
(egocentric end-effector positions, IMU-frame readings, contacts, actuator activations):
we load the robot's MuJoCo model, set the measured configuration, run ``mj_forward`` and read
the model's sensors. Actuator activations are not measured: they follow the actuators'
first-order filter (time constant 30 ms) driven by the commands we sent, integrated here.
Needs mujoco and numpy, never torch or ROS.
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from planner_node import spec
from planner_node.robot.humanoid import Layout, load_model
from planner_node.robot.observation import build_observation

ACT_TIME_CONSTANT_S = 0.03  # dm_control's V2020 position actuators: dyntype filter, dynprm 0.03


class StateError(ValueError):
    """A state message is unusable (the message names the field)."""


@dataclass
class MeasuredState:
    """Joint state in spec order plus floating base. Frames: world (base position, orientation),
    base body frame (twist), as nav_msgs/Odometry with child_frame_id = base."""

    stamp_s: float
    joint_pos: np.ndarray      # (56,) [rad]
    joint_vel: np.ndarray      # (56,) [rad/s]
    base_pos: np.ndarray       # (3,) [m] world
    base_quat: np.ndarray      # (4,) w, x, y, z; world from base
    base_lin_vel: np.ndarray   # (3,) [m/s] base frame
    base_ang_vel: np.ndarray   # (3,) [rad/s] base frame

    def validate(self) -> None:
        for name, n in (("joint_pos", 56), ("joint_vel", 56), ("base_pos", 3), ("base_quat", 4),
                        ("base_lin_vel", 3), ("base_ang_vel", 3)):
            a = getattr(self, name)
            if a.shape != (n,):
                raise StateError(f"{name}: expected {n} values, got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise StateError(f"{name}: contains NaN or Inf")
        if not 0.5 < np.linalg.norm(self.base_quat) < 1.5:
            raise StateError(f"base_quat: not a rotation (norm {np.linalg.norm(self.base_quat):.3f})")


class StateEstimator:
    def __init__(self):
        self.model = load_model()
        self.data = mujoco.MjData(self.model)
        self.layout = Layout(self.model)
        self.act = None  # (56,) estimated activation, spec order

    def reset(self, act: np.ndarray | None = None) -> None:
        self.act = None if act is None else np.asarray(act, float).copy()

    def commanded(self, action: np.ndarray, dt: float = spec.CONTROL_PERIOD_S) -> None:
        """Advance the activation estimate by one control period under ``action`` (normalized)."""
        if self.act is None:
            self.act = np.asarray(action, float).copy()
            return
        # MuJoCo integrates the filter with Euler at each physics step (act += h (u - act) / tau).
        n = max(1, round(dt / spec.PHYSICS_TIMESTEP_S))
        decay = (1.0 - spec.PHYSICS_TIMESTEP_S / ACT_TIME_CONSTANT_S) ** n
        self.act = action + (self.act - action) * decay

    def observe(self, s: MeasuredState) -> np.ndarray:
        s.validate()
        m, d, lay = self.model, self.data, self.layout
        d.qpos[0:3] = s.base_pos
        d.qpos[3:7] = s.base_quat / np.linalg.norm(s.base_quat)
        d.qpos[lay.qpos_idx] = s.joint_pos
        # Free-joint velocity: linear in world frame, angular in body frame (MuJoCo convention).
        R = np.empty(9)
        mujoco.mju_quat2Mat(R, d.qpos[3:7])
        d.qvel[0:3] = R.reshape(3, 3) @ s.base_lin_vel
        d.qvel[3:6] = s.base_ang_vel
        d.qvel[lay.qvel_idx] = s.joint_vel
        if self.act is None:  # first message: assume the robot holds its current pose
            self.act = lay.hold_action(s.joint_pos)
        d.act[lay.act_idx] = self.act
        d.ctrl[lay.ctrl_idx] = self.act
        mujoco.mj_forward(m, d)
        return build_observation(lay, d.qpos, d.qvel, d.act, d.sensordata)

    def sim_state(self) -> np.ndarray:
        """Full physics state of the last ``observe`` (for ground-truth planners)."""
        st = np.empty(mujoco.mj_stateSize(self.model, mujoco.mjtState.mjSTATE_FULLPHYSICS))
        mujoco.mj_getState(self.model, self.data, st, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        return st

    def action_to_positions(self, action: np.ndarray) -> np.ndarray:
        return self.layout.action_to_joint_pos(np.asarray(action, float))

    def positions_to_action(self, positions: np.ndarray) -> np.ndarray:
        return self.layout.hold_action(np.asarray(positions, float))
