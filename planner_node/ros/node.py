"""The planner node: a thin rclpy lifecycle shell over ``planner_node.control.controller``.

configure: read parameters (each maps to ControllerConfig or the bundle), verify and load the
bundle, warm it up; fail naming the parameter. activate: start the control timer.
deactivate: stop commanding. Parameters marked static are refused at run time; dynamic ones
(task, deadline_ms, bundle_path) apply at the next tick. Setting ``bundle_path`` verifies the
bundle synchronously (a bad one is rejected with the reason), then loads and warms it up on a
worker thread and swaps at a tick boundary; the old planner keeps commanding meanwhile.

Threads: one executor thread (see ``planner_node.ros.spin`` for why); the tick reads the latest state
under a lock, because bundle loading for a hot swap runs on a worker thread.
"""
from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from planner_node import spec
from planner_node.control.control_loop import ControlLoop
from planner_node.control.controller import Controller, ControllerConfig
from planner_node.control.action_filter import make_filter
from planner_node.ros.default_bundle import default_bundle_path, share_dir
from planner_node.control.parameters import LOCKED_WHEN_DEPLOYED, PARAMS
from planner_node.ros.convert import joint_state_arrays, odometry_arrays, stamp_s
from planner_node.control.state_estimator import MeasuredState
from planner_node.control.state_validation import (REJECT_REASONS, Rejected, StampGate, StateLimits, check_command,
                                           check_joints, check_odometry, clock_mismatch_hint)

#: name -> (default, static?, description), from the one parameter table.
PARAMETERS = {p.name: (p.default, p.static, p.description) for p in PARAMS}


class PlannerNode(LifecycleNode):
    def __init__(self, **kw):
        super().__init__("planner", **kw)
        for name, (default, static, desc) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=desc, read_only=False))
        self._static = {n for n, (_, s, _) in PARAMETERS.items() if s}
        self._configured = False
        self.controller: Controller | None = None
        self._lock = threading.Lock()
        self._joint = None     # (stamp, pos, vel)
        self._odom = None      # (stamp, pos, quat, lin, ang)
        self._new_state = False
        self._received = 0.0
        self._answered = None  # stamp of the last state answered in lockstep
        self._gate = StampGate()
        self._clock_hint_given = False   # the clock-mismatch hint is logged once per configure
        self._limits = StateLimits()
        self._cmd_twist = (0.0, 0.0, 0.0)
        self._pending = None   # (planner, bundle_path, action_filter, bundle_version) ready to swap in
        self.active_bundle = ""
        self._bundle_gate = None     # runtime/bundle_gate.BundleGate, from trusted_keys and bundle_root
        self._bundle_version = None  # the running bundle's bundle_version (rollback check)
        # Every counter exists from the start, so /diagnostics lists the zeros too.
        self._rejects: dict[str, int] = {f"rejected_{t}": 0 for t in REJECT_REASONS}
        self._rejects.update({f"rejected_{t}_{r}": 0 for t, rs in REJECT_REASONS.items() for r in rs})
        self._rejects["tick_errors"] = 0
        self._last_publish: float | None = None
        self._gap_max_s = 0.0
        self._gap_window_s = 0.0  # since the last /diagnostics message
        self._resume_t0: float | None = None
        self._resume_ms = -1.0     # last time from a restarted clock's first state to a plan (-1: never)
        self._last_log: dict[tuple, float] = {}
        self._loop: ControlLoop | None = None
        self._lockstep = False
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- parameters ------------------------------------------------------------------------------
    def p(self, name):
        return self.get_parameter(name).value

    def _config(self) -> ControllerConfig:
        return ControllerConfig(control_period=float(self.p("control_period")), deadline_ms=float(self.p("deadline_ms")),
                                task=self.p("task"), fallback=self.p("fallback"))

    def _make_planner(self, bundle=None):
        """``bundle``: a Bundle the gate verified (planner=bundle)."""
        kind = self.p("planner")
        if kind == "bundle":
            from planner_node.control.parameters import planner_settings
            from planner_node.runtime.bundle_planner import runtime_planner
            # planner_settings apply to every bundle loaded, hot swaps included: a bundle whose
            # kind lacks one is refused by name (at configure: failure; on a swap: the old stays)
            return runtime_planner(bundle, backend=self.p("backend"), seed=int(self.p("seed")),
                                   **planner_settings(self.p("planner_settings")))
        if kind == "mppi":
            from planner_node.sim.mppi import MPPIPlanner
            return MPPIPlanner(samples=int(self.p("mppi_samples")), seed=int(self.p("seed")),
                               threads=int(self.p("mppi_threads")),
                               walk_speed=float(self.p("mppi_walk_speed")))
        if kind == "zero":
            from planner_node.sim.baselines import ZeroPlanner
            return ZeroPlanner()
        raise ValueError(f"planner: unknown planner {kind!r}; valid: bundle, mppi, zero")

    @staticmethod
    def _bundle_path(value: str) -> str:
        """'' means the shipped default bundle (installed under share/planner_node/bundles)."""
        if value:
            return value
        found = default_bundle_path()
        if found is None:
            raise ValueError("bundle_path: empty, and the shipped default bundle is not installed "
                             "(share/planner_node/bundles/default); set bundle_path")
        return str(found)

    def _warm_up(self, planner, pause_s: float = 0.005) -> None:
        """A few plans on a standing observation (built once at configure: a hot swap's worker
        thread then does no Python-heavy work that would hold the GIL against the tick)."""
        from planner_node.planning import PlanRequest
        if getattr(self, "_warm", None) is None:
            from planner_node.sim.env import HumanoidEnv
            env = HumanoidEnv()
            self._warm = (env.reset(0), env.get_state())
        obs, state = self._warm
        for _ in range(3):
            planner.plan(PlanRequest(obs=obs, task=self.p("task"), sim_state=state))
            time.sleep(pause_s)  # yield between plans (a hot swap: a control period, so ticks keep their CPU)
        planner.reset(int(self.p("seed")))

    def _make_gate(self):
        from planner_node.runtime.bundle_gate import BundleGate, split_paths
        return BundleGate(split_paths(self.p("trusted_keys")), str(self.p("bundle_root")), base=share_dir())

    def _on_set_parameters(self, params) -> SetParametersResult:
        for prm in params:
            if not self._configured:
                continue
            if self.p("lock_parameters") and prm.name in LOCKED_WHEN_DEPLOYED:
                why = f"{prm.name} is locked (lock_parameters: true): it cannot change while deployed"
                self._reject("parameters", "locked", why)
                return SetParametersResult(successful=False, reason=why)
            if prm.name in self._static:
                self._reject("parameters", "static", f"{prm.name} is static")
                return SetParametersResult(successful=False, reason=f"{prm.name} is static: set it before configure")
            if prm.name == "task":
                from planner_node.robot.tasks import TASKS
                if prm.value not in TASKS:
                    return SetParametersResult(successful=False, reason=f"task: unknown {prm.value!r}; valid: {', '.join(TASKS)}")
            if prm.name == "safety_filter_threshold":
                f = self.controller.action_filter if self.controller is not None else None
                if not hasattr(f, "set_threshold"):
                    return SetParametersResult(successful=False, reason=f"safety_filter_threshold: filter "
                                               f"{self.p('safety_filter')!r} has no threshold")
                try:
                    f.set_threshold(str(prm.value).strip() or None)
                except ValueError as e:
                    return SetParametersResult(successful=False, reason=str(e))
            if prm.name == "deadline_ms":
                try:
                    ControllerConfig(deadline_ms=float(prm.value), task=self.p("task"))
                except (ValueError, TypeError) as e:
                    return SetParametersResult(successful=False, reason=str(e))
            if prm.name == "bundle_path":
                from planner_node.runtime.bundle_gate import BundleRefused
                try:
                    path = self._bundle_path(prm.value)
                    # Verify root, signature, manifest, paths and hashes synchronously (a bad bundle
                    # is refused with the reason); the ONNX graphs' own check runs with the load on
                    # the worker thread, so the executor is not held up parsing protobufs.
                    self._bundle_gate.check(path, self._bundle_version, check_graphs=False)
                except BundleRefused as e:
                    self._reject("bundle_path", e.reason, str(e))
                    return SetParametersResult(successful=False, reason=f"bundle_path: {e.reason}: {e}")
                except (OSError, ValueError) as e:
                    self._reject("bundle_path", "invalid", str(e))
                    return SetParametersResult(successful=False, reason=f"bundle_path: {e}")
                threading.Thread(target=self._load_swap, args=(path,), daemon=True).start()
        return SetParametersResult(successful=True)

    def _make_filter(self, planner):
        """The safety filter over ``planner`` (a filter with graphs takes them from its bundle),
        held to the safety_filter_threshold parameter when it is set."""
        f = make_filter(self.p("safety_filter"), self.p("safety_filter_config"), bundle=getattr(planner, "bundle", None))
        threshold = str(self.p("safety_filter_threshold")).strip()
        if threshold:
            if not hasattr(f, "set_threshold"):
                raise ValueError(f"safety_filter_threshold: filter {self.p('safety_filter')!r} has no threshold")
            f.set_threshold(threshold)
        return f

    def _load_swap(self, path: str) -> None:
        # A background job: on a 2-core robot computer the load competes with the control tick
        # for CPU; a lower priority for this thread (Linux: per-thread nice) keeps the tick first.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        from planner_node.runtime.bundle_gate import BundleRefused
        try:
            # verified again as it is loaded: what runs is what was checked, not what the
            # directory held when the parameter was set
            bundle = self._bundle_gate.check(path, self._bundle_version, check_graphs=True)
            planner = self._make_planner(bundle)
            action_filter = self._make_filter(planner)  # the filter's graphs come with the new bundle
            self._warm_up(planner, pause_s=0.03)
        except BundleRefused as e:
            self._reject("bundle_path", e.reason, f"keeping {self.active_bundle}: {e}")
            return
        except Exception as e:  # noqa: BLE001 - keep the old bundle on any failure
            self._reject("bundle_path", "load_failed", f"load/warm-up failed, keeping {self.active_bundle}: {e}")
            return
        with self._lock:
            self._pending = (planner, path, action_filter, bundle.version)

    def _reject(self, topic: str, reason: str, why: str) -> None:
        """Count it for /diagnostics (per topic and per reason); log it, throttled to 1/s per
        reason, so a NaN flood does not hide a different fault on the same topic."""
        self._rejects[f"rejected_{topic}"] += 1
        self._rejects[f"rejected_{topic}_{reason}"] += 1
        now = time.monotonic()
        if now - self._last_log.get((topic, reason), -1e9) >= 1.0:
            self._last_log[(topic, reason)] = now
            self.get_logger().warn(f"rejected {topic} ({reason}): {why} ({self._rejects[f'rejected_{topic}']} so far)")

    # -- lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            cfg = self._config()
            self._gate = StampGate(float(self.p("stamp_future_tolerance_s")), float(self.p("stamp_max_age_s")))
            self._clock_hint_given = False
            bundle = self._bundle_path(self.p("bundle_path")) if self.p("planner") == "bundle" else ""
            self._bundle_gate = self._make_gate()
            verified = self._bundle_gate.check(bundle, check_graphs=True) if bundle else None
            self._bundle_version = verified.version if verified else None
            planner = self._make_planner(verified)
            action_filter = self._make_filter(planner)
            self._warm_up(planner)
        except Exception as e:  # noqa: BLE001 - report any configure failure by parameter
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self.controller = Controller(planner, cfg, action_filter=action_filter)
        self.active_bundle = bundle or self.p("planner")
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_cmd = self.create_lifecycle_publisher(Float64MultiArray, "/humanoid/joint_commands", qos)
        self.pub_plan = self.create_lifecycle_publisher(JointTrajectory, "~/plan", 1)
        self.pub_diag = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        self._subs = [self.create_subscription(JointState, "/joint_states", self._on_joint_states, 10),
                      self.create_subscription(Odometry, "/odom", self._on_odom, 10),
                      self.create_subscription(Twist, "/cmd_vel", self._on_cmd_vel, 10)]
        self._configured = True
        self.get_logger().info(f"configured: planner {self.active_bundle} ({self.p('backend')}), task {cfg.task}; "
                               f"bundles: {self._bundle_gate.describe()}"
                               + ("; safety parameters locked" if self.p("lock_parameters") else ""))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        # Ticks are paced by a steady clock whatever use_sim_time says: a robot's control loop
        # runs in real time, and a lockstep sim only advances when it receives our command.
        # The tick runs on its own thread so planning never blocks the executor's callbacks.
        self._lockstep = bool(self.p("lockstep"))
        self._last_publish = None  # a pause while inactive is not a gap in the stream
        # Enable the lifecycle publishers BEFORE the control thread starts: a disabled publisher
        # drops silently, and in lockstep a dropped answer to a state that was already waiting
        # marks it answered while the sim never steps (a deadlock seen in CI).
        ret = super().on_activate(state)
        if ret != TransitionCallbackReturn.SUCCESS:
            return ret
        self._loop = ControlLoop(float(self.p("control_period")), self._tick, on_error=self._tick_error).start()
        # On a steady clock: /diagnostics keeps flowing when /clock stops (a dead simulator).
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"activated: commanding every {float(self.p('control_period')) * 1e3:.0f} ms"
                               f"{' (lockstep)' if self._lockstep else ''}")
        return ret

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        if getattr(self, "_diag_timer", None) is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        """Back to unconfigured: drop the planner, publishers and subscriptions (configure again
        to load a bundle afresh, e.g. with other static parameters)."""
        self.close()
        for sub in getattr(self, "_subs", []):
            self.destroy_subscription(sub)
        self._subs = []
        for pub in (getattr(self, n, None) for n in ("pub_cmd", "pub_plan", "pub_diag")):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self.pub_cmd = self.pub_plan = self.pub_diag = None
        with self._lock:
            self.controller, self._pending = None, None
            self._joint = self._odom = None
        self._configured = False
        self.get_logger().info("cleaned up: unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop the control thread (and so all publishing from it) before the node goes away."""
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        if self._loop is not None:
            self._loop.stop()
        return TransitionCallbackReturn.SUCCESS

    def _tick_error(self, e: BaseException) -> None:
        self._rejects["tick_errors"] += 1
        self.get_logger().error(f"tick failed: {e.__class__.__name__}: {e}", throttle_duration_sec=1.0)

    # -- inputs ----------------------------------------------------------------------------------
    def _accept_stamp(self, topic: str, t: float) -> None:
        """Judge the stamp against the node's ROS clock (``/clock`` under use_sim_time)."""
        resets = self._gate.clock_resets
        self._gate.check(topic, t, self.get_clock().now().nanoseconds * 1e-9)
        if self._gate.clock_resets != resets:
            # The time source restarted (e.g. a new simulator): states of the old one are void.
            self.get_logger().warn("clock went backwards: stamp references reset (a restarted simulator?)")
            with self._lock:
                self._joint = self._odom = None
                self._answered = None
                self._resume_t0 = time.monotonic()  # first state of the new time source: plan again soon

    def _hint_clock_mismatch(self, reason: str, msg) -> None:
        """Once per configure: when the rejections point at two clocks, say which parameter to set."""
        if self._clock_hint_given or reason not in ("stamp_past", "stamp_future"):
            return
        hint = clock_mismatch_hint(reason, stamp_s(msg.header), self.get_clock().now().nanoseconds * 1e-9,
                                   bool(self.get_parameter("use_sim_time").value), self.count_publishers("/clock"))
        if hint:
            self._clock_hint_given = True
            self.get_logger().error(f"every state is rejected for its stamp: {hint}")

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            pos, vel = joint_state_arrays(msg)
            check_joints(pos, vel, self.controller.estimator.layout.joint_range, spec.JOINT_NAMES, self._limits)
            t = stamp_s(msg.header)
            self._accept_stamp("joint_states", t)
        except Rejected as e:
            self._hint_clock_mismatch(e.reason, msg)
            return self._reject(e.topic, e.reason, str(e))
        with self._lock:
            self._joint = (t, pos, vel)
            self._received = time.monotonic()  # staleness is judged by arrival, on a steady clock
            self._new_state = True
        self._wake_if_lockstep()

    def _on_odom(self, msg: Odometry) -> None:
        try:
            arrs = odometry_arrays(msg)
            check_odometry(*arrs, self._limits)
            t = stamp_s(msg.header)
            self._accept_stamp("odom", t)
        except Rejected as e:
            return self._reject(e.topic, e.reason, str(e))
        with self._lock:
            self._odom = (t, *arrs)
            self._new_state = True
        self._wake_if_lockstep()

    def _wake_if_lockstep(self) -> None:
        if self._loop is not None and self._lockstep:
            self._loop.wake()  # answer the new state now, not at the next period slot

    def _on_cmd_vel(self, msg: Twist) -> None:
        v = (msg.linear.x, msg.linear.y, msg.angular.z)
        try:
            check_command(v, self._limits)
        except Rejected as e:
            return self._reject(e.topic, e.reason, str(e))
        self._cmd_twist = v

    # -- the tick --------------------------------------------------------------------------------
    def _tick(self) -> None:
        t0 = time.perf_counter()
        with self._lock:
            if self._lockstep:
                # Lockstep (sim only): exactly one command per new state, none before the first.
                # Wait until both halves of the state (same stamp) are in.
                if (self._joint is None or self._odom is None or self._odom[0] != self._joint[0]
                        or not self._new_state or self._joint[0] == self._answered):
                    return
                if self.pub_cmd.get_subscription_count() == 0:
                    # Nobody matched yet to take the answer (volatile QoS: a command published
                    # now is lost, and the state would count as answered while the sim waits for
                    # it). The sim re-sends its state until the first command: answer that one.
                    return
                self._answered = self._joint[0]
            self._new_state = False
            joint, odom = self._joint, self._odom
            if self._pending is not None:  # hot swap at a tick boundary
                planner, path, action_filter, version = self._pending
                self._pending = None
                if self._bundle_gate.signed_only and self._bundle_version is not None and version < self._bundle_version:
                    # two swaps in flight: a newer one landed first; this one would roll back
                    self._reject("bundle_path", "rollback", f"{path}: bundle_version {version} < running "
                                 f"{self._bundle_version}; keeping {self.active_bundle}")
                else:
                    self.controller.action_filter = action_filter
                    self.controller.swap_planner(planner)
                    self.active_bundle, self._bundle_version = path, version
                    self.get_logger().info(f"swapped to bundle {path} (bundle_version {version})")
        state = None
        if joint is not None and odom is not None:
            state = MeasuredState(self._received, joint[1], joint[2], odom[1], odom[2], odom[3], odom[4])
        now = time.monotonic()
        res = self.controller.tick(state, now, task=self.p("task"), command=self._cmd_twist, tick_start=t0,
                                   realtime=not self._lockstep)
        self.pub_cmd.publish(Float64MultiArray(data=res.positions.tolist()))
        now = time.monotonic()
        if self._last_publish is not None:  # the command stream's largest gap, on a steady clock
            self._gap_max_s = max(self._gap_max_s, now - self._last_publish)
            self._gap_window_s = max(self._gap_window_s, now - self._last_publish)
        self._last_publish = now
        if res.plan is not None:
            self._publish_plan(res.plan.actions)
            if self._resume_t0 is not None:  # planning again after a restarted clock: how long it took
                self._resume_ms = 1e3 * (time.monotonic() - self._resume_t0)
                self._resume_t0 = None

    def _publish_plan(self, actions: np.ndarray) -> None:
        msg = JointTrajectory()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.joint_names = list(spec.JOINT_NAMES)
        positions = self.controller.estimator.action_to_positions(actions)
        for k, q in enumerate(positions):
            pt = JointTrajectoryPoint(positions=q.tolist())
            t = (k + 1) * float(self.p("control_period"))
            pt.time_from_start.sec, pt.time_from_start.nanosec = int(t), int((t % 1) * 1e9)
            msg.points.append(pt)
        self.pub_plan.publish(msg)

    def _publish_diagnostics(self) -> None:
        if self.controller is None:
            return
        s = self.controller.stats()
        s.update(self._rejects)
        s["clock_resets"] = self._gate.clock_resets
        s["command_gap_max_ms"] = 1e3 * self._gap_max_s
        s["resume_after_clock_reset_ms"] = self._resume_ms
        s["command_gap_max_ms_last_period"] = 1e3 * self._gap_window_s  # since the previous message
        self._gap_window_s = 0.0
        st = DiagnosticStatus(name="planner_node", hardware_id="humanoid", message=f"bundle {self.active_bundle}")
        st.level = DiagnosticStatus.OK if s.get("deadline_misses", 0) == 0 else DiagnosticStatus.WARN
        st.values = [KeyValue(key="active_bundle", value=self.active_bundle),
                     KeyValue(key="bundle_version", value=str(self._bundle_version)),
                     KeyValue(key="parameters_locked", value=str(bool(self.p("lock_parameters"))).lower()),
                     KeyValue(key="safety_filter", value=str(self.p("safety_filter"))),
                     KeyValue(key="task", value=str(self.p("task"))),
                     # the /cmd_vel in use: vx vy [m/s] wz [rad/s], heading frame
                     KeyValue(key="cmd_vel", value=" ".join(f"{x:.3f}" for x in self._cmd_twist))] + [
            KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in sorted(s.items())]
        msg = DiagnosticArray(status=[st])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)


def main(argv=None) -> int:
    from planner_node.ros.spin import init, spin
    init(argv if argv is not None else sys.argv)
    node = PlannerNode()
    if node.p("autostart"):
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            node.get_logger().fatal("configure failed; exiting")
            node.destroy_node()
            rclpy.try_shutdown()
            return 1
        node.trigger_activate()
    return spin(node)  # a stop requested while configuring is honoured here, at once


if __name__ == "__main__":
    sys.exit(main())
