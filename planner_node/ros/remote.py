"""``planner swap`` and ``planner task``: drive a running stack from a pip-only install.

A pip user has no ``ros2`` CLI, so ``ros2 param set /planner bundle_path DIR`` is not available to
them. These commands do the same over the same interfaces: the planner's parameter service
(``/planner/set_parameters``) and ``/cmd_vel``, and read the outcome from ``/diagnostics``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

PLANNER = "planner"          # the planner node's name (launch_description.NODES)
STATUS = "planner_node"      # its /diagnostics status name


class Remote:
    """A short-lived client node on its own context, so that it can be used next to others."""

    def __init__(self, node: str = PLANNER):
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=int(os.environ.get("ROS_DOMAIN_ID", "0")))
        self.node = Node("planner_remote", context=self.ctx)
        self.target = node
        self.diag: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == STATUS:
                self.diag = {kv.key: kv.value for kv in st.values}

    def wait_for(self, cond, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            self.executor.spin_once(timeout_sec=0.05)
        raise TimeoutError(f"no {what} within {timeout:.0f} s (is the stack running on ROS_DOMAIN_ID="
                           f"{os.environ.get('ROS_DOMAIN_ID', '0')}?)")

    def set_param(self, name: str, value: str, timeout: float) -> tuple[bool, str]:
        """(successful, reason) of the planner node's answer."""
        cli = self.node.create_client(SetParameters, f"/{self.target}/set_parameters")
        self.wait_for(cli.service_is_ready, timeout, f"/{self.target}/set_parameters service")
        req = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=value))])
        fut = cli.call_async(req)
        self.wait_for(fut.done, timeout, f"answer to setting {name}")
        res = fut.result().results[0]
        return res.successful, res.reason

    def publish_twist(self, v: tuple[float, float, float], timeout: float) -> None:
        """Publish once the planner subscribes (a message sent before discovery is lost), a few
        times over 0.3 s so that a single drop does not lose the command."""
        pub = self.node.create_publisher(Twist, "/cmd_vel", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.wait_for(lambda: pub.get_subscription_count() > 0, timeout, "/cmd_vel subscriber")
        msg = Twist()
        msg.linear.x, msg.linear.y, msg.angular.z = (float(x) for x in v)
        for _ in range(3):
            pub.publish(msg)
            self.executor.spin_once(timeout_sec=0.1)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def _session(label: str, body) -> int:
    """Run ``body(remote)`` on a fresh client: its exit code, or 1 when the node does not answer."""
    r = Remote()
    try:
        return body(r)
    except TimeoutError as e:
        print(f"{label}: {e}")
        return 1
    finally:
        r.close()


def _counter(r: Remote, key: str) -> int:
    return int(r.diag.get(key, 0))


def swap(bundle: str, timeout: float = 60.0, wait: bool = True) -> int:
    """Set ``bundle_path`` to BUNDLE (an absolute path: the node does not share our cwd). The node
    verifies it at once (a bad bundle is refused with the reason, and the old one keeps running),
    then loads and warms it up off the control thread; with ``wait`` we return once /diagnostics
    names it the active bundle, or it reports the load failed."""
    path = str(Path(bundle).expanduser().resolve())

    def body(r: Remote) -> int:
        ok, reason = r.set_param("bundle_path", path, timeout)
        if not ok:
            print(f"planner swap: refused: {reason}")
            return 1
        print(f"planner swap: {path} verified by the node; loading and warming up")
        if not wait:
            return 0
        r.wait_for(lambda: bool(r.diag), timeout, "/diagnostics from the planner")
        failed0 = _counter(r, "rejected_bundle_path_load_failed")
        r.wait_for(lambda: r.diag.get("active_bundle") == path
                   or _counter(r, "rejected_bundle_path_load_failed") > failed0, timeout, "swap")
        if r.diag.get("active_bundle") != path:
            print(f"planner swap: load failed; still running {r.diag.get('active_bundle')} (see the node's log)")
            return 1
        print(f"planner swap: active bundle {path} (swaps {r.diag.get('swaps')})")
        return 0
    return _session("planner swap", body)


def set_task(task: str, cmd_vel: tuple[float, float, float] | None = None, timeout: float = 30.0) -> int:
    """Set the ``task`` parameter, then publish ``cmd_vel`` (vx, vy [m/s], wz [rad/s], heading frame)
    if given; return once /diagnostics shows both."""
    def body(r: Remote) -> int:
        ok, reason = r.set_param("task", task, timeout)
        if not ok:
            print(f"planner task: refused: {reason}")
            return 1
        if cmd_vel is not None:
            r.wait_for(lambda: bool(r.diag), timeout, "/diagnostics from the planner")
            rejected0 = _counter(r, "rejected_cmd_vel")  # the node counts every /cmd_vel it refuses
            r.publish_twist(cmd_vel, timeout)
            want = " ".join(f"{x:.3f}" for x in cmd_vel)
            r.wait_for(lambda: r.diag.get("cmd_vel") == want or _counter(r, "rejected_cmd_vel") > rejected0,
                       timeout, "/cmd_vel taken by the planner")
            if r.diag.get("cmd_vel") != want:
                print(f"planner task: /cmd_vel {want} rejected by the planner (limits: 2 m/s, 3 rad/s)")
                return 1
        r.wait_for(lambda: r.diag.get("task") == task, timeout, f"task {task} in /diagnostics")
        print(f"planner task: {task}" + (f", cmd_vel {r.diag['cmd_vel']}" if cmd_vel is not None else ""))
        return 0
    return _session("planner task", body)
