#!/usr/bin/env python3
"""Soak: the realtime stack (sim bridge + planner node, shipped bundle) for a long run.

Samples the planner node's RSS every ``--sample`` seconds (the first after ``--warmup``), and at
the end reports RSS at start and end, its growth, ticks, deadline misses and fallbacks by reason,
rejections, the largest command gap, and whether any node crashed. The bridge resets the robot on
each fall (so the planner keeps planning on live states) and pushes it every 100 steps.

    python bench/soak.py [--seconds 3600] [--bundle bundles/default] [--out results/soak]

``--stand``: the stand soak. Lockstep and as fast as the planner answers, task stand, no pushes,
no reset on a fall, for ``--steps`` simulation steps (20,000 = 10 simulated minutes), ``--runs``
times with bridge seeds ``--seed``+i: whether the robot is up at the end and, if it fell, the
step the bridge's 1 Hz /diagnostics first showed the fall (within a second of wall time).

    python bench/soak.py --stand [--runs 5] [--steps 20000] [--bundle bundles/default] [--seed 71000]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from stack import ROOT, counters, rss_mib, stack


def drain(probe) -> None:
    """Keep the probe's own memory flat on a long run: only the latest diagnostics are read."""
    for topic in list(probe.msgs):
        if topic != "/diagnostics":
            probe.msgs[topic].clear()
    del probe.msgs["/diagnostics"][:-20]
    probe.events.clear()


def soak_once(bundle: str, steps: int, seed: int, domain: int, log_dir: Path) -> dict:
    from hil import Probe

    from planner_node.ros.bringup import Bringup
    probe = Probe(domain)
    t0 = time.monotonic()
    fell_at, sim, crashed = None, {}, {}
    try:
        bridge = {"seed": seed, "push_every": 0, "reset_on_fall": False, "max_steps": steps,
                  "lockstep_timeout_s": 5.0}
        with Bringup({"bundle": bundle, "lockstep": "true", "task": "stand"}, extra={"sim_bridge": bridge},
                     log_dir=log_dir) as b:
            while True:
                probe.spin(1.0)
                drain(probe)
                crashed = {n: p.returncode for n, p in b.procs.items() if p.poll() is not None}
                sim = probe.diagnostics("sim_bridge")
                n = int(sim.get("steps", 0))
                if crashed or (fell_at is None and int(sim.get("falls", 0)) > 0):
                    fell_at = n if not crashed else None
                    break
                if n >= steps:
                    break
    finally:
        probe.close()
    return {"seed": seed, "steps": int(sim.get("steps", 0)), "up_at_end": fell_at is None and not crashed,
            "fell_at_step": fell_at, "crashed": crashed, "wall_s": round(time.monotonic() - t0, 1)}


def stand_main(a) -> int:
    """``--stand``: the stand soak (see the module docstring)."""
    from planner_node.atomic import write_json
    a.out.mkdir(parents=True, exist_ok=True)
    runs = []
    print(f"{'run':>4}{'seed':>8}{'steps':>8}{'up at end':>11}{'fell at':>9}{'wall s':>8}")
    for i in range(a.runs):
        r = soak_once(a.bundle, a.steps, a.seed + i, a.domain, Path(tempfile.mkdtemp(prefix="stand_soak_")))
        runs.append(r)
        print(f"{i:>4}{r['seed']:>8}{r['steps']:>8}{str(r['up_at_end']):>11}{str(r['fell_at_step']):>9}"
              f"{r['wall_s']:>8}" + (f"  crashed {r['crashed']}" if r["crashed"] else ""), flush=True)
    up = sum(r["up_at_end"] for r in runs)
    summary = {"bundle": Path(a.bundle).name, "steps": a.steps, "runs": runs, "up_at_end": up}
    out = a.out / f"soak_{Path(a.bundle).name}.json"
    write_json(out, summary)
    print(f"up at the end of {a.steps} steps: {up} of {len(runs)} ({Path(a.bundle).name}); wrote {out}")
    return 0



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "bundles" / "default"))
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="RSS 'start' is taken after this [s]")
    ap.add_argument("--sample", type=float, default=60.0)
    ap.add_argument("--domain", type=int, help="ROS domain (default 58; --stand: 57)")
    ap.add_argument("--out", type=Path, help="default results/soak (--stand: results/long_stand)")
    ap.add_argument("--stand", action="store_true", help="the stand soak instead (lockstep, no pushes, no reset)")
    ap.add_argument("--runs", type=int, default=5, help="--stand: runs")
    ap.add_argument("--steps", type=int, default=20000, help="--stand: simulation steps per run")
    ap.add_argument("--seed", type=int, default=71000, help="--stand: the first run's bridge seed")
    a = ap.parse_args()
    a.domain = a.domain if a.domain is not None else (57 if a.stand else 58)
    a.out = a.out or ROOT / "results" / ("long_stand" if a.stand else "soak")
    if a.stand:
        return stand_main(a)
    from hil import Probe

    from planner_node.atomic import write_json
    a.out.mkdir(parents=True, exist_ok=True)
    probe = Probe(a.domain)
    logs = Path(tempfile.mkdtemp(prefix="soak_"))
    series, crashed = [], {}
    t0 = time.monotonic()
    try:
        with stack(a.bundle, logs, reset_on_fall=True, push_every=100) as b:
            pid = b.procs["planner"].pid
            next_sample = t0 + a.warmup
            while time.monotonic() - t0 < a.seconds:
                probe.spin(1.0)
                drain(probe)
                dead = {n: p.returncode for n, p in b.procs.items() if p.poll() is not None}
                if dead:
                    crashed = dead
                    break
                if time.monotonic() >= next_sample:
                    d = probe.diagnostics()
                    series.append({"t_s": round(time.monotonic() - t0, 1), "rss_mib": round(rss_mib(pid), 2),
                                   "ticks": int(d.get("ticks", 0))})
                    print(f"[{series[-1]['t_s']:7.0f} s] planner RSS {series[-1]['rss_mib']:.1f} MiB, "
                          f"ticks {series[-1]['ticks']}", flush=True)
                    next_sample += a.sample
            d, sim = probe.diagnostics(), probe.diagnostics("sim_bridge")
    finally:
        probe.close()
    start, end = series[0]["rss_mib"], series[-1]["rss_mib"]
    summary = {
        "seconds": round(time.monotonic() - t0, 1), "bundle": str(Path(a.bundle).name),
        "rss_start_mib": start, "rss_end_mib": end, "rss_growth_pct": round(100 * (end - start) / start, 3),
        "ticks": int(d.get("ticks", 0)), "deadline_misses": int(d.get("deadline_misses", 0)),
        "fallbacks": int(d.get("fallbacks", 0)), "fallbacks_by_reason": counters(d, "fallback_"),
        "rejected": {t: int(d.get(f"rejected_{t}", 0)) for t in ("joint_states", "odom", "cmd_vel")},
        "command_gap_max_ms": float(d.get("command_gap_max_ms", "nan")),
        "latency_p50_ms": float(d.get("latency_p50_ms", "nan")), "latency_p99_ms": float(d.get("latency_p99_ms", "nan")),
        "bridge_steps": int(sim.get("steps", 0)), "bridge_falls": int(sim.get("falls", 0)),
        "crashed": crashed, "rss_series": series,
    }
    write_json(a.out / "soak.json", summary)
    print(f"{'measure':<28}{'value':>14}")
    for k in ("seconds", "rss_start_mib", "rss_end_mib", "rss_growth_pct", "ticks", "deadline_misses", "fallbacks",
              "command_gap_max_ms", "latency_p50_ms", "latency_p99_ms", "bridge_steps", "bridge_falls"):
        print(f"{k:<28}{summary[k]:>14}")
    print(f"fallbacks by reason: {summary['fallbacks_by_reason']}; rejected: {summary['rejected']}; "
          f"crashed: {crashed or 'none'}")
    print(f"wrote {a.out / 'soak.json'}")
    print(json.dumps({k: v for k, v in summary.items() if k != "rss_series"}))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
