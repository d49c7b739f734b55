"""The control thread that runs the planner node's tick (ROS-free)."""
import threading
import time

import pytest

from planner_node.control.control_loop import ControlLoop


def _until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    return False


def test_ticks_periodically_and_stops():
    n = []
    loop = ControlLoop(0.01, lambda: n.append(1)).start()
    assert _until(lambda: len(n) >= 5)
    loop.stop()
    assert not loop.running
    k = len(n)
    time.sleep(0.05)
    assert len(n) == k, "ticked after stop()"


def test_wake_runs_the_next_tick_at_once():
    n = []
    loop = ControlLoop(3600.0, lambda: n.append(1)).start()  # the next slot is an hour away
    assert _until(lambda: len(n) == 1)
    loop.wake()
    assert _until(lambda: len(n) == 2), "wake() did not run a tick"
    loop.stop()


def test_a_failing_tick_is_reported_and_the_loop_keeps_running():
    errors, n = [], []

    def tick():
        n.append(1)
        if len(n) == 2:
            raise RuntimeError("boom")

    loop = ControlLoop(0.005, tick, on_error=errors.append).start()
    assert _until(lambda: len(n) >= 5)
    loop.stop()
    assert len(errors) == 1 and "boom" in str(errors[0])


def test_overrun_skips_slots_instead_of_bursting():
    gate = threading.Event()
    n = []

    def tick():
        n.append(time.monotonic())
        if len(n) == 1:
            gate.wait(5)  # the first tick overruns many periods

    loop = ControlLoop(0.01, tick).start()
    assert _until(lambda: len(n) == 1)
    time.sleep(0.1)
    gate.set()
    assert _until(lambda: len(n) >= 3)
    loop.stop()
    assert loop.skipped_slots >= 5


def test_bad_period_is_refused():
    with pytest.raises(ValueError, match="period_s"):
        ControlLoop(0.0, lambda: None)
