#!/usr/bin/env python3
"""State -> command latency through the planner node over ROS 2 vs the plan latency alone (same run).

Starts the planner node (real time, not lockstep) with a bundle; this process publishes
/joint_states + /odom at the control rate and timestamps each state; the latency of a state is
the time until the first command after it arrives. The same bundle's runtime planner is then
timed in-process on the same observations. Prints p50/p99/max of both and their difference
(ROS 2 transport + node overhead).

    python bench/ros_latency.py [--bundle bundles/default] [--seconds 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="bundles/default")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--domain", type=int, default=57)
    a = ap.parse_args()
    from hil import Probe
    from nav_msgs.msg import Odometry
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import JointState

    from planner_node.ros.bringup import Bringup
    from planner_node.planning import PlanRequest
    from planner_node.runtime.bundle_planner import runtime_planner
    from planner_node.sim.env import HumanoidEnv
    from test_hil import _state_msgs

    env = HumanoidEnv()
    env.reset(0)
    probe = Probe(a.domain)
    pub_js = probe.node.create_publisher(JointState, "/joint_states", 10)
    pub_od = probe.node.create_publisher(Odometry, "/odom", 10)
    pub_clock = probe.node.create_publisher(Clock, "/clock", 10)  # the node runs on /clock (use_sim_time)
    cmd = Bringup({"bundle": a.bundle}).cmds["planner"]
    import subprocess
    proc = subprocess.Popen(cmd, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    lat = []
    try:
        probe.wait_for(lambda: "latency_p50_ms" in probe.diagnostics(), 120, "the planner node")
        t_sim, end = 0.0, time.monotonic() + a.seconds
        while time.monotonic() < end:
            t_sim += 0.03
            js, od = _state_msgs(env, t_sim)
            n = len(probe.msgs["/humanoid/joint_commands"])
            t0 = time.monotonic()
            pub_clock.publish(Clock(clock=js.header.stamp))
            pub_od.publish(od)
            pub_js.publish(js)
            while time.monotonic() - t0 < 0.03:
                probe.executor.spin_once(timeout_sec=0.002)
                if len(probe.msgs["/humanoid/joint_commands"]) > n and not lat or (lat and lat[-1][0] != t_sim and
                                                                                  len(probe.msgs["/humanoid/joint_commands"]) > n):
                    lat.append((t_sim, (probe.msgs["/humanoid/joint_commands"][-1][0] - t0) * 1e3))
            env.step(env.zero_action)
        diag = probe.diagnostics()
    finally:
        proc.send_signal(2)
        proc.wait(10)
        probe.close()
    ros = np.array([x[1] for x in lat])
    planner = runtime_planner(a.bundle, seed=0)
    env.reset(0)
    obs, plan_ms = env.observation(), []
    for _ in range(len(ros) or 100):
        t = time.perf_counter()
        planner.plan(PlanRequest(obs=obs, task="stand"))
        plan_ms.append((time.perf_counter() - t) * 1e3)
        obs, _ = env.step(env.zero_action)
    plan_ms = np.array(plan_ms)
    print(f"{'measure':<38}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'n':>6}")
    for name, x in (("state -> command over ROS 2 (node)", ros), ("plan alone (same bundle, in-process)", plan_ms)):
        print(f"{name:<38}{np.percentile(x, 50):>9.2f}{np.percentile(x, 99):>9.2f}{x.max():>9.2f}{len(x):>6}")
    print(f"overhead (ROS 2 transport + node, p50): {np.percentile(ros, 50) - np.percentile(plan_ms, 50):.2f} ms; "
          f"node diagnostics: {diag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
