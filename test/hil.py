"""Hardware-in-the-loop harness: nodes in their own processes, a probe node in the test process,
real DDS over loopback on a per-test ROS domain (discovery limited to localhost)."""
from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory


#: The command stream counts as blocked after this long without a command [s]. The node ticks
#: every 30 ms; scheduling of a loaded 2-core machine stretches single gaps past 100 ms (CI saw
#: 112 ms while another job ran), which is jitter, not the faults these tests look for (a tick
#: that stops for good, a swap that stalls the loop): so the bound is generous, and performance
#: is measured in bench/, not asserted here.
BLOCKED_S = 1.0


def _on_steady_clock(stamp_ns: int, now: float) -> float:
    """A DDS timestamp (the system clock [ns]) as ``time.monotonic()`` reads [s]; ``now`` if unset."""
    return now - max(time.time_ns() - stamp_ns, 0) * 1e-9 if stamp_ns > 0 else now


class Probe:
    """Subscribes to everything the nodes publish; records arrival order and times.

    ``keep``: hold only about the latest ``keep`` messages of each topic but the commands (and as
    many events), for benches that run for minutes. Python's collector walks every message a probe
    holds: at a few hundred thousand (JointState, Odometry, /clock), a full collection pauses the
    probe's callbacks for hundreds of ms, and the probe then sees command gaps the node never made.
    """

    def __init__(self, domain: int, keep: int | None = None):
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = Node("hil_probe", context=self.ctx)
        self.msgs = defaultdict(list)   # topic -> [(monotonic time, msg)]
        # topic -> [monotonic time the publisher wrote each message]: a message that waited in
        # this probe's queue (the probe does not spin while a test kills a process) arrives
        # late, but was sent when it was sent
        self.sent = defaultdict(list)
        # topic -> [monotonic time this process's DDS received each message]: what a listener in
        # another process sees, apart from when this probe's executor got round to the callback
        self.received = defaultdict(list)
        self.keep = keep
        self.events = []                # (topic, monotonic time) in arrival order
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for topic, typ in (("/humanoid/joint_commands", Float64MultiArray), ("/joint_states", JointState),
                           ("/odom", Odometry), ("/diagnostics", DiagnosticArray), ("/clock", Clock),
                           ("/planner/plan", JointTrajectory)):
            self.node.create_subscription(typ, topic, self._cb(topic), qos)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def _cb(self, topic):
        def f(msg, info):
            now = time.monotonic()
            self.msgs[topic].append((now, msg))
            self.events.append((topic, now))
            # DDS stamps on the system clock [ns]: the writer's, and this reader's on reception
            self.sent[topic].append(_on_steady_clock(int(info.get("source_timestamp", 0) or 0), now))
            self.received[topic].append(_on_steady_clock(int(info.get("received_timestamp", 0) or 0), now))
            if self.keep and topic != "/humanoid/joint_commands" and len(self.msgs[topic]) > 2 * self.keep:
                for held in (self.msgs[topic], self.sent[topic], self.received[topic]):
                    del held[:-self.keep]
            if self.keep and len(self.events) > 2 * self.keep:
                del self.events[:-self.keep]
        return f

    def sim_time(self) -> float:
        """The latest /clock [s] (0 before any)."""
        if not self.msgs["/clock"]:
            return 0.0
        c = self.msgs["/clock"][-1][1].clock
        return c.sec + c.nanosec * 1e-9

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def wait_for(self, cond, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            self.executor.spin_once(timeout_sec=0.05)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def diagnostics(self, name: str = "planner_node") -> dict:
        """Latest /diagnostics key-values of one status (planner_node or sim_bridge)."""
        for _, msg in reversed(self.msgs["/diagnostics"]):
            for st in msg.status:
                if st.name == name:
                    return {kv.key: kv.value for kv in st.values}
        return {}

    def set_param(self, node: str, name: str, value: str | float, timeout: float = 30.0):
        cli = self.node.create_client(SetParameters, f"/{node}/set_parameters")
        self.wait_for(lambda: cli.service_is_ready(), timeout, f"/{node}/set_parameters")
        pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value) if isinstance(value, float) \
            else ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        req = SetParameters.Request(parameters=[Parameter(name=name, value=pv)])
        fut = cli.call_async(req)
        self.wait_for(fut.done, timeout, f"set {name}")
        return fut.result().results[0]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def log_tail(log_dir: Path, n: int = 3000) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-n:]}" for p in sorted(log_dir.glob("*.log")))


def wait_or_logs(probe: Probe, log_dir: Path, cond, timeout: float, what: str) -> None:
    """probe.wait_for, failing with the nodes' log tails (where each one waited)."""
    try:
        probe.wait_for(cond, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{log_tail(log_dir)}") from None
