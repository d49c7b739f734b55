"""``planner up``'s status line: the latest /diagnostics of the planner and the bridge, at 1 Hz
(a ROS shell: it runs a small rclpy node in the ``planner up`` process)."""
from __future__ import annotations

import os
import time

FALLBACK_PREFIX = "fallback_"


def format_status(planner: dict[str, str], bridge: dict[str, str]) -> str:
    """One line from the two key-value dicts that /diagnostics carries."""
    if not planner:
        head = "planner: no diagnostics yet"
    else:
        reasons = {k[len(FALLBACK_PREFIX):]: int(v) for k, v in planner.items()
                   if k.startswith(FALLBACK_PREFIX) and int(v) > 0}
        by_reason = f" ({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))})" if reasons else ""
        rejected = sum(int(planner.get(f"rejected_{t}", 0)) for t in ("joint_states", "odom", "cmd_vel"))
        head = (f"planner: ticks {planner.get('ticks', '?')}, plan p50 {float(planner.get('latency_p50_ms', 'nan')):.1f}"
                f" / p99 {float(planner.get('latency_p99_ms', 'nan')):.1f} ms, misses {planner.get('deadline_misses', '?')}"
                f", fallbacks {planner.get('fallbacks', '?')}{by_reason}, rejected {rejected}")
    if not bridge:
        tail = "bridge: no diagnostics yet"
    else:
        tail = (f"bridge: steps {bridge.get('steps', '?')}, fell {'yes' if bridge.get('fell') == 'True' else 'no'}, "
                f"travel {float(bridge.get('travel_forward_m', 'nan')):+.2f} m fwd "
                f"{float(bridge.get('travel_left_m', 'nan')):+.2f} m left")
    return f"{head} | {tail}"


class StatusMonitor:
    """Listens to /diagnostics on this machine's ROS domain (localhost discovery)."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node

        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        os.environ.setdefault("ROS_DOMAIN_ID", "37")
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = Node("planner_up_monitor", context=self.ctx)
        self.latest: dict[str, dict[str, str]] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            self.latest[st.name] = {kv.key: kv.value for kv in st.values}

    def spin(self, seconds: float, stop=lambda: False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stop():
            self.executor.spin_once(timeout_sec=min(0.1, max(0.0, end - time.monotonic())))

    def line(self) -> str:
        return format_status(self.latest.get("planner_node", {}), self.latest.get("sim_bridge", {}))

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)
