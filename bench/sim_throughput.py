#!/usr/bin/env python3
"""Simulation throughput, all in one run so the ratios are comparable.

Rows: raw ``mj_step`` physics steps/s (1 core); ``mujoco.rollout`` physics steps/s with 1
and N threads; the MPPI expert's control steps/s at its default (offline) config and at
--budget-ms 30, each with the physics steps/s it achieves as a share of the raw rollout
rate (the rest is Python overhead: sampling, observation building, costs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import mujoco
import numpy as np
from mujoco import rollout

from planner_node import spec
from planner_node.planning import PlanRequest
from planner_node.sim.env import HumanoidEnv
from planner_node.sim.mppi import MPPIPlanner


def raw_steps_per_s(env: HumanoidEnv, n: int) -> float:
    env.reset(0)
    d = mujoco.MjData(env.model)
    mujoco.mj_setState(env.model, d, env.get_state(), mujoco.mjtState.mjSTATE_FULLPHYSICS)
    d.ctrl[:] = env.data.ctrl
    t = time.perf_counter()
    mujoco.mj_step(env.model, d, nstep=n)
    return n / (time.perf_counter() - t)


def rollout_steps_per_s(env: HumanoidEnv, threads: int, batch: int, nstep: int) -> float:
    env.reset(0)
    datas = [mujoco.MjData(env.model) for _ in range(threads)]
    x0 = np.tile(env.get_state(), (batch, 1))
    ctrl = np.tile(env.data.ctrl, (batch, nstep, 1))
    with rollout.Rollout(nthread=threads) as r:
        r.rollout(env.model, datas, x0, ctrl)  # warm-up
        t = time.perf_counter()
        r.rollout(env.model, datas, x0, ctrl)
        dt = time.perf_counter() - t
    return batch * nstep / dt


def expert_rate(env: HumanoidEnv, steps: int, **kw) -> tuple[float, float, int]:
    p = MPPIPlanner(seed=0, **kw)
    obs = env.reset(0)
    t = time.perf_counter()
    for _ in range(steps):
        plan = p.plan(PlanRequest(obs=obs, task="stand", sim_state=env.get_state()))
        obs, _ = env.step(plan.actions[0])
    dt = time.perf_counter() - t
    physics = steps * p.samples * p.config.horizon * spec.SUBSTEPS
    p.close()
    return steps / dt, physics / dt, p.samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--expert-steps", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    env = HumanoidEnv()
    rows = []
    raw = raw_steps_per_s(env, 4000)
    rows.append(("mj_step (1 core)", raw, None, None))
    r1 = rollout_steps_per_s(env, 1, 64, 90)
    rn = rollout_steps_per_s(env, a.threads, 64, 90)
    rows.append(("rollout, 1 thread", r1, None, None))
    rows.append((f"rollout, {a.threads} threads", rn, None, None))
    ctrl, phys, n = expert_rate(env, a.expert_steps, threads=a.threads)
    rows.append((f"MPPI expert ({n} samples)", phys, ctrl, phys / rn))
    ctrl, phys, n = expert_rate(env, a.expert_steps, threads=a.threads, budget_ms=30.0)
    rows.append((f"MPPI --budget-ms 30 ({n} s.)", phys, ctrl, phys / rn))
    print(f"{'what':<30}{'physics steps/s':>16}{'ctrl steps/s':>14}{'share of rollout':>18}")
    for name, p, c, share in rows:
        print(f"{name:<30}{p:>16,.0f}{'' if c is None else f'{c:.2f}':>14}"
              f"{'' if share is None else f'{share:.0%}':>18}")
    print(f"rollout speed-up with {a.threads} threads: {rn / r1:.2f}x; rollout vs mj_step: {r1 / raw:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump([dict(zip(("what", "physics_steps_per_s", "ctrl_steps_per_s", "share"), r)) for r in rows], f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
