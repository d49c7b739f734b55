#!/usr/bin/env python3
"""Collect `planner eval --json` results into one table (rows: task; columns: planner setting).

    python bench/eval_table.py results/*.json [--markdown]
"""
from __future__ import annotations

import argparse
import json
import sys
import os
from collections import defaultdict

from planner_node.sim.evaluate import se_return


def label(r: dict) -> str:
    p = r.get("planner", "?")
    if p == "mppi":
        return f"mppi@{r['budget_ms']:g}ms" if r.get("budget_ms") else "mppi offline"
    tags = []
    for key in ("checkpoint", "bundle"):
        if r.get(key):
            tags.append(os.path.basename(os.path.normpath(r[key])))
    if r.get("score"):
        tags.append(r["score"] + (f":{os.path.basename(os.path.normpath(r['critic']))}" if r.get("critic") else ""))
    tags += [f"{k}={v}" for k, v in (r.get("settings") or {}).items()]
    if r.get("temperature") is not None:
        tags.append(f"T={r['temperature']:g}")
    return f"{p}[{','.join(tags)}]" if tags else p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--against", nargs="+", default=[], metavar="COLUMN",
                    help="also count, for every other column, the tasks it wins / ties / loses against these "
                         "columns (a win: the return margin exceeds the two standard errors combined)")
    a = ap.parse_args()
    cells, cols, tasks = defaultdict(dict), [], []
    for f in a.files:
        r = json.load(open(f))
        c = label(r)
        cols += [c] if c not in cols else []
        tasks += [r["task"]] if r["task"] not in tasks else []
        cells[r["task"]][c] = r

    def fmt(r):  # mean return ± standard error over episodes, mean length, fall rate, control steps/s
        if not r:
            return "-"
        se = se_return(r)
        return (f"{r['mean_return']:.1f}±{se:.1f} ({r['mean_length']:.0f} st, "
                f"{r['fall_rate']:.0%} fall, {r['ctrl_steps_per_s']:.1f}/s)")
    counts = sorted({str(len(r.get("episodes", []))) for t in tasks for r in cells[t].values()})
    print(f"cells: mean return ± standard error ({', '.join(counts)} episodes), mean length in steps, fall rate, "
          "control steps per second")
    if a.markdown:
        print("| task | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        for t in tasks:
            print(f"| {t} | " + " | ".join(fmt(cells[t].get(c)) for c in cols) + " |")
    else:
        w = max(len(fmt(r)) for t in tasks for r in cells[t].values()) + 2
        print(f"{'task':<12}" + "".join(f"{c:<{w}}" for c in cols))
        for t in tasks:
            print(f"{t:<12}" + "".join(f"{fmt(cells[t].get(c)):<{w}}" for c in cols))
    for base in a.against:
        if base not in cols:
            raise SystemExit(f"--against {base!r}: no such column; columns: {', '.join(cols)}")
        for c in cols:
            if c == base:
                continue
            w = t_ = lo = 0
            for t in tasks:
                x, y = cells[t].get(c), cells[t].get(base)
                if not x or not y:
                    continue
                d, s = x["mean_return"] - y["mean_return"], (se_return(x) ** 2 + se_return(y) ** 2) ** 0.5
                w, t_, lo = w + (d > s), t_ + (abs(d) <= s), lo + (d < -s)
            print(f"{c} against {base}: wins {w}, ties {t_}, losses {lo} (of {w + t_ + lo} tasks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
