"""Spin a node on a multi-threaded executor until Ctrl-C or shutdown, then clean up."""
from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor


def spin(node, threads: int = 2) -> int:
    ex = MultiThreadedExecutor(num_threads=threads)
    ex.add_node(node)
    try:
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
