#!/usr/bin/env python3
"""The expert's cost options, one by one, against today's expert, in one run.

The expert plans on the simulator, so it may plan on a cheaper copy of the model than the one it
executes on. Each row changes one thing from today's expert (the recipes' ``expert`` settings
before this bench: 32 samples, horizon 15, 4 knots, Euler at 5 ms, 10 solver iterations) and
runs the same closed-loop episodes (same seeds, same pushes). Printed per row: control steps/s
of the whole loop (plan + execute), the planning copy's physics steps/s as a share of raw
``mujoco.rollout`` on the executed model, mean return ± s.e. over the episodes, and falls.

The final rows combine the options that held quality; ``--quality`` then runs the acceptance
checks of the chosen one against today's (stand 400 steps under pushes on 5 seeds, return on
the 10 tasks).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from planner_node.planning import PlanRequest
from planner_node.robot.tasks import TASKS, get_task
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from sim_throughput import rollout_steps_per_s  # noqa: E402  bench/: the one raw-rollout measurement

from planner_node.sim.env import EnvConfig, HumanoidEnv
from planner_node.sim.mppi import MPPIPlanner

# The recipes' expert before this bench: 32 samples on a planning copy with the executed model's
# 5 ms step and the Newton solver (MPPIConfig's defaults then).
TODAY = {"samples": 32, "timestep": 0.005, "solver": "newton"}

VARIANTS: list[tuple[str, dict]] = [
    ("today", {}),
    ("solver 4/4 iterations", {"iterations": 4, "ls_iterations": 4}),
    ("solver 2/2 iterations", {"iterations": 2, "ls_iterations": 2}),
    ("tolerance 1e-3", {"tolerance": 1e-3}),
    ("PGS solver", {"solver": "pgs"}),
    ("CG solver", {"solver": "cg"}),
    ("implicitfast 5 ms", {"integrator": "implicitfast"}),
    ("implicitfast 10 ms", {"integrator": "implicitfast", "timestep": 0.01}),
    ("implicitfast 15 ms", {"integrator": "implicitfast", "timestep": 0.015}),
    ("euler 10 ms", {"timestep": 0.01}),
    ("no self-collision", {"self_collision": False}),
    ("horizon 10, 3 knots", {"horizon": 10, "knots": 3}),
    ("16 samples", {"samples": 16}),
    ("no warm start", {"warm_start": False}),
    ("elite 8 (CEM-style)", {"elite": 8}),
    ("elite 4, 16 samples", {"elite": 4, "samples": 16}),
]


def run(expert: dict, tasks, seeds, steps: int, push_every: int, push_speed: float, threads: int) -> dict:
    env = HumanoidEnv(EnvConfig(push_every=push_every, push_speed=push_speed))
    planner = MPPIPlanner(seed=0, **{"threads": threads, **TODAY, **expert})
    rets, lengths, falls, plan_s, wall_s, n = [], [], 0, 0.0, 0.0, 0
    try:
        for task_name in tasks:
            task = get_task(task_name)
            for seed in seeds:
                obs = env.reset(seed)
                planner.reset(seed)
                ret, k = 0.0, 0
                t0 = time.perf_counter()
                for k in range(1, steps + 1):
                    t1 = time.perf_counter()
                    plan = planner.plan(PlanRequest(obs=obs, task=task_name, sim_state=env.get_state()))
                    plan_s += time.perf_counter() - t1
                    obs, fell = env.step(plan.actions[0])
                    ret += float(task.reward(obs, None))
                    if fell:
                        falls += 1
                        break
                wall_s += time.perf_counter() - t0
                n += k
                rets.append(ret)
                lengths.append(k)
        physics = n * planner.samples * planner.config.horizon * planner.substeps
    finally:
        planner.close()
    r = np.asarray(rets)
    return {"ctrl_steps_per_s": n / wall_s, "planning_physics_steps_per_s": physics / plan_s,
            "mean_return": float(r.mean()), "se_return": float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else 0.0,
            "falls": falls, "episodes": len(r), "mean_length": float(np.mean(lengths)), "returns": r.tolist()}


def quality(name: str, over: dict, threads: int, stand_seeds, task_seeds, steps: int) -> dict:
    """The acceptance checks: stand 400 steps under pushes (0.3 m/s every 50 steps) on each of
    ``stand_seeds``; mean return on the 10 tasks (``steps`` steps, same pushes)."""
    stand = run(over, ["stand"], stand_seeds, 400, 50, 0.3, threads)
    per_task = {t: run(over, [t], task_seeds, steps, 50, 0.3, threads) for t in TASKS}
    rets = np.concatenate([r["returns"] for r in per_task.values()])
    n = sum(r["episodes"] * r["mean_length"] for r in per_task.values())
    wall = sum(r["episodes"] * r["mean_length"] / r["ctrl_steps_per_s"] for r in per_task.values())
    return {"option": name, "overrides": over, "stand400_up": stand["episodes"] - stand["falls"],
            "stand400_episodes": stand["episodes"], "stand400_mean_length": stand["mean_length"],
            "tasks_mean_return": float(rets.mean()), "tasks_se_return": float(rets.std(ddof=1) / np.sqrt(len(rets))),
            "tasks_falls": int(sum(r["falls"] for r in per_task.values())), "tasks_episodes": len(rets),
            "ctrl_steps_per_s": n / wall,
            "per_task": {t: {"mean_return": r["mean_return"], "falls": r["falls"]} for t, r in per_task.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["stand", "forward", "rotate_z"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--push-every", type=int, default=50)
    ap.add_argument("--push-speed", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", nargs="*", help="row names to run (default: all)")
    ap.add_argument("--extra", action="append", default=[], help="NAME=JSON extra row, e.g. 'combo={\"samples\":16}'")
    ap.add_argument("--quality", action="store_true",
                    help="run the acceptance checks (stand 400 x 5 seeds, 10 tasks) on the rows instead")
    ap.add_argument("--walk", action="store_true", help="run the walking check on the rows instead")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.walk:
        return main_walk(a)
    raw = rollout_steps_per_s(HumanoidEnv(), a.threads, 64, 90)  # raw rollout, executed model
    if a.quality:
        return main_quality(a, raw)
    variants = [v for v in VARIANTS if not a.only or v[0] in a.only]
    for e in a.extra:
        name, _, js = e.partition("=")
        variants.append((name, json.loads(js)))
    rows = []
    print(f"raw mujoco.rollout on the executed model, {a.threads} threads: {raw:,.0f} physics steps/s")
    head = f"{'option':<28}{'ctrl steps/s':>13}{'x today':>9}{'phys/raw':>10}{'return':>18}{'falls':>8}"
    print(head)
    print("-" * len(head))
    base = None
    for name, over in variants:
        r = run(over, a.tasks, a.seeds, a.steps, a.push_every, a.push_speed, a.threads)
        base = base or r["ctrl_steps_per_s"]
        r.update(option=name, overrides=over, speedup=r["ctrl_steps_per_s"] / base,
                 share_of_raw=r["planning_physics_steps_per_s"] / raw)
        rows.append(r)
        print(f"{name:<28}{r['ctrl_steps_per_s']:>13.1f}{r['speedup']:>9.2f}{r['share_of_raw']:>10.0%}"
              f"{r['mean_return']:>10.2f} ± {r['se_return']:<5.2f}{r['falls']:>5}/{r['episodes']}", flush=True)
    if a.json:
        from planner_node.atomic import write_json
        write_json(a.json, {"raw_rollout_steps_per_s": raw, "threads": a.threads, "tasks": a.tasks,
                            "seeds": a.seeds, "steps": a.steps, "push_every": a.push_every,
                            "push_speed": a.push_speed, "today": TODAY, "rows": rows})
    return 0


def walk(over: dict, seeds, steps: int, threads: int, speed: float = 0.2) -> dict:
    """The walking check: task forward with the capture-point lead, no pushes; distance along
    the initial heading [m] after ``steps`` (what the HIL test asks >= 0.5 m of in 150)."""
    from planner_node.robot.humanoid import heading_world
    out = []
    for seed in seeds:
        env = HumanoidEnv(EnvConfig())
        obs = env.reset(seed)
        p = MPPIPlanner(seed=seed, **{"threads": threads, **TODAY, **over, "walk_speed": speed})
        x0, f0 = env.data.qpos[:2].copy(), heading_world(env.data.qpos[3:7]).copy()
        fell, k = False, 0
        for k in range(1, steps + 1):
            plan = p.plan(PlanRequest(obs=obs, task="forward", sim_state=env.get_state()))
            obs, fell = env.step(plan.actions[0])
            if fell:
                break
        p.close()
        out.append({"seed": seed, "forward_m": float((env.data.qpos[:2] - x0) @ f0), "fell": bool(fell), "steps": k})
    return {"episodes": out, "mean_forward_m": float(np.mean([e["forward_m"] for e in out])),
            "falls": int(sum(e["fell"] for e in out))}


def main_walk(a) -> int:
    variants = [v for v in VARIANTS if not a.only or v[0] in a.only]
    for e in a.extra:
        name, _, js = e.partition("=")
        variants.append((name, json.loads(js)))
    print(f"walking: task forward, capture-point lead 0.2 m/s, {a.steps} steps, seeds {a.seeds}, no pushes")
    head = f"{'expert':<28}{'forward [m] per seed':>28}{'mean':>8}{'falls':>7}"
    print(head)
    print("-" * len(head))
    rows = []
    for name, over in variants:
        r = {"option": name, "overrides": over, **walk(over, a.seeds, a.steps, a.threads)}
        rows.append(r)
        per = " ".join(f"{e['forward_m']:.2f}" for e in r["episodes"])
        print(f"{name:<28}{per:>28}{r['mean_forward_m']:>8.2f}{r['falls']:>4}/{len(r['episodes'])}", flush=True)
    if a.json:
        from planner_node.atomic import write_json
        write_json(a.json, {"steps": a.steps, "seeds": a.seeds, "today": TODAY, "rows": rows})
    return 0


def main_quality(a, raw: float) -> int:
    variants = [v for v in VARIANTS if a.only and v[0] in a.only]
    for e in a.extra:
        name, _, js = e.partition("=")
        variants.append((name, json.loads(js)))
    print(f"raw mujoco.rollout, {a.threads} threads: {raw:,.0f} physics steps/s; stand: 400 steps, seeds 1-5; "
          f"tasks: {len(TASKS)} x seeds {a.seeds} x {a.steps} steps; pushes 0.3 m/s every 50 steps")
    head = f"{'expert':<24}{'ctrl steps/s':>13}{'x first':>9}{'stand 400 up':>14}{'10-task return':>20}{'vs first':>10}{'falls':>8}"
    print(head)
    print("-" * len(head))
    rows, base = [], None
    for name, over in variants:
        r = quality(name, over, a.threads, [1, 2, 3, 4, 5], a.seeds, a.steps)
        base = base or r
        r["speedup"] = r["ctrl_steps_per_s"] / base["ctrl_steps_per_s"]
        r["return_ratio"] = r["tasks_mean_return"] / base["tasks_mean_return"]
        rows.append(r)
        print(f"{name:<24}{r['ctrl_steps_per_s']:>13.1f}{r['speedup']:>9.2f}{r['stand400_up']:>10}/{r['stand400_episodes']}"
              f"{r['tasks_mean_return']:>12.2f} ± {r['tasks_se_return']:<5.2f}{r['return_ratio']:>10.0%}"
              f"{r['tasks_falls']:>5}/{r['tasks_episodes']}", flush=True)
    if a.json:
        from planner_node.atomic import write_json
        write_json(a.json, {"raw_rollout_steps_per_s": raw, "threads": a.threads, "task_seeds": a.seeds,
                            "steps": a.steps, "today": TODAY, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
