"""The control thread: calls ``tick()`` every period on a steady clock, ROS-free.

Why a thread of our own and not an executor timer: planning must never block message
callbacks, and rclpy 9.1's MultiThreadedExecutor stops firing a 30 ms timer under subscription
traffic (see ``planner_node.ros.spin``). So subscriptions spin on a single-threaded executor and the tick
runs here. Periods are scheduled on absolute times (no drift); a tick that overruns its period
skips the missed slots instead of bursting to catch up (a burst would command stale plans).
``wake()`` runs the next tick at once: lockstep answers a new state without waiting for the slot.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class ControlLoop:
    def __init__(self, period_s: float, tick: Callable[[], None], name: str = "control",
                 on_error: Callable[[BaseException], None] | None = None):
        if period_s <= 0:
            raise ValueError(f"period_s: must be > 0, got {period_s}")
        self.period_s, self._tick, self._on_error = period_s, tick, on_error
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.ticks = 0
        self.skipped_slots = 0   # periods with no tick because the previous one overran

    def start(self) -> "ControlLoop":
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as e:  # noqa: BLE001 - the loop must outlive one bad tick
                if self._on_error is not None:
                    self._on_error(e)
            self.ticks += 1
            next_t += self.period_s
            now = time.monotonic()
            if now > next_t:  # overran: resume on the next slot boundary
                missed = int((now - next_t) // self.period_s) + 1
                self.skipped_slots += missed
                next_t += missed * self.period_s
            self._wake.wait(max(0.0, next_t - time.monotonic()))
            if self._wake.is_set():
                self._wake.clear()
                next_t = time.monotonic()  # a woken tick restarts the schedule from now
