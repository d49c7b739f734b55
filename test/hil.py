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


class Probe:
    """Subscribes to everything the nodes publish; records arrival order and times."""

    def __init__(self, domain: int):
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
            src = int(info.get("source_timestamp", 0) or 0)  # the writer's system clock [ns]
            self.sent[topic].append(now - max(time.time_ns() - src, 0) * 1e-9 if src > 0 else now)
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
