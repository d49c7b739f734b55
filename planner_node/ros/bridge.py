"""The MuJoCo sim bridge node: the humanoid in place of the robot, over real ROS 2 topics.

Publishes /clock, /joint_states (56 joints: position, velocity, effort = actuator force) and
/odom (floating base pose in the world frame ``odom``; twist in the base frame ``base``, as
nav_msgs/Odometry specifies); applies /humanoid/joint_commands (56 position targets [rad],
spec order). Modes: ``realtime`` steps one control period per timer tick with the latest
command, from the first command on (before it, the simulation holds and re-publishes its
state, so a planner that is still loading does not find the robot already on the floor);
``lockstep`` steps once per received command (or after ``lockstep_timeout_s`` with
the last one), so closed-loop tests are deterministic on a slow machine. Services:
``~/reset`` and ``~/push`` (std_srvs/Trigger).

Scripted runs (the demo) are indexed by simulation step, not by wall-clock moments: ``max_steps``
(dynamic) halts the simulation at that step, holding the command that answers the last state,
which is applied as soon as the limit is raised; so a driver can switch tasks or push at an exact
step. ``hold`` (dynamic) keeps the simulation at its current step, re-publishing its state, until
cleared: a driver starts one when it is listening. ``reset_on_fall`` resets the robot on the very
step it falls (counted in ``falls``).
"""
from __future__ import annotations

import sys
import threading
import time


import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from planner_node import spec
from planner_node.ros.convert import command_array
from planner_node.sim.env import EnvConfig, HumanoidEnv
from planner_node.robot.humanoid import heading_world
from planner_node.control.state_estimator import StateError


def _stamp(t: float) -> Time:
    ns = int(round(t * 1e9))  # round once, then split (rounding the fraction can carry into sec)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class SimBridge(Node):
    def __init__(self, **kw):
        super().__init__("sim_bridge", **kw)
        self.declare_parameter("mode", "lockstep")
        self.declare_parameter("lockstep_timeout_s", 0.5)
        self.declare_parameter("seed", 0)
        self.declare_parameter("push_every", 0)
        self.declare_parameter("push_speed", 0.25)
        self.declare_parameter("max_steps", 0)
        self.declare_parameter("reset_on_fall", False)
        self.declare_parameter("hold", False)
        mode = self.get_parameter("mode").value
        if mode not in ("lockstep", "realtime"):
            raise ValueError(f"mode: unknown {mode!r}; valid: lockstep, realtime")
        self.mode = mode
        self.env = HumanoidEnv(EnvConfig(push_every=int(self.get_parameter("push_every").value),
                                         push_speed=float(self.get_parameter("push_speed").value)))
        self.env.reset(int(self.get_parameter("seed").value))
        self._mark_start()
        self.action = self.env.zero_action.copy()
        self.steps, self.fell, self.rejected, self.resets, self.lockstep_timeouts = 0, False, 0, 0, 0
        self.falls = 0
        self.fell_counted = False  # without reset_on_fall, one fall counts once until a reset
        self._got_command = threading.Event()
        self._commanded = False     # realtime: the simulation holds until the first command
        self._republished = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_clock = self.create_publisher(Clock, "/clock", 10)
        self.pub_js = self.create_publisher(JointState, "/joint_states", 10)
        self.pub_odom = self.create_publisher(Odometry, "/odom", 10)
        cb = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Float64MultiArray, "/humanoid/joint_commands", self._on_command, qos, callback_group=cb)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=cb)
        self.create_service(Trigger, "~/push", self._on_push, callback_group=cb)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=cb)
        self._publish_state()
        if mode == "realtime":
            self.create_timer(spec.CONTROL_PERIOD_S, self._realtime_tick, callback_group=MutuallyExclusiveCallbackGroup())
        else:
            self._lockstep_thread = threading.Thread(target=self._lockstep_loop, daemon=True)
            self._lockstep_thread.start()
        self.get_logger().info(f"ready: {mode}, seed {self.get_parameter('seed').value}")

    def close(self) -> None:
        """Stop the lockstep thread before the node goes away (see planner_node.ros.spin)."""
        self._stop.set()
        self._got_command.set()
        t = getattr(self, "_lockstep_thread", None)
        if t is not None and t.is_alive():
            t.join(2.0)

    def _publish_diagnostics(self) -> None:
        st = DiagnosticStatus(name="sim_bridge", hardware_id="mujoco", message=self.mode)
        st.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ("steps", self.steps), ("lockstep_timeouts", self.lockstep_timeouts), ("rejected_commands", self.rejected),
            ("resets", self.resets), ("fell", self.fell), ("falls", self.falls),
            ("pushes", self.env.pushes), ("sim_time", f"{self.env.data.time:.3f}"),
            *self._travel().items())]
        msg = DiagnosticArray(status=[st])
        msg.header.stamp = _stamp(float(self.env.data.time))  # sim time: events land on their step
        self.pub_diag.publish(msg)

    def _mark_start(self) -> None:
        """Where the robot starts (for the travel it reports): position and heading, world frame."""
        self._start_xy = self.env.data.qpos[0:2].copy()
        self._start_heading = heading_world(self.env.data.qpos[3:7].copy())

    def _travel(self) -> dict[str, str]:
        """Root displacement [m] since the last reset, along the start heading and to its left
        (ground truth from the simulator; tests read it here, not from messages they may miss)."""
        d = self.env.data.qpos[0:2] - self._start_xy
        h = self._start_heading
        return {"travel_forward_m": f"{d @ h:.4f}", "travel_left_m": f"{d @ np.array([-h[1], h[0]]):.4f}",
                "base_height_m": f"{self.env.data.qpos[2]:.4f}"}

    def _on_command(self, msg: Float64MultiArray) -> None:
        try:
            positions = command_array(msg)
        except StateError as e:
            self.rejected += 1
            self.get_logger().warn(f"rejected command: {e}", throttle_duration_sec=1.0)
            return
        with self._lock:
            self.action = self.env.layout.hold_action(positions)
        if not self._commanded and self.mode == "realtime":
            self.get_logger().info("first command received: stepping")
        self._commanded = True
        self._got_command.set()

    def _on_reset(self, req, resp):
        with self._lock:
            self._reset_locked()
            self._publish_diagnostics()
        resp.success, resp.message = True, "reset"
        return resp

    def _reset_locked(self) -> None:
        t = self.env.data.time
        self.env.reset(int(self.get_parameter("seed").value) + 1000 * (self.resets + 1))
        self.env.data.time = t  # sim time keeps running: stamps never go backwards on a reset
        self._mark_start()
        self.resets += 1
        self.action = self.env.zero_action.copy()
        self.fell = False

    def _on_push(self, req, resp):
        with self._lock:
            self.env.push()
            self._publish_diagnostics()
        resp.success, resp.message = True, f"pushed at {self.env.config.push_speed} m/s"
        return resp

    def _lockstep_loop(self) -> None:
        """Step once per command; without one for ``lockstep_timeout_s``, step with the last
        command. Until the first command arrives, re-publish the initial state instead."""
        timeout = float(self.get_parameter("lockstep_timeout_s").value)
        started, republished = False, 0.0
        while rclpy.ok() and not self._stop.is_set():
            held = bool(self.get_parameter("hold").value)
            if held or (started and self._halted()):  # hold the sim, and the command that answers its state
                if held and time.monotonic() - republished > 0.2:  # late subscribers get the state too
                    self._publish_state()
                    republished = time.monotonic()
                self._stop.wait(0.005)
                continue
            got = self._got_command.wait(timeout if started else 0.2)
            if self._stop.is_set():
                return
            self._got_command.clear()
            if started and not got:
                self.lockstep_timeouts += 1  # a gap in the command stream: step with the last one
            if got and not started:  # logged: a run that never starts shows where it waited
                self.get_logger().info("first command received: stepping")
            started = started or got
            if started:
                self._step()
            else:
                self._publish_state()

    def _halted(self) -> bool:
        if self.get_parameter("hold").value:
            return True
        max_steps = int(self.get_parameter("max_steps").value)
        return bool(max_steps) and self.steps >= max_steps

    def _realtime_tick(self) -> None:
        """Realtime: one step per control period once the planner commands. Before its first
        command the simulation holds, re-publishing its state (as lockstep does), so the robot
        is not stepped under the initial action and dropped before control begins."""
        if not self._commanded:
            if time.monotonic() - self._republished > 0.2:
                self._publish_state()
                self._republished = time.monotonic()
            return
        self._step()

    def _step(self) -> None:
        if self._halted():
            return
        with self._lock:
            events = (self.env.pushes, self.falls, self.resets)
            _, fell = self.env.step(self.action)
            self.fell = self.fell or fell
            self.steps += 1
            if fell and self.get_parameter("reset_on_fall").value:
                self.falls += 1
                self._reset_locked()  # on this very step: a scripted run stays step-indexed
            elif fell and not self.fell_counted:
                self.falls += 1
            self.fell_counted = self.fell
            evented = events != (self.env.pushes, self.falls, self.resets)
        self._publish_state()
        if evented:  # a push, fall or reset on this step: say so now, stamped by its sim_time (the viewer's events)
            self._publish_diagnostics()

    def _publish_state(self) -> None:
        d, lay = self.env.data, self.env.layout
        t = float(d.time)
        self.pub_clock.publish(Clock(clock=_stamp(t)))
        js = JointState()
        js.header.stamp = _stamp(t)
        js.name = list(spec.JOINT_NAMES)
        js.position = d.qpos[lay.qpos_idx].tolist()
        js.velocity = d.qvel[lay.qvel_idx].tolist()
        js.effort = d.actuator_force[lay.ctrl_idx].tolist()
        od = Odometry()
        od.header.stamp = _stamp(t)
        od.header.frame_id, od.child_frame_id = "odom", "base"
        p, q = od.pose.pose.position, od.pose.pose.orientation
        p.x, p.y, p.z = d.qpos[0:3].tolist()
        q.w, q.x, q.y, q.z = d.qpos[3:7].tolist()
        R = d.xmat[1].reshape(3, 3)  # body 1 is the root (floating base)
        lin = R.T @ d.qvel[0:3]
        od.twist.twist.linear.x, od.twist.twist.linear.y, od.twist.twist.linear.z = lin.tolist()
        ang = d.qvel[3:6]
        od.twist.twist.angular.x, od.twist.twist.angular.y, od.twist.twist.angular.z = ang.tolist()
        self.pub_odom.publish(od)
        self.pub_js.publish(js)


def main(argv=None) -> int:
    from planner_node.ros.spin import init, spin
    init(argv if argv is not None else sys.argv)
    return spin(SimBridge())  # a stop requested while building the model is honoured here, at once


if __name__ == "__main__":
    sys.exit(main())
