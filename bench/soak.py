#!/usr/bin/env python3
"""Soak: the realtime stack (sim bridge + planner node, shipped bundle) for a long run.

Samples the planner node's RSS every ``--sample`` seconds (the first after ``--warmup``), and at
the end reports RSS at start and end, its growth, ticks, deadline misses and fallbacks by reason,
rejections, the largest command gap, and whether any node crashed. The bridge resets the robot on
each fall (so the planner keeps planning on live states) and pushes it every 100 steps.

    python bench/soak.py [--seconds 3600] [--bundle bundles/default] [--out results/soak]
    python bench/soak.py --swap-every 60 [--swap-to bundles/hgap]   # a hot swap every minute, alternating

RSS growth is the node process's (long-lived); the current planner worker's RSS is sampled with it
(a new worker process per swap). With several ``--bundle``s each runs in turn and a table compares
them (``kinds.json``): ticks, misses, plan age, commands by source. The largest command gap is
measured both on the node's steady clock and as this process receives them.

``--view-ab RUNS``: the live view's cost to the command clock. RUNS realtime runs of ``--seconds``
each per condition, interleaved: no view; ``planner view --view web`` beside the stack (serving the
web viewer, no browser); and the same with a headless Chromium rendering the web viewer on this
machine too (``--browser``; needs Debian's chromium + chromium-driver). Mean and standard error
of the node's deadline figures per condition (``results/view/view_ab.json``).

    python bench/soak.py --view-ab 5 --seconds 60 [--browser]

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
            probe.received[topic].clear()
            probe.sent[topic].clear()
    del probe.msgs["/diagnostics"][:-20]
    probe.events.clear()


def _probe_gap(probe, gap: dict) -> None:
    """The largest interval between two commands as this process received them, across drains."""
    for t in probe.received["/humanoid/joint_commands"]:  # as this process's DDS received them
        if gap["last"] is not None:
            gap["max_s"] = max(gap["max_s"], t - gap["last"])
        gap["last"] = t


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
    ap.add_argument("--bundle", nargs="+", default=[str(ROOT / "bundles" / "default")],
                    help="one or more bundles, each run in turn for --seconds (the table compares them)")
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="RSS 'start' is taken after this [s]")
    ap.add_argument("--sample", type=float, default=60.0)
    ap.add_argument("--domain", type=int, help="ROS domain (default 58; --stand: 57)")
    ap.add_argument("--out", type=Path, help="default results/soak (--stand: results/long_stand)")
    ap.add_argument("--swap-every", type=float, default=0.0, help="hot-swap bundle_path every this many seconds (0: never)")
    ap.add_argument("--swap-to", default=str(ROOT / "bundles" / "hgap"), help="--swap-every: the other bundle")
    ap.add_argument("--stand", action="store_true", help="the stand soak instead (lockstep, no pushes, no reset)")
    ap.add_argument("--runs", type=int, default=5, help="--stand: runs")
    ap.add_argument("--steps", type=int, default=20000, help="--stand: simulation steps per run")
    ap.add_argument("--seed", type=int, default=71000, help="--stand: the first run's bridge seed")
    ap.add_argument("--view-ab", type=int, default=0, metavar="RUNS",
                    help="runs per condition: no view vs `planner view --view web` (see the module doc)")
    ap.add_argument("--browser", action="store_true", help="--view-ab: also a condition with a headless Chromium on the viewer")
    a = ap.parse_args()
    if a.view_ab:
        return view_ab_main(a)
    a.domain = a.domain if a.domain is not None else (57 if a.stand else 58)
    a.out = a.out or ROOT / "results" / ("long_stand" if a.stand else "soak")
    if a.stand:
        if len(a.bundle) != 1:
            ap.error("--stand takes one --bundle")
        a.bundle = a.bundle[0]
        return stand_main(a)
    a.out.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for i, bundle in enumerate(a.bundle):
        summaries[Path(bundle).name] = soak_realtime(a, bundle, a.domain - i)
    if len(summaries) > 1:
        from planner_node.atomic import write_json
        write_json(a.out / "kinds.json", summaries)
        cols = ("ticks", "deadline_misses", "fallbacks", "plan_age_p99_ms", "latency_p99_ms", "command_gap_max_ms",
                "bridge_falls")
        print(f"{'bundle':<16}{'kind':<10}" + "".join(f"{c:>20}" for c in cols) + f"{'fresh/shifted/fallback':>26}")
        for name, sm in summaries.items():
            c = sm["commands"]
            print(f"{name:<16}{sm['kind']:<10}" + "".join(f"{sm[k]:>20}" for k in cols)
                  + f"{c['fresh_plan']:>10}/{c['shifted_plan']}/{c['fallback']}")
        print("ticks = slots commanded: every slot had a command (fresh plan, shifted plan or fallback)")
    return 1 if any(sm["crashed"] for sm in summaries.values()) else 0


def soak_realtime(a, bundle: str, domain: int) -> dict:
    from hil import Probe

    from planner_node.atomic import write_json
    probe = Probe(domain)
    logs = Path(tempfile.mkdtemp(prefix="soak_"))
    series, crashed = [], {}
    bundles = [str(Path(bundle).resolve()), str(Path(a.swap_to).resolve())]
    swaps = {"requested": 0, "refused": 0}
    gap = {"last": None, "max_s": 0.0}
    t0 = time.monotonic()
    try:
        with stack(bundle, logs, reset_on_fall=True, push_every=100) as b:
            pid = b.procs["planner"].pid
            next_sample = t0 + a.warmup
            next_swap = t0 + a.warmup + (a.swap_every or float("inf"))
            while time.monotonic() - t0 < a.seconds:
                probe.spin(1.0)
                _probe_gap(probe, gap)
                drain(probe)
                dead = {n: p.returncode for n, p in b.procs.items() if p.poll() is not None}
                if dead:
                    crashed = dead
                    break
                if time.monotonic() >= next_swap:
                    swaps["requested"] += 1
                    res = probe.set_param("planner", "bundle_path", bundles[swaps["requested"] % 2])
                    swaps["refused"] += not res.successful
                    next_swap += a.swap_every
                if time.monotonic() >= next_sample:
                    d = probe.diagnostics()
                    worker = int(d.get("worker_pid", -1))
                    series.append({"t_s": round(time.monotonic() - t0, 1), "rss_mib": round(rss_mib(pid), 2),
                                   "worker_rss_mib": round(rss_mib(worker), 2) if worker > 0 else None,
                                   "ticks": int(d.get("ticks", 0)), "swaps": int(d.get("swaps", 0))})
                    print(f"[{series[-1]['t_s']:7.0f} s] planner RSS {series[-1]['rss_mib']:.1f} MiB "
                          f"(worker {series[-1]['worker_rss_mib']} MiB), ticks {series[-1]['ticks']}, "
                          f"swaps {series[-1]['swaps']}", flush=True)
                    next_sample += a.sample
            d, sim = probe.diagnostics(), probe.diagnostics("sim_bridge")
    finally:
        probe.close()
    start, end = series[0]["rss_mib"], series[-1]["rss_mib"]
    summary = {
        "seconds": round(time.monotonic() - t0, 1), "bundle": str(Path(bundle).name),
        "kind": _kind(bundle),
        "rss_start_mib": start, "rss_end_mib": end, "rss_growth_pct": round(100 * (end - start) / start, 3),
        "ticks": int(d.get("ticks", 0)), "deadline_misses": int(d.get("deadline_misses", 0)),
        "fallbacks": int(d.get("fallbacks", 0)), "fallbacks_by_reason": counters(d, "fallback_"),
        "rejected": {t: int(d.get(f"rejected_{t}", 0)) for t in ("joint_states", "odom", "cmd_vel")},
        "command_gap_max_ms": float(d.get("command_gap_max_ms", "nan")),
        "command_gap_max_probe_ms": round(1e3 * gap["max_s"], 1),
        "swaps": int(d.get("swaps", 0)), "swaps_requested": swaps["requested"], "swaps_refused": swaps["refused"],
        "worker_restarts": int(d.get("worker_restarts", 0)),
        "commands": {k: int(d.get(f"commands_{k}", 0)) for k in ("fresh_plan", "shifted_plan", "fallback")},
        "plan_age_p99_ms": float(d.get("plan_age_p99_ms", "nan")),
        "latency_p50_ms": float(d.get("latency_p50_ms", "nan")), "latency_p99_ms": float(d.get("latency_p99_ms", "nan")),
        "bridge_steps": int(sim.get("steps", 0)), "bridge_falls": int(sim.get("falls", 0)),
        "crashed": crashed, "rss_series": series,
    }
    write_json(a.out / ("soak.json" if len(a.bundle) == 1 else f"soak_{Path(bundle).name}.json"), summary)
    print(f"{'measure':<28}{'value':>14}")
    for k in ("seconds", "rss_start_mib", "rss_end_mib", "rss_growth_pct", "ticks", "swaps", "deadline_misses",
              "fallbacks", "command_gap_max_ms", "command_gap_max_probe_ms", "plan_age_p99_ms", "latency_p50_ms",
              "latency_p99_ms", "bridge_steps", "bridge_falls"):
        print(f"{k:<28}{summary[k]:>14}")
    print(f"fallbacks by reason: {summary['fallbacks_by_reason']}; rejected: {summary['rejected']}; "
          f"crashed: {crashed or 'none'}")
    print(json.dumps({k: v for k, v in summary.items() if k != "rss_series"}))
    return summary


AB_KEYS = ("deadline_misses", "late_commands", "commands_fallback", "command_gap_max_ms", "command_gap_max_probe_ms",
           "plan_age_p99_ms", "latency_p99_ms")


def view_ab_once(bundle: str, seconds: float, domain: int, view: str, port: int) -> dict:
    """One realtime run (shipped bundle, pushes every 100 steps, reset on falls): the node's figures."""
    from hil import Probe
    probe = Probe(domain)
    logs = Path(tempfile.mkdtemp(prefix="view_ab_"))
    args = None if view == "none" else ["--view", "web", "--web-port", str(port), "--grpc-port", str(port + 1)]
    gap, driver = {"last": None, "max_s": 0.0}, None
    try:
        with stack(bundle, logs, view=args, reset_on_fall=True, push_every=100) as b:
            probe.wait_for(lambda: probe.diagnostics().get("ticks", "0") != "0", 60, "the planner's first diagnostics")
            if args:  # measured once the viewer draws (its start-up is not what is compared)
                probe.wait_for(lambda: probe.diagnostics("planner_view").get("poses", "0") != "0", 60, "the view's first pose")
            if view == "browser":
                import web_view
                from planner_node.ros.bringup import web_url
                driver = web_view.chrome()
                driver.get(web_url(args))
                probe.spin(20.0)  # the page loads and starts drawing
            probe.spin(2.0)
            _probe_gap(probe, gap)
            drain(probe)
            gap = {"last": None, "max_s": 0.0}
            t0 = time.monotonic()
            start = probe.diagnostics()
            while time.monotonic() - t0 < seconds:
                probe.spin(1.0)
                _probe_gap(probe, gap)
                drain(probe)
            d = probe.diagnostics()
            dead = {n: p.returncode for n, p in b.procs.items() if p.poll() is not None}
    finally:
        if driver is not None:
            driver.quit()
        probe.close()
    out = {k: float(d.get(k, "nan")) - (float(start.get(k, 0)) if k in ("deadline_misses", "late_commands",
                                                                          "commands_fallback") else 0.0)
           for k in AB_KEYS if k != "command_gap_max_probe_ms"}
    out["command_gap_max_probe_ms"] = round(1e3 * gap["max_s"], 1)
    out["ticks"] = int(d.get("ticks", 0)) - int(start.get("ticks", 0))
    out["crashed"] = dead
    return out


def view_ab_main(a) -> int:
    import numpy as np

    from planner_node.atomic import write_json
    conditions = ["none", "web"] + (["browser"] if a.browser else [])
    runs: dict[str, list[dict]] = {c: [] for c in conditions}
    domain = a.domain or 56
    for i in range(a.view_ab):
        for c in conditions:  # interleaved: drift in the machine's load hits every condition alike
            r = view_ab_once(a.bundle[0], a.seconds, domain, c, 9100 + 10 * i + 3 * conditions.index(c))
            runs[c].append(r)
            print(f"run {i} {c:<8}" + " ".join(f"{k} {r[k]:.1f}" for k in AB_KEYS) + f" ticks {r['ticks']}", flush=True)

    def mse(vals):
        v = np.asarray(vals, float)
        return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    table = {c: {k: mse([r[k] for r in rs]) for k in AB_KEYS + ("ticks",)} for c, rs in runs.items()}
    print(f"{'measure':<28}" + "".join(f"{c:>22}" for c in conditions))
    for k in AB_KEYS + ("ticks",):
        print(f"{k:<28}" + "".join(f"{table[c][k][0]:>13.2f} ± {table[c][k][1]:<6.2f}" for c in conditions))
    out = a.out or ROOT / "results" / "view"
    write_json(Path(out) / "view_ab.json", {"seconds": a.seconds, "runs_per_condition": a.view_ab,
                                            "bundle": str(a.bundle[0]), "conditions": conditions,
                                            "mean_se": table, "runs": runs})
    return 1 if any(r["crashed"] for rs in runs.values() for r in rs) else 0


def _kind(bundle: str) -> str:
    import yaml
    return yaml.safe_load((Path(bundle) / "manifest.yaml").read_text())["planner"]


if __name__ == "__main__":
    sys.exit(main())
