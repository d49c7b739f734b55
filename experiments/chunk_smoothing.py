"""Temporal ensembling of the chunk policy, setting against setting in the same run: mean return ±
standard error, mean episode length and falls over the same seeds for each (overlap, decay).

    python experiments/chunk_smoothing.py --bundle bundles/default [--schedule A] [--tasks stand forward ...]
        [--episodes 20] [--steps 300] [--settings 1:0 8:0.2 8:0.5 8:1.0] [--json OUT.json]

A setting is OVERLAP:DECAY (1:0 = the newest chunk alone, no blending). Schedules as in
bench/stay_up.sh: A = 0.25 m/s every 100 steps, seeds 0+; B = 0.3 m/s every 67, seeds 9000+;
C = 0.35 m/s every 80, seeds 7000+.
"""
from __future__ import annotations

import argparse

import numpy as np

SCHEDULES = {"A": (100, 0.25, 0), "B": (67, 0.3, 9000), "C": (80, 0.35, 7000)}


def main() -> None:
    from planner_node.atomic import write_json
    from planner_node.runtime.bundle_planner import runtime_planner
    from planner_node.sim.env import EnvConfig
    from planner_node.sim.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="bundles/default")
    ap.add_argument("--schedule", default="A", choices=sorted(SCHEDULES))
    ap.add_argument("--tasks", nargs="+", default=["stand", "speed", "forward", "shift_left", "jump"])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--settings", nargs="+", default=["1:0", "8:0.2", "8:0.5", "8:1.0"])
    ap.add_argument("--json")
    a = ap.parse_args()
    every, speed, seed = SCHEDULES[a.schedule]
    env = EnvConfig(push_every=every, push_speed=speed)
    rows = []
    print(f"{a.bundle}, schedule {a.schedule} ({speed} m/s every {every} steps, seeds {seed}+), "
          f"{a.episodes} x {a.steps} steps; cells: return ± s.e. (mean length, falls)")
    print("setting      " + "".join(f"{t:>26}" for t in a.tasks) + "   mean length")
    for s in a.settings:
        overlap, decay = s.split(":")
        planner = runtime_planner(a.bundle, overlap=int(overlap), decay=float(decay))
        res = [evaluate(planner, t, a.episodes, seed, a.steps, env, progress=False) for t in a.tasks]
        cells = []
        for r in res:
            rets = np.array([e["return"] for e in r["episodes"]])
            cells.append(f"{rets.mean():7.1f} ± {rets.std(ddof=1) / np.sqrt(len(rets)):4.1f} "
                         f"({r['mean_length']:3.0f}, {sum(e['fell'] for e in r['episodes']):2d})")
        mean_len = float(np.mean([r["mean_length"] for r in res]))
        print(f"{s:<13}" + "".join(f"{c:>26}" for c in cells) + f"   {mean_len:8.1f}", flush=True)
        rows.append({"overlap": int(overlap), "decay": float(decay), "mean_length": mean_len, "tasks": res})
    if a.json:
        write_json(a.json, {"bundle": a.bundle, "schedule": a.schedule, "rows": rows})


if __name__ == "__main__":
    main()
