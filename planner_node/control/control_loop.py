"""The control thread: calls ``tick()`` every period on a steady clock, ROS-free.

Why a thread of our own and not an executor timer: planning must never block message
callbacks, and rclpy 9.1's MultiThreadedExecutor stops firing a 30 ms timer under subscription
traffic (see ``planner_node.ros.spin``). So subscriptions spin on a single-threaded executor and the tick
runs here. Periods are scheduled on absolute times (no drift); a tick that overruns its period
runs the slot in progress at once, late, and skips the slots that passed whole instead of
bursting to catch up (a burst would command stale plans).
``wake()`` runs the next tick at once: lockstep answers a new state without waiting for the slot.

``priority`` > 0 asks Linux for SCHED_FIFO at that priority for this thread, as ros2_control's
controller manager does for its update loop: on a loaded machine the command is then late only
by the GIL's switch interval, not by the scheduler's time slices. It needs an rtprio limit
(``ulimit -r``, /etc/security/limits.conf) or CAP_SYS_NICE; without, the loop runs at normal
priority and ``priority_status`` says why.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable


class ControlLoop:
    def __init__(self, period_s: float, tick: Callable[[], None], name: str = "control",
                 on_error: Callable[[BaseException], None] | None = None, priority: int = 0):
        if period_s <= 0:
            raise ValueError(f"period_s: must be > 0, got {period_s}")
        if not 0 <= priority <= 99:
            raise ValueError(f"priority: SCHED_FIFO priorities are 1..99 (0: normal scheduling), got {priority}")
        self.period_s, self._tick, self._on_error = period_s, tick, on_error
        self.priority = priority
        self.priority_status = "normal scheduling"
        self._started = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.ticks = 0
        self.skipped_slots = 0   # periods with no tick because the previous one overran
        self.start_late_s = 0.0  # how long after its slot's scheduled start the running tick started [s]

    def start(self) -> "ControlLoop":
        self._thread.start()
        self._started.wait(5.0)  # priority_status is set once the thread runs
        return self

    def _set_priority(self) -> None:
        if self.priority <= 0:
            return
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(self.priority))
            self.priority_status = f"SCHED_FIFO {self.priority}"
        except (AttributeError, OSError) as e:
            self.priority_status = (f"normal scheduling (SCHED_FIFO {self.priority} refused: {e}; "
                                    f"raise the rtprio limit, e.g. ulimit -r {self.priority})")

    def raise_others(self, nice: int) -> str:
        """Every other thread of this process (the executor, DDS's own threads, the keeper) to
        ``nice``, and with them the threads they start later. The clock waits for the GIL and for
        the DDS writer's lock, which these threads hold in turn: one that holds either while it
        waits for a CPU behind the worker and the simulator delays the clock however high its
        own priority (a 9 ms publish in a hot swap). Returns what was done, or why not."""
        mine, done = self._thread.native_id, 0
        try:
            for tid in os.listdir("/proc/self/task"):
                if int(tid) != mine:
                    os.setpriority(os.PRIO_PROCESS, int(tid), nice)
                    done += 1
        except (AttributeError, OSError) as e:
            return f"other threads at their nice value ({nice} refused: {e})"
        return f"{done} other threads at nice {nice}"

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    @property
    def slot(self) -> int:
        """The running tick's slot number on the steady clock: slots since start, skipped ones
        included (in real time this is what ages a plan; lockstep counts answered states instead)."""
        return self.ticks + self.skipped_slots

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        self._set_priority()
        self._started.set()
        next_t = time.monotonic()
        while not self._stop.is_set():
            self.start_late_s = max(0.0, time.monotonic() - next_t)
            try:
                self._tick()
            except Exception as e:  # noqa: BLE001 - the loop must outlive one bad tick
                if self._on_error is not None:
                    self._on_error(e)
            self.ticks += 1
            next_t += self.period_s
            now = time.monotonic()
            if now > next_t:
                # Overran: skip only the slots whose whole period has passed, and run the one in
                # progress at once, late. Skipping that one too (as this loop once did) turned a
                # tick that ended 1 ms into the next slot into a two-period gap in the commands.
                missed = int((now - next_t) // self.period_s)
                self.skipped_slots += missed
                next_t += missed * self.period_s
            self._wake.wait(max(0.0, next_t - time.monotonic()))
            if self._wake.is_set():
                self._wake.clear()
                next_t = time.monotonic()  # a woken tick restarts the schedule from now
