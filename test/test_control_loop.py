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


def test_raise_others_sets_every_other_thread_but_the_clock(tmp_path):
    """The threads that share the GIL with the clock get the nice value it asks for (and the
    threads they start later inherit it); the clock thread keeps its own. Nice 5 (a lower
    priority) needs no privilege; a subprocess, so this test's own threads keep theirs."""
    import subprocess
    import sys
    code = """
import os, threading, time
from planner_node.control.control_loop import ControlLoop
ready, stop = threading.Event(), threading.Event()
tids = {}
def other():
    tids["other"] = threading.get_native_id(); ready.set(); stop.wait(10)
threading.Thread(target=other, daemon=True).start()
ready.wait(5)
def tick():
    tids.setdefault("clock", threading.get_native_id())
loop = ControlLoop(0.01, tick).start()
while "clock" not in tids:
    time.sleep(0.01)
status = loop.raise_others(5)
print(status)
print(os.getpriority(os.PRIO_PROCESS, tids["other"]), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
      os.getpriority(os.PRIO_PROCESS, tids["clock"]))
loop.stop(); stop.set()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    status, nices = out.stdout.strip().splitlines()
    assert "at nice 5" in status
    assert nices.split() == ["5", "5", "0"]  # the other thread, the main thread, the clock


def test_a_tick_that_ends_inside_the_next_slot_runs_that_slot_late_instead_of_skipping_it():
    """Skipping the slot in progress turned a tick 1 ms over its period into a two-period gap."""
    n = []

    def tick():
        n.append(time.monotonic())
        if len(n) == 1:
            time.sleep(0.25)  # 1.25 periods: into the second slot, not past it

    loop = ControlLoop(0.2, tick).start()
    assert _until(lambda: len(n) >= 2)
    loop.stop()
    assert loop.skipped_slots == 0
    assert loop.slot >= 1
