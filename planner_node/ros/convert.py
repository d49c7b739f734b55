"""ROS messages <-> arrays in spec order; structural errors named (``Rejected``, with a reason code).

Real robots publish more joints than a planner commands: extra names are ignored; a missing
spec joint or a length mismatch is rejected here. Finiteness, physical bounds and stamps are
judged by ``state_validation`` (ROS-free), which the node calls next.
"""
from __future__ import annotations

import numpy as np

from planner_node import spec
from planner_node.control.state_estimator import StateError
from planner_node.control.state_validation import Rejected

_INDEX = {n: i for i, n in enumerate(spec.JOINT_NAMES)}


def stamp_s(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def joint_state_arrays(msg) -> tuple[np.ndarray, np.ndarray]:
    """sensor_msgs/JointState -> (positions, velocities) in spec order."""
    n = len(msg.name)
    if len(msg.position) != n:
        raise Rejected("joint_states", "length_mismatch", f"{n} names but {len(msg.position)} positions")
    if len(msg.velocity) != n:
        raise Rejected("joint_states", "length_mismatch", f"{n} names but {len(msg.velocity)} velocities")
    pos = np.zeros(spec.NUM_JOINTS)
    vel = np.zeros(spec.NUM_JOINTS)
    seen = np.zeros(spec.NUM_JOINTS, bool)
    for name, p, v in zip(msg.name, msg.position, msg.velocity):
        i = _INDEX.get(name)
        if i is not None:
            pos[i], vel[i], seen[i] = p, v, True
    missing = [spec.JOINT_NAMES[i] for i in np.flatnonzero(~seen)]
    if missing:
        raise Rejected("joint_states", "missing_joint",
                       f"missing joints {missing[:5]}{'...' if len(missing) > 5 else ''}")
    return pos, vel


def odometry_arrays(msg) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """nav_msgs/Odometry -> base position, quaternion (w, x, y, z), twist in the base frame."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
    return (np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z]),
            np.array([lin.x, lin.y, lin.z]), np.array([ang.x, ang.y, ang.z]))


def command_array(msg) -> np.ndarray:
    """std_msgs/Float64MultiArray of 56 joint position targets [rad] in spec order."""
    a = np.asarray(msg.data, dtype=float)
    if a.shape != (spec.NUM_JOINTS,):
        raise StateError(f"/humanoid/joint_commands: expected {spec.NUM_JOINTS} values, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise StateError("/humanoid/joint_commands: NaN or Inf")
    return a
