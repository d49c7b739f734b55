"""How stale is a shadowing expert's label? (DAgger with expert labels, `--recipe dagger_labels`.)

Along an episode driven by the learner (or, for comparison, by the expert itself), every 10th
step compares the expert's 1-update action, the label a round records, with its converged action
after 8 more MPPI updates at the same state (the expert is restored afterwards, so the episode is
not changed). Prints mean |difference| per joint (action units):

    label1-conv    how far a recorded label is from what the expert converges to there
    learner-conv   how far the learner's own action is from it
    learner-label1 how far the learner's action is from the recorded label

    .venv/bin/python experiments/label_staleness.py --run runs/chunk_default --episodes 3
"""
from __future__ import annotations

import argparse

import numpy as np

from planner_node.planning import PlanRequest, planner_class
from planner_node.sim.env import EnvConfig, HumanoidEnv
from planner_node.sim.generate import RECIPES
from planner_node.sim.mppi import MPPIPlanner


def episode(run: str, kind: str, driver: str, seed: int, task: str, steps: int, expert_cfg: dict):
    env = HumanoidEnv(EnvConfig(push_every=50, push_speed=0.3))
    obs = env.reset(seed)
    learner = planner_class(kind)(checkpoint=run, seed=seed, threads=1)
    ex = MPPIPlanner(seed=seed, **{**expert_cfg, "threads": 1})
    gaps, length = [], 0
    try:
        for t in range(steps):
            req = PlanRequest(obs=obs, task=task, sim_state=env.get_state())
            label = ex.plan(req).actions[0].copy()
            mine = learner.plan(PlanRequest(obs=obs, task=task)).actions[0]
            if t % 10 == 5:
                saved = (ex.nominal.copy(), ex._age, ex._warmed, ex._last, ex.rng.bit_generator.state)
                ex.warm_up(req, 8)
                conv = np.clip(ex._interp @ ex.nominal, -1, 1)[0]
                ex.nominal, ex._age, ex._warmed, ex._last, state = saved
                ex.rng.bit_generator.state = state
                gaps.append((np.abs(label - conv).mean(), np.abs(mine - conv).mean(), np.abs(mine - label).mean()))
            obs, fell = env.step(mine if driver == "learner" else label)
            length = t + 1
            if fell:
                break
    finally:
        ex.close()
    return np.mean(gaps, 0), length


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/chunk_default")
    p.add_argument("--kind", default="chunk")
    p.add_argument("--recipe", default="dagger_labels", help="whose expert labels (its MPPI settings)")
    p.add_argument("--task", default="stand")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--steps", type=int, default=120)
    a = p.parse_args()
    print(f"{'driver':8s} {'label1-conv':>12s} {'learner-conv':>13s} {'learner-label1':>15s}  lengths")
    for driver in ("expert", "learner"):
        rows = [episode(a.run, a.kind, driver, s, a.task, a.steps, RECIPES[a.recipe].expert) for s in range(a.episodes)]
        g = np.mean([r[0] for r in rows], 0)
        print(f"{driver:8s} {g[0]:12.3f} {g[1]:13.3f} {g[2]:15.3f}  {[r[1] for r in rows]}")


if __name__ == "__main__":
    main()
