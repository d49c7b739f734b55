"""Bridge loss over real DDS: kill the sim bridge mid-run, start a new one whose /clock starts
again from zero. The planner holds (fallback) at its rate meanwhile, and plans on the new
bridge's state within 0.5 s (of the new bridge's time) of its first message, without a restart
of the planner node."""
import itertools
import os
import signal
import time

import numpy as np
from hil import BLOCKED_S, Probe, log_tail

from planner_node import spec
from planner_node.ros.bringup import Bringup

_domains = itertools.count(215)


def _after(probe, topic, t):
    return [(a, m) for a, m in probe.msgs[topic] if a > t]


def test_bridge_restart_planner_holds_then_resumes(tmp_path, hgap_bundle):
    probe = Probe(next(_domains))
    try:
        with Bringup({"bundle": str(hgap_bundle), "lockstep": "false"}, log_dir=tmp_path) as b:
            try:
                probe.wait_for(lambda: len(probe.msgs["/planner/plan"]) > 30, 180, "the planner to plan")
                probe.wait_for(lambda: probe.sim_time() > 3.0, 60, "3 s of simulated time")
                old_clock = probe.sim_time()
                os.killpg(b.procs["sim_bridge"].pid, signal.SIGKILL)
                b.procs["sim_bridge"].wait()
                t_kill = time.monotonic()
                probe.spin(2.0)  # the planner alone: it must hold at its rate, without plans
                t_restart = time.monotonic()
                b.restart("sim_bridge")
                probe.wait_for(lambda: _after(probe, "/joint_states", t_restart), 120, "the new bridge's state")
                t_first = _after(probe, "/joint_states", t_restart)[0][0]
                probe.wait_for(lambda: _after(probe, "/planner/plan", t_first), 10, "a plan on the new bridge's state")
                t_plan = _after(probe, "/planner/plan", t_first)[0][0]
                probe.spin(2.5)
                alive = b.alive()
            except AssertionError as e:
                raise AssertionError(f"{e}\n{log_tail(tmp_path)}")
        d = probe.diagnostics()
    finally:
        probe.close()
    assert all(alive.values()), (alive, log_tail(tmp_path))
    new_clock = [m.clock.sec + 1e-9 * m.clock.nanosec for a, m in _after(probe, "/clock", t_restart)]
    assert new_clock and new_clock[0] < old_clock, "the new bridge's clock did not start again"
    held = [m.data for a, m in probe.msgs["/humanoid/joint_commands"] if t_kill + 0.3 < a < t_restart]
    # judged by when the node sent each plan: the probe does not spin while it kills the bridge,
    # so a plan sent just before the kill can reach its callback 0.3 s later (CI's first test)
    plans_while_down = [a for a in probe.sent["/planner/plan"] if t_kill + 0.3 < a < t_restart]
    print(f"bridge down {t_restart - t_kill:.1f} s: {len(held)} commands, {len(plans_while_down)} plans; "
          f"first plan {1e3 * (t_plan - t_first):.0f} ms after the new bridge's first state; diagnostics {d}")
    assert len(held) >= 0.5 * (t_restart - t_kill - 0.3) / spec.CONTROL_PERIOD_S, "the planner stopped commanding"
    assert not plans_while_down, f"planned on a stale state while the bridge was down\n{log_tail(tmp_path)}"
    assert np.all(np.isfinite(held))
    # The node times it: from the first state of the restarted clock it received to its next plan.
    # (Seen from this process the interval also holds DDS discovery of the new bridge by the
    # planner, which the planner cannot shorten: printed, not asserted.)
    states_before_plan = [m for a, m in _after(probe, "/joint_states", t_restart) if a < t_plan]
    print(f"seen by the probe: {len(states_before_plan)} new-bridge states before the first plan; "
          f"node: resumed {d['resume_after_clock_reset_ms']} ms after its first new state")
    assert 0 <= float(d["resume_after_clock_reset_ms"]) <= 1e3 * BLOCKED_S, d["resume_after_clock_reset_ms"]
    assert int(d["clock_resets"]) >= 1 and int(d["fallback_stale_state"]) > 0, d
    assert float(d["command_gap_max_ms"]) <= 1e3 * BLOCKED_S, d["command_gap_max_ms"]
