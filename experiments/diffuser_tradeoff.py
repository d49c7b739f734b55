#!/usr/bin/env python3
"""Diffuser's speed/quality trade-off: sampler steps x warm start x samples.

For each setting, a bundle is exported from the run (the runtime planner, ONNX Runtime, one
thread) and evaluated closed loop on the tasks with pushes, in this one process, one episode
at a time, so each plan's latency is measured with nothing else running. The paper's planner
(20 guided DDPM steps, 64 samples ranked by value) is the first row: through the runtime it
makes the reference's plans draw for draw (test/test_diffuser.py), so its return is the
reference's. Prints the table (mean return over every task's episodes +- standard error, its
share of the reference's, fall rate, mean length, plan latency p50/p99) and writes
``OUT/tradeoff.json`` and ``OUT/tradeoff.png``. Finished (setting, task) results are kept in
``OUT/raw/``, so a killed run resumes.

    python experiments/diffuser_tradeoff.py --checkpoint runs/diffuser_small --out results/diffuser/tradeoff
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

TASKS = ("stand", "speed", "forward", "backward", "shift_left", "jump", "rotate_x", "rotate_y", "rotate_z", "track")

#: name -> settings; the first is the paper's planner (the reference).
SETTINGS = {
    "ddpm20_guided_s64": {"samples": 64, "sampler": "ddpm", "guide": "gradient"},
    "ddpm20_rank_s64": {"samples": 64, "sampler": "ddpm", "guide": "rank"},
    "ddim4_rank_s64": {"samples": 64, "sampler": "ddim", "steps": 4, "guide": "rank"},
    "warm1_t4_rank_s64": {"samples": 64, "sampler": "warm", "steps": 1, "warm_start": 4, "guide": "rank"},
    "warm2_t4_rank_s64": {"samples": 64, "sampler": "warm", "steps": 2, "warm_start": 4, "guide": "rank"},
    "warm2_t4_guided_s64": {"samples": 64, "sampler": "warm", "steps": 2, "warm_start": 4, "guide": "gradient"},
    "warm2_t9_rank_s64": {"samples": 64, "sampler": "warm", "steps": 2, "warm_start": 9, "guide": "rank"},
    "warm2_t4_rank_s32": {"samples": 32, "sampler": "warm", "steps": 2, "warm_start": 4, "guide": "rank"},
    "warm2_t4_guided_s32": {"samples": 32, "sampler": "warm", "steps": 2, "warm_start": 4, "guide": "gradient"},
    "warm2_t4_rank_s16": {"samples": 16, "sampler": "warm", "steps": 2, "warm_start": 4, "guide": "rank"},
    "warm1_t4_rank_s16": {"samples": 16, "sampler": "warm", "steps": 1, "warm_start": 4, "guide": "rank"},
}


def se(x) -> float:
    x = np.asarray(x, float)
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def run_setting(name: str, settings: dict, a, bundles: Path, raw: Path) -> dict:
    from planner_node.export.bundle_writer import export_bundle
    from planner_node.runtime.bundle_planner import runtime_planner
    from planner_node.sim.env import EnvConfig, HumanoidEnv
    from planner_node.sim.evaluate import run_episode

    b = bundles / name
    if not b.exists():
        export_bundle(a.checkpoint, b, **settings)
    planner = runtime_planner(b, seed=a.seed)
    env = HumanoidEnv(EnvConfig(push_every=a.push_every, push_speed=a.push_speed))
    per_task = {}
    for task in a.tasks:
        f = raw / f"{name}_{task}.json"
        if not f.exists():
            eps = []
            for i in range(a.episodes):
                r = run_episode(env, planner, task, a.steps, a.seed + i)
                eps.append({"seed": r.seed, "return": r.ret, "length": r.length, "fell": r.fell,
                            "plan_ms": [round(x, 3) for x in r.plan_ms[1:]]})  # tick 0: the cold start
            tmp = f.with_suffix(".tmp")
            tmp.write_text(json.dumps({"setting": name, "task": task, "episodes": eps}))
            os.replace(tmp, f)
        per_task[task] = json.loads(f.read_text())["episodes"]
        print(f"  {name} {task}: return {np.mean([e['return'] for e in per_task[task]]):.1f}", file=sys.stderr)
    eps = [e for t in a.tasks for e in per_task[t]]
    lat = np.concatenate([e["plan_ms"] for e in eps if e["plan_ms"]] or [np.zeros(1)])
    R = [e["return"] for e in eps]
    return {"setting": name, **settings, "mean_return": float(np.mean(R)), "se_return": se(R),
            "fall_rate": float(np.mean([e["fell"] for e in eps])), "mean_length": float(np.mean([e["length"] for e in eps])),
            "plan_ms_p50": float(np.percentile(lat, 50)), "plan_ms_p99": float(np.percentile(lat, 99)),
            "plans": int(len(lat)), "per_task_return": {t: float(np.mean([e["return"] for e in per_task[t]]))
                                                        for t in a.tasks}}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        ax.errorbar(r["plan_ms_p99"], r["mean_return"], yerr=r["se_return"], fmt="o", capsize=3)
        ax.annotate(r["setting"], (r["plan_ms_p99"], r["mean_return"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.axvline(30, color="gray", ls="--", lw=1)
    ax.text(30, ax.get_ylim()[0], " 30 ms tick", color="gray", fontsize=8, va="bottom")
    ax.set_xscale("log")
    ax.set_xlabel("plan latency p99 [ms] (ONNX Runtime, 1 thread, this CPU)")
    ax.set_ylabel("mean return over the tasks' episodes (± s.e.)")
    ax.set_title("Diffuser: sampler steps x warm start x samples")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=5000)
    ap.add_argument("--push-every", type=int, default=100)
    ap.add_argument("--push-speed", type=float, default=0.25)
    a = ap.parse_args()
    out = Path(a.out)
    (out / "raw").mkdir(parents=True, exist_ok=True)
    bundles = Path(os.environ.get("TRADEOFF_BUNDLES", "/tmp/diffuser_tradeoff_bundles"))
    bundles.mkdir(parents=True, exist_ok=True)
    rows = [run_setting(n, SETTINGS[n], a, bundles, out / "raw") for n in a.settings]
    ref = rows[0]
    print(f"Diffuser trade-off: {a.checkpoint}, tasks {' '.join(a.tasks)}, {a.episodes} episodes x {a.steps} steps "
          f"each, pushes {a.push_speed} m/s every {a.push_every}, seeds {a.seed}..; reference row: {ref['setting']}")
    print(f"{'setting':<22}{'return':>16}{'x ref':>7}{'falls':>7}{'length':>8}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'x ref p99':>11}")
    for r in rows:
        r["return_share_of_reference"] = r["mean_return"] / ref["mean_return"] if ref["mean_return"] else None
        r["speedup_p99_vs_reference"] = ref["plan_ms_p99"] / r["plan_ms_p99"]
        print(f"{r['setting']:<22}{r['mean_return']:>9.1f} ± {r['se_return']:<4.1f}{r['return_share_of_reference']:>7.2f}"
              f"{r['fall_rate']:>7.0%}{r['mean_length']:>8.0f}{r['plan_ms_p50']:>9.1f}{r['plan_ms_p99']:>9.1f}"
              f"{r['speedup_p99_vs_reference']:>11.1f}")
    meta = {"checkpoint": a.checkpoint, "tasks": a.tasks, "episodes": a.episodes, "steps": a.steps, "seed": a.seed,
            "push_every": a.push_every, "push_speed": a.push_speed, "rows": rows}
    tmp = out / "tradeoff.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / "tradeoff.json")
    plot(rows, out / "tradeoff.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
