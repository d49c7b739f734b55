"""The chunk policy's ``task_weights``, weight against weight in the same run: per task, the
policy reads W x the task's one-hot + (1 - W) x stand's (W = 1: the task as trained; 0:
standing). Mean return ± standard error, mean episode length, falls and return per step over the
same seeds for each W; per task the chosen W is the largest whose mean return is within one
standard error of the best (more of the task where it costs nothing measurable).

    python experiments/task_weights.py --bundle bundles/default [--schedule A] [--tasks rotate_x ...]
        [--weights 0 0.15 0.3 0.5 0.7 1] [--episodes 20] [--steps 300] [--json OUT.json] [--plot OUT.png]

Return per step shows what a lower W trades: every task's reward is healthy x (1 + its rate), so
a step upright earns 1 and the task's rate adds to it (rotate_z at W = 1 earns 2.2 per step by
spinning, and falls after ~60 steps). Schedules as in bench/stay_up.sh: A = 0.25 m/s every 100
steps, seeds 0+; B = 0.3 m/s every 67, seeds 9000+; C = 0.35 m/s every 80, seeds 7000+.
"""
from __future__ import annotations

import argparse

import numpy as np

SCHEDULES = {"A": (100, 0.25, 0), "B": (67, 0.3, 9000), "C": (80, 0.35, 7000)}


def stats(r: dict) -> dict:
    rets = np.array([e["return"] for e in r["episodes"]])
    lengths = np.array([e["length"] for e in r["episodes"]])
    return {"return": float(rets.mean()), "se": float(rets.std(ddof=1) / np.sqrt(len(rets))),
            "length": float(lengths.mean()), "falls": int(sum(e["fell"] for e in r["episodes"])),
            "per_step": float(rets.sum() / max(lengths.sum(), 1))}


def choose(cells: dict[float, dict]) -> float:
    """The largest W whose mean return is within one standard error of the best W's."""
    best = max(cells.values(), key=lambda c: c["return"])
    return max(w for w, c in cells.items() if c["return"] >= best["return"] - best["se"])


def plot(path: str, tasks: list[str], weights: list[float], table: dict, chosen: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for t in tasks:
        c = [table[t][w] for w in weights]
        line = ax.errorbar(weights, [x["return"] for x in c], yerr=[x["se"] for x in c], marker="o", capsize=2, label=t)
        bx.plot(weights, [x["length"] for x in c], marker="o", color=line[0].get_color())
        ax.plot([chosen[t]], [table[t][chosen[t]]["return"]], "k*", ms=12)
    ax.set(xlabel="task weight W (0 = stand's conditioning)", ylabel="mean return ± s.e.", title="return (★ chosen)")
    bx.set(xlabel="task weight W", ylabel="mean episode length [steps of 30 ms]", title="episode length")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    from planner_node.atomic import write_json
    from planner_node.runtime.bundle_planner import runtime_planner
    from planner_node.sim.env import EnvConfig
    from planner_node.sim.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="bundles/default")
    ap.add_argument("--schedule", default="A", choices=sorted(SCHEDULES))
    ap.add_argument("--tasks", nargs="+", default=["rotate_x", "rotate_y", "rotate_z", "shift_left", "forward"])
    ap.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.15, 0.3, 0.5, 0.7, 1.0])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--json")
    ap.add_argument("--plot")
    a = ap.parse_args()
    every, speed, seed = SCHEDULES[a.schedule]
    env = EnvConfig(push_every=every, push_speed=speed)
    print(f"{a.bundle}, schedule {a.schedule} ({speed} m/s every {every} steps, seeds {seed}+), "
          f"{a.episodes} x {a.steps} steps; cells: return ± s.e. (mean length, falls, return per step)")
    print("W      " + "".join(f"{t:>32}" for t in a.tasks))
    table: dict[str, dict[float, dict]] = {t: {} for t in a.tasks}
    raw = []
    for w in a.weights:
        cells = []
        for t in a.tasks:
            planner = runtime_planner(a.bundle, task_weights=f"{t}:{w}")
            r = evaluate(planner, t, a.episodes, seed, a.steps, env, progress=False)
            c = table[t][w] = stats(r)
            raw.append({"task": t, "weight": w, **r})
            cells.append(f"{c['return']:6.1f} ± {c['se']:4.1f} ({c['length']:3.0f}, {c['falls']:2d}, {c['per_step']:.2f})")
        print(f"{w:<7.2f}" + "".join(f"{c:>32}" for c in cells), flush=True)
    chosen = {t: choose(table[t]) for t in a.tasks}
    print("chosen: " + ",".join(f"{t}:{w:g}" for t, w in chosen.items()))
    if a.json:
        write_json(a.json, {"bundle": a.bundle, "schedule": a.schedule, "chosen": chosen,
                            "table": {t: {str(w): c for w, c in cells.items()} for t, cells in table.items()},
                            "runs": raw})
    if a.plot:
        plot(a.plot, a.tasks, a.weights, table, chosen)


if __name__ == "__main__":
    main()
