"""Spin a node until Ctrl-C or shutdown, then clean up.

A single-threaded executor on purpose: with rclpy 9.1 (Kilted wheels) a MultiThreadedExecutor
stops firing a 30 ms timer once subscription traffic arrives (reproduced with one timer, one
subscription and 3 threads: 0 ticks in the next second; 2 threads: 29 of 33). Our callbacks
are short except the tick, which is bounded by its deadline, so one thread loses nothing:
state messages that arrive during planning wait in the queue and the next tick reads the latest.
"""
from __future__ import annotations

import signal
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions


#: Set by SIGINT/SIGTERM; ``spin`` returns at its next wait (<= 0.1 s).
STOP = threading.Event()


def init(argv) -> None:
    """rclpy.init without rclpy's signal handlers: theirs shut the context down at once, while
    the node's control thread may still publish (a traceback per stop). Ours only set ``STOP``
    (raising from a handler can land inside a pybind11 call and surface as a RuntimeError
    traceback); ``spin`` then stops the node's threads before anything is torn down."""
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)

    def _stop(signum, frame):
        STOP.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)


def spin(node) -> int:
    """Spin until Ctrl-C/SIGTERM or shutdown. The node's own threads (``node.close()``) stop
    before the node is destroyed, so nothing publishes on a dead context: a stop leaves no
    traceback and no C++ abort in the log."""
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        while rclpy.ok() and not STOP.is_set():  # short waits: a stop is seen within 0.1 s
            ex.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        close = getattr(node, "close", None)
        if close is not None:
            close()
        ex.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
