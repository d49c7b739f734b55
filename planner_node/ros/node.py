"""The planner node: a thin rclpy lifecycle shell over ``planner_node.control.controller``.

configure: read parameters (each maps to ControllerConfig or the bundle), verify and load the
bundle, warm it up; fail naming the parameter. activate: start the command clock.
deactivate: stop commanding. Parameters marked static are refused at run time; dynamic ones
(task, deadline_ms, bundle_path) apply at the next tick. Setting ``bundle_path`` verifies the
bundle synchronously (a bad one is rejected with the reason), then loads and warms it up apart
(a second worker process, or a thread inline) and swaps at a slot boundary; the old planner
keeps commanding meanwhile.

The planner worker (``planner_process: worker``, the default for bundles): the bundle's engines
and filter run in a child process (``runtime/plan_worker.py``), and the command clock waits for
a plan at most until the slot's deadline. A worker that dies, or hangs for ``worker_hang_ms``, is
seen at the next slot: the slot commands the fallback, a new worker starts on a background
thread, ``worker_restarts`` counts it. A bundle whose worker crashes three times is refused
(``rejected_bundle_path_crashed``) and the bundle before it comes back.

Threads: one executor thread (see ``planner_node.ros.spin`` for why); the command clock reads the
latest state under a lock, because loading for a hot swap or a restart runs on another thread.
"""
from __future__ import annotations

import gc
import os
import queue
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
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, MultiArrayLayout
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from planner_node import spec
from planner_node.control.control_loop import ControlLoop
from planner_node.control.controller import Controller, ControllerConfig
from planner_node.control.action_filter import make_filter
from planner_node.ros.default_bundle import default_bundle_path, share_dir
from planner_node.control.parameters import LOCKED_WHEN_DEPLOYED, PARAMS
from planner_node.ros.convert import joint_state_arrays, odometry_arrays, stamp_s
from planner_node.control.state_estimator import MeasuredState
from planner_node.planning import INTENT_BLOCKS
from planner_node.control.state_validation import (REJECT_REASONS, Rejected, StampGate, StateLimits, check_command,
                                           check_joints, check_odometry, clock_mismatch_hint)

#: name -> (default, static?, description), from the one parameter table.
PARAMETERS = {p.name: (p.default, p.static, p.description) for p in PARAMS}


#: With a real-time command clock, the node's other threads run at this nice value (see
#: ControlLoop.raise_others); the planner worker sets its own.
NODE_NICE = -10


class PlannerNode(LifecycleNode):
    #: a command gap longer than this is logged with where its time went [s]
    LOG_GAP_S = 0.2

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
        self._rejects["states_queued_late"] = 0  # states that waited > 2 periods in the DDS queue
        self._gap_max_s = 0.0  # the command stream's largest gap, on a steady clock [s]
        # the largest command gap since the last /diagnostics message, and where the time went [s]:
        # when in its slot the previous command went out; then, in the slot that ended the gap,
        # how late it started (its thread waited for a CPU or the GIL), the state lock and any
        # swap's install, the tick before it asked the planner, its wait for the plan, the tick
        # after, the publish
        self._worst_slot = (0.0,) * 8
        self._last_sent: float | None = None  # when the last command went out (perf_counter)
        self._last_phase = 0.0
        self._gc_t0: float | None = None
        self._gc_pause_s = 0.0  # the longest garbage collection since the last /diagnostics [s]
        self._resume_t0: float | None = None
        self._resume_ms = -1.0     # last time from a restarted clock's first state to a plan (-1: never)
        self._last_log: dict[tuple, float] = {}
        self._loop: ControlLoop | None = None
        self._lockstep = False
        self._restarting = False          # a worker restart is under way (one at a time)
        self._worker_restarts = 0
        self._crashes: dict[str, int] = {}  # bundle path -> crashes of its workers
        self._crashed: set[str] = set()     # real paths refused after crashing their worker 3 times
        self._previous = None               # (path, bundle_version) swapped out last: what a crash reverts to
        self._closing = False
        self._chores: queue.SimpleQueue = queue.SimpleQueue()  # (fn, args) for the keeper thread
        threading.Thread(target=self._do_chores, name="keeper", daemon=True).start()
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

    def _warm_state(self):
        """(observation, sim state) of the standing robot, built once at configure: a hot swap's
        loading thread then does no Python-heavy work that would hold the GIL against the tick."""
        if getattr(self, "_warm", None) is None:
            from planner_node.sim.env import HumanoidEnv
            env = HumanoidEnv()
            self._warm = (env.reset(0), env.get_state())
        return self._warm

    def _use_worker(self) -> bool:
        mode = self.p("planner_process")
        if mode not in ("worker", "inline"):
            raise ValueError(f"planner_process: unknown {mode!r}; valid: worker, inline")
        return self.p("planner") == "bundle" and mode == "worker"

    def _make_service(self, path: str, verified=None, running_version=None, swap: bool = False):
        """What makes the plans: a worker process on the bundle at ``path`` (it verifies the bundle
        itself), or the planner and its filter inline (over ``verified``)."""
        from planner_node.control.plan_service import InlinePlanService
        if self._use_worker():
            from planner_node.control.parameters import planner_settings
            from planner_node.runtime.bundle_gate import split_paths
            from planner_node.runtime.worker_service import SWAP_NICE, WorkerPlanService, WorkerSpec, can_renice_back
            spec = WorkerSpec(bundle=path, backend=self.p("backend"), seed=int(self.p("seed")),
                              planner_settings=planner_settings(self.p("planner_settings")),
                              safety_filter=self.p("safety_filter"), safety_filter_config=self.p("safety_filter_config"),
                              safety_filter_threshold=str(self.p("safety_filter_threshold")),
                              trusted_keys=split_paths(self.p("trusted_keys")), bundle_root=str(self.p("bundle_root")),
                              base=str(share_dir()), running_version=running_version,
                              warm_pause_s=0.03 if swap else 0.005,
                              start_nice=SWAP_NICE if swap and can_renice_back() else 0)
            return WorkerPlanService(spec, self._warm_state()[0], warm_task=self.p("task"),
                                     hang_s=float(self.p("worker_hang_ms")) / 1e3)
        planner = self._make_planner(verified)
        action_filter = self._make_filter(planner)  # the filter's graphs come with the bundle
        self._warm_up(planner, pause_s=0.03 if swap else 0.005)
        return InlinePlanService(planner, action_filter)

    def _warm_up(self, planner, pause_s: float = 0.005) -> None:
        """A few plans on a standing observation, then the configured seed."""
        from planner_node.planning import PlanRequest
        obs, state = self._warm_state()
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
                from planner_node.control.action_filter import filter_class, parse_threshold
                if not hasattr(filter_class(self.p("safety_filter")), "set_threshold"):
                    return SetParametersResult(successful=False, reason=f"safety_filter_threshold: filter "
                                               f"{self.p('safety_filter')!r} has no threshold")
                try:
                    parse_threshold(prm.value)
                except ValueError as e:
                    return SetParametersResult(successful=False, reason=str(e))
                svc = self.controller.service
                if svc is not None and svc.mode == "worker":
                    svc.set_threshold(str(prm.value))  # applied by the worker before its next plan
                else:
                    self.controller.action_filter.set_threshold(str(prm.value))
            if prm.name == "deadline_ms":
                try:
                    ControllerConfig(deadline_ms=float(prm.value), task=self.p("task"))
                except (ValueError, TypeError) as e:
                    return SetParametersResult(successful=False, reason=str(e))
            if prm.name == "bundle_path":
                from planner_node.runtime.bundle_gate import BundleRefused
                try:
                    path = self._bundle_path(prm.value)
                    if os.path.realpath(path) in self._crashed:
                        why = f"{path} crashed its planner worker 3 times in this node: refused"
                        self._reject("bundle_path", "crashed", why)
                        return SetParametersResult(successful=False, reason=f"bundle_path: crashed: {why}")
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
        # A background job, but not at a lower priority: this thread shares the GIL with the
        # command clock, and a niced thread that holds it waits behind the worker and the
        # simulator for a CPU while the clock waits for it (20 ms past a slot's deadline, with
        # this thread at nice 10). The heavy loading runs in the new worker process, niced there.
        from planner_node.runtime.bundle_gate import BundleRefused
        from planner_node.runtime.worker_service import WorkerFailed
        try:
            # verified again as it is loaded (by the worker, in worker mode): what runs is what
            # was checked, not what the directory held when the parameter was set
            bundle = None if self._use_worker() else self._bundle_gate.check(path, self._bundle_version, check_graphs=True)
            service = self._make_service(path, bundle, running_version=self._bundle_version, swap=True)
        except (BundleRefused, WorkerFailed) as e:
            self._reject("bundle_path", e.reason, f"keeping {self.active_bundle}: {e}")
            return
        except Exception as e:  # noqa: BLE001 - keep the old bundle on any failure
            self._reject("bundle_path", "load_failed", f"load/warm-up failed, keeping {self.active_bundle}: {e}")
            return
        version = bundle.version if bundle is not None else service.info["bundle_version"]
        with self._lock:
            self._pending = (service, path, version, "swap")

    def _restart_worker(self, dead) -> None:
        """A dead or hung worker: start another on the same bundle, or, after its third crash, on
        the bundle before it. The command clock commands the fallback meanwhile."""
        self._worker_restarts += 1
        path = self.active_bundle
        n = self._crashes[path] = self._crashes.get(path, 0) + 1
        self.get_logger().error(f"planner worker {dead.pid} on {path}: {dead.exit_reason()} (crash {n} of this "
                                f"bundle); commanding the fallback while a new worker starts")
        dead.close()
        if n >= 3 and self._previous is not None:
            self._crashed.add(os.path.realpath(path))
            self._reject("bundle_path", "crashed", f"{path} crashed its worker {n} times: refused; "
                         f"back to {self._previous[0]}")
            path, self._previous = self._previous[0], None
        while not self._closing:
            try:
                service = self._make_service(path, running_version=None)  # full speed: nothing else plans
                break
            except Exception as e:  # noqa: BLE001 - keep trying: nothing else can plan
                self.get_logger().error(f"restarting the planner worker on {path} failed: {e}; retrying in 1 s")
                time.sleep(1.0)
        else:
            return
        with self._lock:
            if self._closing:  # the node closed while the worker started
                self._chores.put((service.close, ()))
                return
            self._pending = (service, path, service.info["bundle_version"], "restart")

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
            self._closing = False
            service = self._make_service(bundle, verified)
        except Exception as e:  # noqa: BLE001 - report any configure failure by parameter
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self.controller = Controller(None, cfg, service=service)
        self.active_bundle = bundle or self.p("planner")
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_cmd = self.create_lifecycle_publisher(Float64MultiArray, "/humanoid/joint_commands", qos)
        self.pub_plan = self.create_lifecycle_publisher(JointTrajectory, "~/plan", 1)
        # where the kind predicts states (H-GAP, TAP, Diffuser): what it expects of the body along the plan
        self.pub_intent = self.create_lifecycle_publisher(Float64MultiArray, "~/plan_intent", 1)
        self.pub_candidates = self.create_lifecycle_publisher(Float64MultiArray, "~/plan_candidates", 1)
        self.pub_diag = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        self._subs = [self.create_subscription(JointState, "/joint_states", self._on_joint_states, 10),
                      self.create_subscription(Odometry, "/odom", self._on_odom, 10),
                      self.create_subscription(Twist, "/cmd_vel", self._on_cmd_vel, 10)]
        self._configured = True
        self.get_logger().info(f"configured: planner {self.active_bundle} ({self.p('backend')}, {service.mode}), task {cfg.task}; "
                               f"bundles: {self._bundle_gate.describe()}"
                               + ("; safety parameters locked" if self.p("lock_parameters") else ""))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        # Ticks are paced by a steady clock whatever use_sim_time says: a robot's control loop
        # runs in real time, and a lockstep sim only advances when it receives our command.
        # The tick runs on its own thread so planning never blocks the executor's callbacks.
        self._lockstep = bool(self.p("lockstep"))
        self._last_sent = None  # a pause while inactive is not a gap in the stream
        # Enable the lifecycle publishers BEFORE the control thread starts: a disabled publisher
        # drops silently, and in lockstep a dropped answer to a state that was already waiting
        # marks it answered while the sim never steps (a deadlock seen in CI).
        ret = super().on_activate(state)
        if ret != TransitionCallbackReturn.SUCCESS:
            return ret
        # Everything built so far (MuJoCo model, messages, the warm-up's objects) leaves the
        # collector's generations: a full collection then walks only what the run allocates,
        # instead of pausing every thread for the whole heap (swaps parse YAML and trigger it).
        gc.collect()
        gc.freeze()
        if self._gc_timer not in gc.callbacks:
            gc.callbacks.append(self._gc_timer)
        self._loop = ControlLoop(float(self.p("control_period")), self._tick, on_error=self._tick_error,
                                 # real-time priority only for a light clock: a thread that plans
                                 # inline (MPPI, planner_process inline) at SCHED_FIFO starved the
                                 # executor and the sim on 2 cores (a lockstep MPPI run never stepped)
                                 priority=int(self.p("command_clock_priority"))
                                 if self.controller.service.mode == "worker" else 0).start()
        if self._loop.priority and not self._loop.priority_status.startswith("SCHED_FIFO"):
            self.get_logger().warn(f"command clock: {self._loop.priority_status}")
        elif self._loop.priority:
            self._loop.priority_status += "; " + self._loop.raise_others(NODE_NICE)
        # On a steady clock: /diagnostics keeps flowing when /clock stops (a dead simulator).
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"activated: commanding every {float(self.p('control_period')) * 1e3:.0f} ms"
                               f"{' (lockstep)' if self._lockstep else ''}; command clock {self._loop.priority_status}")
        return ret

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        if self._gc_timer in gc.callbacks:
            gc.callbacks.remove(self._gc_timer)
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
        for pub in (getattr(self, n, None) for n in ("pub_cmd", "pub_plan", "pub_intent", "pub_candidates", "pub_diag")):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self.pub_cmd = self.pub_plan = self.pub_intent = self.pub_candidates = self.pub_diag = None
        with self._lock:
            self.controller, self._pending = None, None
            self._joint = self._odom = None
        self._configured = False
        self.get_logger().info("cleaned up: unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop the command clock (and so all publishing from it), then the planner worker."""
        self._closing = True
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        with self._lock:
            services = [self.controller.service if self.controller is not None else None,
                        self._pending[0] if self._pending is not None else None]
            self._pending = None
        for svc in services:
            if svc is not None:
                svc.close()

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.close()
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

    def _arrival(self, info) -> float:
        """When DDS received the message, on the steady clock. A sample that waited in the
        subscription's queue (a busy executor, a loaded machine) is as old as it is: taking the
        callback's time as its arrival made a state queued before the bridge died look fresh,
        and the node planned on it after the bridge was gone (the HIL flake of the bridge-restart
        test). ``received_timestamp`` is the reader's system clock [ns] (0: not provided)."""
        now = time.monotonic()
        rx = int(info.get("received_timestamp", 0) or 0) if info else 0
        if rx <= 0:
            return now
        waited = min(max(time.time_ns() - rx, 0), 10_000_000_000) * 1e-9
        if waited > 2 * float(self.p("control_period")):
            self._rejects["states_queued_late"] += 1  # a sign of a starved executor
        return now - waited

    def _on_joint_states(self, msg: JointState, info) -> None:
        try:
            pos, vel = joint_state_arrays(msg)
            check_joints(pos, vel, self.controller.estimator.layout.joint_range, spec.JOINT_NAMES, self._limits)
            t = stamp_s(msg.header)
            self._accept_stamp("joint_states", t)
        except Rejected as e:
            self._hint_clock_mismatch(e.reason, msg)
            return self._reject(e.topic, e.reason, str(e))
        arrival = self._arrival(info)  # staleness is judged by arrival at DDS, on a steady clock
        with self._lock:
            self._joint = (t, pos, vel)
            self._received = arrival
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
            if self._pending is not None:  # hot swap (or a restarted worker) at a slot boundary
                self._install_pending()
        t_locked = time.perf_counter()
        state = None
        if joint is not None and odom is not None:
            state = MeasuredState(self._received, joint[1], joint[2], odom[1], odom[2], odom[3], odom[4])
        now = time.monotonic()
        # real time: the slot's deadline counts from when the slot began, not from when this
        # thread got to run (a late start then waits less, and the gap between commands stays
        # bounded by a period plus the controller's phase step)
        late = self._loop.start_late_s if self._loop is not None and not self._lockstep else 0.0
        res = self.controller.tick(state, now, task=self.p("task"), command=self._cmd_twist, tick_start=t0 - late,
                                   realtime=not self._lockstep,
                                   slot=self._loop.slot if self._loop and not self._lockstep else None)
        t_planned = time.perf_counter()
        self.pub_cmd.publish(Float64MultiArray(data=res.positions.tolist()))
        self._note_slot(late, t0, t_locked, t_planned, time.perf_counter())
        self._supervise_worker()
        if res.plan is not None:
            self._publish_plan(res.plan.actions)
            # built only for a listener (a viewer): K x T x 10 floats on the clock thread otherwise wasted
            for key, pub in (("intent", self.pub_intent), ("candidate_intent", self.pub_candidates)):
                if key in res.plan.info and pub.get_subscription_count():
                    pub.publish(intent_message(res.plan.info[key]))
            if self._resume_t0 is not None:  # planning again after a restarted clock: how long it took
                self._resume_ms = 1e3 * (time.monotonic() - self._resume_t0)
                self._resume_t0 = None

    def _gc_timer(self, phase: str, info: dict) -> None:
        """gc.callbacks: the longest collection since the last /diagnostics message. A collection
        stops every thread of the node, the command clock's included."""
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        elif self._gc_t0 is not None:
            self._gc_pause_s = max(self._gc_pause_s, time.perf_counter() - self._gc_t0)
            self._gc_t0 = None

    def _note_slot(self, late: float, t0: float, t_locked: float, t_planned: float, t_sent: float) -> None:
        """The command stream's largest gap, and the parts of the slot that ended the period's
        largest (perf_counter times; ``late``: how late the slot started) [s]."""
        waited = self.controller.waited or (t_planned, t_planned)
        gap = t_sent - self._last_sent if self._last_sent is not None else 0.0
        self._gap_max_s = max(self._gap_max_s, gap)
        if gap > self._worst_slot[0]:
            self._worst_slot = (gap, self._last_phase, late, t_locked - t0,
                                waited[0] - t_locked, waited[1] - waited[0], t_planned - waited[1], t_sent - t_planned)
            if self._worst_slot[0] > self.LOG_GAP_S:  # rare and worth a line: where the time went
                self._chores.put((self.get_logger().warn, (
                    "command gap of {:.0f} ms: previous command at {:.1f} ms into its slot; this slot started "
                    "{:.1f} ms late, lock {:.1f}, observe {:.1f}, wait for the plan {:.1f}, choose {:.1f}, "
                    "publish {:.1f} ms".format(*(1e3 * x for x in self._worst_slot)),)))
        self._last_sent, self._last_phase = t_sent, late + t_sent - t0

    def _install_pending(self) -> None:
        """Under the lock, between slots: the loaded service takes over; the old one is closed apart."""
        service, path, version, why = self._pending
        self._pending = None
        if (why == "swap" and self._bundle_gate.signed_only and self._bundle_version is not None
                and version < self._bundle_version):
            # two swaps in flight: a newer one landed first; this one would roll back
            self._reject("bundle_path", "rollback", f"{path}: bundle_version {version} < running "
                         f"{self._bundle_version}; keeping {self.active_bundle}")
            self._chores.put((service.close, ()))
            return
        old = self.controller.service
        if why == "swap":
            self._previous = (self.active_bundle, self._bundle_version)
        self.controller.swap_service(service)
        if service.mode == "worker" and str(self.p("safety_filter_threshold")).strip():
            service.set_threshold(str(self.p("safety_filter_threshold")))  # a change made while it loaded
        self.active_bundle, self._bundle_version = path, version
        if why == "restart":
            self._restarting = False
        self._chores.put((self.get_logger().info, (f"{'swapped to' if why == 'swap' else 'planner worker restarted on'} "
                                                   f"bundle {path} (bundle_version {version})",)))
        if old is not None and old is not service:
            self._chores.put((old.close, ()))

    def _do_chores(self) -> None:
        """The keeper thread: what the command clock hands off (closing a worker, restarting one,
        logging) runs here. Handing off is a queue put; starting a thread from the clock waited
        for the new thread to be scheduled (Thread.start), which stalled a slot by up to ~100 ms
        on a loaded machine."""
        while True:
            fn, args = self._chores.get()
            if fn is None:
                return
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - the keeper outlives one failed chore
                self.get_logger().error(f"{getattr(fn, '__name__', fn)} failed: {e.__class__.__name__}: {e}")

    def _supervise_worker(self) -> None:
        """Each slot, after its command: a dead worker gets a replacement (one restart at a time)."""
        svc = self.controller.service
        if svc is not None and svc.mode == "worker" and not svc.alive and not self._restarting and not self._closing:
            self._restarting = True
            self._chores.put((self._restart_worker, (svc,)))

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
        s["worker_restarts"] = self._worker_restarts
        s["command_clock"] = self._loop.priority_status if self._loop is not None else "stopped"
        svc = self.controller.service
        s["worker_pid"] = getattr(svc, "pid", -1) if svc is not None and svc.alive else -1
        s["command_gap_max_ms_last_period"] = 1e3 * self._worst_slot[0]  # since the previous message
        # "gap previous_phase start_late lock observe wait choose publish" [ms], the period's largest gap
        s["gap_parts_ms_last_period"] = " ".join(f"{1e3 * x:.1f}" for x in self._worst_slot)
        s["gc_pause_max_ms_last_period"] = 1e3 * self._gc_pause_s
        self._gc_pause_s = 0.0
        self._worst_slot = (0.0,) * 8
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


#: ~/plan_intent's column label: the blocks, each with its width
INTENT_LABEL = ",".join(f"{b}:{spec.OBS_SLICES[b].stop - spec.OBS_SLICES[b].start}" for b in INTENT_BLOCKS)


def intent_message(intent: np.ndarray) -> Float64MultiArray:
    """~/plan_intent: (T, 10) row-major, row 0 the state planned from; columns as the layout's
    labels say (planning.INTENT_BLOCKS: body height [m], world z in the root frame, velocimeter
    [m/s] and gyro [rad/s] in the root frame). ~/plan_candidates: (K, T, 10), the best other
    candidates, best first."""
    x = np.asarray(intent, float)
    labels = ["candidate", "step", INTENT_LABEL][-x.ndim:]
    strides = np.cumprod(x.shape[::-1])[::-1]
    layout = MultiArrayLayout(dim=[MultiArrayDimension(label=lab, size=int(n), stride=int(st))
                                   for lab, n, st in zip(labels, x.shape, strides)])
    return Float64MultiArray(layout=layout, data=x.ravel().tolist())


def main(argv=None) -> int:
    from planner_node.ros.spin import init, spin
    # The command clock shares the GIL with the executor thread (parameter answers, message
    # callbacks). CPython hands the GIL to a waiting thread only after the switch interval, and a
    # slot takes and releases it several times (select, publish, MuJoCo): at the default 5 ms
    # each of those waits may cost up to 5 ms. 1 ms bounds each.
    sys.setswitchinterval(0.001)
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
