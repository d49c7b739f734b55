#!/usr/bin/env python3
"""Data-engine throughput, all in one run so the rows compare.

1. raw ``mujoco.rollout`` physics steps/s on the executed model (the ceiling);
2. each recipe's expert in its own closed-loop episodes: physics steps/s of its rollouts and
   their share of raw, control steps/s, and transitions per CPU-hour (wall x cores); a rollout
   recipe (``policy_rollouts --learner RUN``): the policy on one core, no expert;
3. one process (2 rollout threads per episode) against a local Ray (2 CPUs, one episode per
   CPU), on the same episodes, with and without Ray's start-up;
4. the float16 round trip of the stored observations, in units of each feature's std.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sim_throughput import rollout_steps_per_s  # bench/: the one raw-rollout measurement

from planner_node.sim.env import HumanoidEnv
from planner_node.sim.generate import RECIPES, generate, generate_episode
from planner_node.sim import mppi as mppi_mod


class _Timed(mppi_mod.MPPIPlanner):
    """The expert, counting the physics steps its rollouts take and the time they take."""

    physics = 0
    rollout_s = 0.0

    def _rollout(self, state, actions):
        t = time.perf_counter()
        out = super()._rollout(state, actions)
        _Timed.rollout_s += time.perf_counter() - t
        _Timed.physics += actions.shape[0] * actions.shape[1] * self.substeps
        return out


def bench_recipe(name: str, episodes: int, steps: int, learner: str | None):
    """The recipe, cut to ``episodes`` x ``steps`` (a rollout recipe's long episodes too), with
    its policy run for a rollout recipe."""
    recipe = replace(RECIPES[name], episodes=episodes, steps=steps)
    if not recipe.rollout:
        return recipe
    if not learner:
        raise SystemExit(f"recipe {name!r} rolls out a policy: give its run with --learner RUN")
    from planner_node.models.checkpoint import load_checkpoint
    return replace(recipe, learner=learner, learner_planner=load_checkpoint(learner)["kind"], long_steps=steps)


def recipe_row(name: str, episodes: int, steps: int, threads: int, learner: str | None = None) -> dict:
    recipe = bench_recipe(name, episodes, steps, learner)
    if recipe.rollout:
        threads = 1   # a policy drives: its torch and MuJoCo on one core (Ray runs one episode per CPU)
    _Timed.physics, _Timed.rollout_s = 0, 0.0
    real = mppi_mod.MPPIPlanner
    mppi_mod.MPPIPlanner = _Timed
    try:
        t = time.perf_counter()
        n = sum(len(generate_episode(recipe, i, threads)["rewards"]) for i in range(episodes))
        wall = time.perf_counter() - t
    finally:
        mppi_mod.MPPIPlanner = real
    return {"recipe": name, "transitions": n, "wall_s": wall, "ctrl_steps_per_s": n / wall,
            "expert_physics_per_s": _Timed.physics / wall, "rollout_physics_per_s": _Timed.physics / max(_Timed.rollout_s, 1e-9),
            "transitions_per_cpu_hour": n / (wall * threads) * 3600, "threads": threads,
            "expert": recipe.learner if recipe.rollout else recipe.expert}


def ray_vs_single(recipe_name: str, episodes: int, steps: int, workers: int, learner: str | None = None) -> list[dict]:
    recipe = bench_recipe(recipe_name, episodes, steps, learner)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for label, kw in (("one process", {"workers": 1}), (f"local Ray, {workers} CPUs", {"workers": workers})):
            t = time.perf_counter()
            meta = generate(recipe_name, Path(d) / f"{label[:3]}.json", recipe=recipe, progress=False, **kw)
            wall = time.perf_counter() - t
            rows.append({"how": label, "transitions": meta["transitions"], "wall_s": wall,
                         "transitions_per_s": meta["transitions"] / wall, "dataset_sha256": meta["dataset_sha256"]})
    return rows


def float16_error(path: str | None) -> dict | None:
    from planner_node.dataset import Dataset
    if not path:
        return None
    ds = Dataset(path)
    obs = ds.arrays["observations"].astype(np.float64)  # already float16-rounded
    std = ds.stats["obs_std"]
    ulp = np.abs(obs) * 2.0 ** -11  # half an ulp bound, relative 2^-11
    err = ulp / std
    return {"dataset": str(ds.path), "max_err_in_std": float(err.max()), "p99_err_in_std": float(np.percentile(err, 99)),
            "mean_err_in_std": float(err.mean()), "worst_feature": int(np.unravel_index(err.argmax(), err.shape)[1])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--recipes", nargs="+", default=["default", "fast", "walk", "dart"])
    ap.add_argument("--learner", help="the policy run that drives the rollout recipes (policy_rollouts), "
                    "e.g. runs/chunk_rsw4_s0")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--ray-episodes", type=int, default=6)
    ap.add_argument("--data", help="a dataset: print its float16 round-trip error")
    ap.add_argument("--json")
    a = ap.parse_args()
    raw = rollout_steps_per_s(HumanoidEnv(), a.threads, 64, 90)  # raw rollout, executed model
    print(f"raw mujoco.rollout, executed model, {a.threads} threads: {raw:,.0f} physics steps/s\n")
    head = (f"{'recipe':<10}{'ctrl steps/s':>13}{'expert phys/s':>15}{'share of raw':>14}"
            f"{'rollout phys/s':>16}{'transitions/CPU-h':>19}")
    print(head)
    print("-" * len(head))
    rows = []
    for name in a.recipes:
        r = recipe_row(name, a.episodes, a.steps, a.threads, a.learner)
        r["share_of_raw"] = r["expert_physics_per_s"] / raw
        rows.append(r)
        print(f"{name:<10}{r['ctrl_steps_per_s']:>13.1f}{r['expert_physics_per_s']:>15,.0f}{r['share_of_raw']:>14.0%}"
              f"{r['rollout_physics_per_s']:>16,.0f}{r['transitions_per_cpu_hour']:>19,.0f}", flush=True)
    print("\n(expert phys/s: physics steps its rollouts take per second of the whole episode loop; the planning "
          "copy's step is cheaper in wall time per simulated second when its timestep is longer)\n")
    ray_rows = ray_vs_single(a.recipes[0], a.ray_episodes, a.steps, a.threads, a.learner)
    head = f"{'generation, ' + a.recipes[0]:<26}{'episodes':>9}{'wall s':>9}{'transitions/s':>15}  dataset"
    print(head)
    print("-" * len(head))
    for r in ray_rows:
        print(f"{r['how']:<26}{a.ray_episodes:>9}{r['wall_s']:>9.1f}{r['transitions_per_s']:>15.1f}  {r['dataset_sha256'][:16]}")
    same = len({r["dataset_sha256"] for r in ray_rows}) == 1
    print(f"identical datasets: {same}")
    f16 = float16_error(a.data)
    if f16:
        print(f"\nfloat16 round trip on {f16['dataset']}: max {f16['max_err_in_std']:.2e}, p99 {f16['p99_err_in_std']:.2e}, "
              f"mean {f16['mean_err_in_std']:.2e} feature std (worst feature {f16['worst_feature']})")
    if a.json:
        from planner_node.atomic import write_json
        write_json(a.json, {"raw_rollout_steps_per_s": raw, "threads": a.threads, "recipes": rows,
                            "ray_vs_single": ray_rows, "identical": same, "float16": f16})
    return 0


if __name__ == "__main__":
    sys.exit(main())
