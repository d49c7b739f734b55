"""``planner view``: a ROS node of its own that streams the running stack to Rerun.

It only listens (/joint_states, /odom, /humanoid/joint_commands, the planner's ~/plan, /cmd_vel,
/diagnostics): the planner's control path never logs to Rerun, and the viewer is another
process again. Each simulation step poses every MJCF geom with MuJoCo's kinematics from the
step's /joint_states and /odom (paired by stamp; a re-published state is logged once).
See planner_node.view.rerun_log for what is logged where.
"""
from __future__ import annotations

import os
import sys

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from planner_node import spec
from planner_node.planning import INTENT_BLOCKS, INTENT_DIM
from planner_node.robot.kinematics import Kinematics, dead_reckon, heading_angle, heading_velocity

STATE_DEPTH = 200  # a lockstep run publishes fast; the view keeps every step (a pose per step)


def _ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class ViewNode(Node):
    def __init__(self, rrd: str | None = None, view: str | None = None, web_port: int = 9090, grpc_port: int = 9876, **kw):
        super().__init__("planner_view", **kw)
        from planner_node.view.rerun_log import PLAN_BODIES, RunLog, open_recording, step_of
        from planner_node.view.status_log import StatusLog
        self._step_of, self._plan_bodies = step_of, PLAN_BODIES
        self.declare_parameter("plan_topic", "/planner/plan")
        self.declare_parameter("plan_intent_topic", "/planner/plan_intent")
        self.declare_parameter("plan_candidates_topic", "/planner/plan_candidates")
        self.kin = Kinematics()
        self.rec, self.viewer = open_recording("planner_node", rrd=rrd, view=view, web_port=web_port, grpc_port=grpc_port)
        self.url = self.viewer.url if self.viewer is not None else None
        self.log = RunLog(self.rec, self.kin.model)
        self._pending: dict[int, dict] = {}   # stamp [ns] -> {"js": msg, "odom": msg}
        self._last_step = -1
        self._base = (np.zeros(3), np.array([1.0, 0, 0, 0]))
        self._cmd = np.zeros(3)
        self.status = StatusLog(self.log)
        self.plans_logged = 0
        # Its own status (poses and plans drawn) at 1 Hz and at the first pose: a driver waits for
        # it before stepping a scripted run, so the recording starts at step 0.
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_status)
        reliable = QoSProfile(depth=STATE_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(JointState, "/joint_states", lambda m: self._on_state("js", m), reliable)
        self.create_subscription(Odometry, "/odom", lambda m: self._on_state("odom", m), reliable)
        self.create_subscription(Float64MultiArray, "/humanoid/joint_commands", self._on_command, reliable)
        self.create_subscription(JointTrajectory, str(self.get_parameter("plan_topic").value), self._on_plan, 10)
        self.create_subscription(Float64MultiArray, str(self.get_parameter("plan_intent_topic").value), self._on_intent, 10)
        self.create_subscription(Float64MultiArray, str(self.get_parameter("plan_candidates_topic").value),
                                 self._on_candidates, 10)
        self.create_subscription(Twist, "/cmd_vel", self._on_cmd_vel, 10)
        self.intents_logged = 0
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        where = ", ".join(x for x in (rrd and f"recording to {rrd}", self.url and f"web viewer at {self.url}",
                                       view == "native" and "native viewer") if x)
        self.get_logger().info(f"viewing: {where}")

    def close(self) -> None:
        self.log.close()
        if self.viewer is not None:
            self.viewer.close()

    def _publish_status(self) -> None:
        st = DiagnosticStatus(name="planner_view", hardware_id="rerun", message=self.url or "recording")
        st.values = [KeyValue(key="poses", value=str(self.log.poses_logged)), KeyValue(key="plans", value=str(self.plans_logged)),
                     KeyValue(key="intents", value=str(self.intents_logged)),
                     KeyValue(key="last_step", value=str(self._last_step))]
        self.pub_diag.publish(DiagnosticArray(status=[st]))

    # -- the robot ------------------------------------------------------------------------
    def _on_state(self, kind: str, msg) -> None:
        t = _ns(msg.header.stamp)
        slot = self._pending.setdefault(t, {})
        slot[kind] = msg
        if len(slot) < 2:
            if len(self._pending) > 50:  # a lost partner: forget the oldest halves
                for old in sorted(self._pending)[:-50]:
                    del self._pending[old]
            return
        del self._pending[t]
        for old in [k for k in self._pending if k < t]:
            del self._pending[old]
        step = self._step_of(t * 1e-9)
        if step <= self._last_step:
            return  # the same state again (a holding bridge re-publishes it)
        self._last_step = step
        js, od = slot["js"], slot["odom"]
        if len(js.position) != spec.NUM_JOINTS or list(js.name) != list(spec.JOINT_NAMES):
            self.get_logger().warn("joint_states not in spec order: not drawn", throttle_duration_sec=5.0)
            return
        p, q = od.pose.pose.position, od.pose.pose.orientation
        base_pos, base_quat = np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z])
        joints = np.asarray(js.position, float)
        if not (np.all(np.isfinite(joints)) and np.all(np.isfinite(base_pos)) and np.all(np.isfinite(base_quat))):
            return
        self._base = (base_pos, base_quat)
        self.kin.pose(self.kin.qpos_from(joints, base_pos, base_quat))
        self.log.at(step, t * 1e-9)
        self.log.robot_pose(*self.kin.geom_poses(), base_pos)
        if self.log.poses_logged == 1:
            self._publish_status()
        tw = od.twist.twist
        achieved = heading_velocity(base_quat, np.array([tw.linear.x, tw.linear.y, tw.linear.z]),
                                    np.array([tw.angular.x, tw.angular.y, tw.angular.z]))
        self.log.velocity(self._cmd, achieved)
        self.log.joints(None, joints)
        self.log.scalar("joints/base_height_m", base_pos[2])

    def _on_command(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, float)
        if data.shape == (spec.NUM_JOINTS,) and self._last_step >= 0:
            self.log.joints(data, None)

    def _on_cmd_vel(self, msg: Twist) -> None:
        self._cmd = np.array([msg.linear.x, msg.linear.y, msg.angular.z])

    # -- intent ---------------------------------------------------------------------------
    def _on_plan(self, msg: JointTrajectory) -> None:
        if self._last_step < 0 or not msg.points or list(msg.joint_names) != list(spec.JOINT_NAMES):
            return
        path = np.array([pt.positions for pt in msg.points], float)
        if path.ndim != 2 or path.shape[1] != spec.NUM_JOINTS or not np.all(np.isfinite(path)):
            return
        paths = self.kin.body_paths(self._plan_bodies, path, *self._base)
        self.log.plan_paths(paths)
        self.plans_logged += 1

    def _intent_array(self, msg: Float64MultiArray, ndim: int) -> np.ndarray | None:
        """~/plan_intent (T, 10) or ~/plan_candidates (K, T, 10) as an array; None if malformed."""
        dims = [d.size for d in msg.layout.dim]
        data = np.asarray(msg.data, float)
        if self._last_step < 0 or len(dims) != ndim or dims[-1] != INTENT_DIM or data.size != int(np.prod(dims)) \
                or dims[-2] < 2 or not np.all(np.isfinite(data)):
            return None
        return data.reshape(dims)

    def _base_path(self, x: np.ndarray) -> np.ndarray:
        """The base path (T, 3) [m, world] that predicted states x (T, 10) imply: their velocimeter
        and gyro integrated from where the base is now, at the heights they predict."""
        base_pos, base_quat = self._base
        cols = np.cumsum([0, *(spec.OBS_SLICES[b].stop - spec.OBS_SLICES[b].start for b in INTENT_BLOCKS)])
        blk = {b: x[:, cols[i]:cols[i + 1]] for i, b in enumerate(INTENT_BLOCKS)}
        path, _ = dead_reckon(blk["body_height"][:, 0], blk["world_zaxis"], blk["sensors_velocimeter"],
                              blk["sensors_gyro"], base_pos[:2], heading_angle(base_quat))
        return path

    def _on_intent(self, msg: Float64MultiArray) -> None:
        x = self._intent_array(msg, 2)
        if x is not None:
            self.log.plan_base(self._base_path(x))
            self.intents_logged += 1

    def _on_candidates(self, msg: Float64MultiArray) -> None:
        x = self._intent_array(msg, 3)
        if x is not None:
            self.log.plan_candidates([self._base_path(c) for c in x])

    # -- safety, timing, events -------------------------------------------------------------
    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if st.name == "sim_bridge":
                t = _ns(msg.header.stamp) * 1e-9
                if t > 0:  # the bridge stamps its status with sim time: events land on their step
                    self.log.at(self._step_of(t), t)
                self.status.bridge(values)
            elif st.name == "planner_node":
                if self._last_step >= 0:
                    self.log.at(self._last_step)
                cmd = self.status.planner(values)
                if cmd is not None:
                    self._cmd = cmd


def main(argv=None) -> int:
    import argparse
    from planner_node.ros.spin import init, spin
    argv = list(sys.argv if argv is None else argv)
    p = argparse.ArgumentParser(prog="planner view", description="stream the running stack to a Rerun viewer or file")
    p.add_argument("--rrd", help="record to this .rrd file (no viewer needed)")
    p.add_argument("--view", choices=("native", "web"), help="open a viewer: native (needs a display) or web (localhost)")
    p.add_argument("--web-port", type=int, default=9090)
    p.add_argument("--grpc-port", type=int, default=9876)
    p.add_argument("--nice", type=int, default=10,
                   help="run at this niceness (default 10): the view is best effort, and on the robot's own cores "
                        "the scheduler then favours the planner, its worker and the bridge (0: as started)")
    from rclpy.utilities import remove_ros_args
    a = p.parse_args(remove_ros_args(argv)[1:])
    if not a.rrd and not a.view:
        p.error("give --rrd FILE, --view native|web, or both")
    try:
        import planner_node.view.rerun_log  # noqa: F401 - the clear error when the extra is missing
    except ImportError as e:
        print(f"planner view: {e}", file=sys.stderr)
        return 2
    if a.nice > 0:
        os.nice(a.nice)  # before the viewer process starts: it inherits the niceness
    init(argv)
    return spin(ViewNode(rrd=a.rrd, view=a.view, web_port=a.web_port, grpc_port=a.grpc_port))


if __name__ == "__main__":
    sys.exit(main())
