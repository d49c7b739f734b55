#!/usr/bin/env python3
"""Malformed-state flood next to the sim bridge's real stream (realtime, shipped bundle).

Phase 1 runs the stack for ``--seconds`` without a flood; phase 2 as long while publishing
``--messages`` malformed /joint_states, /odom and /cmd_vel messages of every class in
``planner_node.ros.fuzz`` (evenly spread). Same run, same stack. Reports per phase: the command
rate, commands that are non-finite or outside the joint ranges, commands from fresh plans, and
the largest gap; and every rejection counter.

    python bench/fuzz_flood.py [--messages 10000] [--seconds 60]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from stack import ROOT, counters, stack


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "bundles" / "default"))
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--domain", type=int, default=56)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "fuzz_flood")
    a = ap.parse_args()
    from geometry_msgs.msg import Twist
    from hil import Probe
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import JointState
    from test_fuzz import JOINT_RANGE, latest_valid

    from planner_node.atomic import write_json
    from planner_node.ros.fuzz import CLASSES, malformed
    lo, hi = JOINT_RANGE.T
    probe = Probe(a.domain)
    phases = {}
    try:
        with stack(a.bundle, Path(tempfile.mkdtemp(prefix="flood_")), reset_on_fall=True) as b:
            probe.wait_for(lambda: len(probe.msgs["/planner/plan"]) > 30, 180, "the planner to plan")
            pubs = {"/joint_states": probe.node.create_publisher(JointState, "/joint_states", 10),
                    "/odom": probe.node.create_publisher(Odometry, "/odom", 10),
                    "/cmd_vel": probe.node.create_publisher(Twist, "/cmd_vel", 10)}
            probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 30, "subscribers")
            rng, kinds = np.random.default_rng(0), list(CLASSES)
            for phase in ("no flood", "flood"):
                for topic in ("/humanoid/joint_commands", "/planner/plan"):
                    probe.msgs[topic].clear()
                d0 = probe.diagnostics()
                t0 = time.monotonic()
                if phase == "no flood":
                    probe.spin(a.seconds)
                else:
                    interval = a.seconds / a.messages
                    for k in range(a.messages):
                        js, od = latest_valid(probe, "/joint_states"), latest_valid(probe, "/odom")
                        topic, msg = malformed(kinds[k % len(kinds)], js, od, probe.sim_time() + 0.005, rng)
                        pubs[topic].publish(msg)
                        due = t0 + (k + 1) * interval
                        while time.monotonic() < due:
                            probe.executor.spin_once(timeout_sec=max(0.0, due - time.monotonic()))
                seconds = time.monotonic() - t0
                cmds = np.array([m.data for _, m in probe.msgs["/humanoid/joint_commands"]])
                times = [t for t, _ in probe.msgs["/humanoid/joint_commands"]]
                n_plans = len(probe.msgs["/planner/plan"])
                probe.spin(2.2)
                d1 = probe.diagnostics()
                bad = ~np.isfinite(cmds).all(1) | ((cmds < lo - 1e-6) | (cmds > hi + 1e-6)).any(1)
                phases[phase] = {"seconds": round(seconds, 1), "commands": len(cmds),
                                 "rate_hz": round(len(cmds) / seconds, 2), "unsafe_commands": int(bad.sum()),
                                 "from_fresh_plans": n_plans, "max_gap_ms": round(1e3 * float(np.max(np.diff(times))), 1),
                                 "rejected": {k: v - counters(d0, "rejected_").get(k, 0)
                                              for k, v in counters(d1, "rejected_").items()},
                                 "deadline_misses": int(d1.get("deadline_misses", 0)) - int(d0.get("deadline_misses", 0)),
                                 "node_gap_max_ms_so_far": float(d1.get("command_gap_max_ms", "nan"))}
                print(f"{phase}: {phases[phase]}", flush=True)
            alive = b.alive()
    finally:
        probe.close()
    summary = {"messages": a.messages, "phases": phases, "alive": alive,
               "rate_ratio": round(phases["flood"]["rate_hz"] / phases["no flood"]["rate_hz"], 3)}
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "fuzz_flood.json", summary)
    print(f"{'phase':<10}{'s':>6}{'commands':>10}{'rate Hz':>9}{'unsafe':>8}{'fresh plans':>13}{'max gap ms':>12}{'misses':>8}")
    for name, p in phases.items():
        print(f"{name:<10}{p['seconds']:>6.0f}{p['commands']:>10}{p['rate_hz']:>9.2f}{p['unsafe_commands']:>8}"
              f"{p['from_fresh_plans']:>13}{p['max_gap_ms']:>12.1f}{p['deadline_misses']:>8}")
    print(f"command rate under the flood / without: {summary['rate_ratio']:.3f}; largest command gap on the node's "
          f"steady clock: {phases['no flood']['node_gap_max_ms_so_far']:.1f} ms after phase 1, "
          f"{phases['flood']['node_gap_max_ms_so_far']:.1f} ms after phase 2; alive {alive}")
    print("rejected during the flood, by topic_reason:", phases["flood"]["rejected"])
    print(json.dumps(summary))
    return 0 if all(alive.values()) and phases["flood"]["unsafe_commands"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
