"""Spin a node until Ctrl-C or shutdown, then clean up.

A single-threaded executor on purpose: with rclpy 9.1 (Kilted wheels) a MultiThreadedExecutor
stops firing a 30 ms timer once subscription traffic arrives (reproduced with one timer, one
subscription and 3 threads: 0 ticks in the next second; 2 threads: 29 of 33). Our callbacks
are short except the tick, which is bounded by its deadline, so one thread loses nothing:
state messages that arrive during planning wait in the queue and the next tick reads the latest.
"""
from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def spin(node) -> int:
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
