"""Test helper: the simulator's current state as the node would measure it (ROS-free)."""
from planner_node.control.state_estimator import MeasuredState


def measured_state(env, stamp: float) -> MeasuredState:
    """Joints in spec order, base pose in the world, twist in the base frame, stamped ``stamp`` [s]."""
    d, lay = env.data, env.layout
    R = d.xmat[1].reshape(3, 3)
    return MeasuredState(stamp, d.qpos[lay.qpos_idx].copy(), d.qvel[lay.qvel_idx].copy(), d.qpos[0:3].copy(),
                         d.qpos[3:7].copy(), R.T @ d.qvel[0:3], d.qvel[3:6].copy())
