#!/usr/bin/env python3
"""Sampling settings of a bundle's planner, each measured with the oracle column: the same
candidates chosen by the model's scores, by true rollouts (oracle) and by the oracle with the
previous plan as one more candidate. A setting that raises the oracle's column made better
proposals; one that raises only the model's column made scoring easier (issue "stay up").

Runs ``planner eval --score oracle`` per setting (finished JSON files are kept: it resumes) and
prints mean episode length and return ± standard error per row. Same seeds for every setting.

    python experiments/sampling_sweep.py [--bundle bundles/hgap] [--task stand] [--temperatures 1 2 3]
                                   [--episodes 10] [--steps 150] [--seed 9001] [--out results/stay_up/sweep]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def se(x) -> float:
    x = np.asarray(x, float)
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="bundles/hgap")
    ap.add_argument("--task", default="stand")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=9001)
    ap.add_argument("--push-every", type=int, default=67)
    ap.add_argument("--push-speed", type=float, default=0.3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="results/stay_up/sweep")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    planner = [str(Path(sys.executable).with_name("planner"))]
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "RAY_USAGE_STATS_ENABLED": "0"}
    rows = []
    for temp in a.temperatures:
        f = out / f"{Path(a.bundle).name}_T{temp:g}_{a.task}.json"
        if not f.exists():
            subprocess.run([*planner, "eval", "--bundle", a.bundle, "--task", a.task, "--temperature", str(temp),
                            "--score", "oracle", "--episodes", str(a.episodes), "--steps", str(a.steps),
                            "--seed", str(a.seed), "--push-every", str(a.push_every), "--push-speed", str(a.push_speed),
                            "--workers", str(a.workers), "--quiet", "--json", str(f)], check=True, env=env,
                           stdout=subprocess.DEVNULL)
        for r in json.loads(f.read_text())["rows"]:
            lengths = [e["length"] for e in r["episodes"]]
            returns = [e["return"] for e in r["episodes"]]
            rows.append((temp, r["score"], np.mean(lengths), se(lengths), np.mean(returns), se(returns),
                         float(np.mean([e["fell"] for e in r["episodes"]]))))
    print(f"{a.bundle} on {a.task}: {a.episodes} episodes x {a.steps} steps, seeds {a.seed}+, pushes "
          f"{a.push_speed} m/s every {a.push_every} steps; mean ± standard error")
    print(f"{'T':>5}  {'scoring':<22}{'length':>16}{'return':>18}{'falls':>7}")
    for temp, mode, ml, sl, mr, sr, fall in rows:
        print(f"{temp:>5g}  {mode:<22}{ml:>9.1f} ± {sl:<4.1f}{mr:>11.1f} ± {sr:<4.1f}{fall:>7.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
