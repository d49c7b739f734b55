"""Where a stand policy falls after a push, could it have been saved? (README "DAgger by rescue")

Runs BUNDLE on stand, pushes of 0.3 m/s every 67 steps (schedule B's), one episode per seed. At
each push the policy is first tried ahead over the window to the next push on a copy (robot, push
and the policy's blend). At the first push where it falls, from the same state under the same push:

- ``--expert``: the far-sighted expert (sim/generate.py FAR_EXPERT, warmed up 10 updates) drives
  the window instead (~1 min an episode on 2 cores);
- ``--noisy K --sigma S``: K continuations of the policy with smooth action noise (AR(1),
  coefficient 0.9, std S) drive it.

One line per episode: when the policy falls, and how many of the alternatives do.

    python experiments/push_recovery.py bundles/default --seeds 9000-9010 --expert
    python experiments/push_recovery.py bundles/default --seeds 30000-30005 --noisy 8 --sigma 0.03
"""
from __future__ import annotations

import argparse

import numpy as np

from planner_node.planning import PlanRequest, planner_class
from planner_node.runtime.bundle_planner import runtime_planner
from planner_node.sim.env import EnvConfig, HumanoidEnv
from planner_node.sim.generate import FAR_EXPERT

EVERY, SPEED, STEPS = 67, 0.3, 300


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--seeds", default="9000-9010", help="FIRST-LAST")
    ap.add_argument("--expert", action="store_true")
    ap.add_argument("--noisy", type=int, default=0)
    ap.add_argument("--sigma", type=float, default=0.03)
    a = ap.parse_args()
    first, last = (int(x) for x in a.seeds.split("-"))
    env = HumanoidEnv(EnvConfig(push_every=EVERY, push_speed=SPEED))
    policy = runtime_planner(a.bundle, backend="onnxruntime", seed=0)
    expert = planner_class("mppi")(**FAR_EXPERT) if a.expert else None

    def snapshot(obs):
        return env.get_state(), env.t, env.rng.bit_generator.state, list(policy.execution.blend.chunks), obs.copy()

    def restore(snap):
        env.set_state(snap[0])
        env.t, env.rng.bit_generator.state, policy.execution.blend.chunks = snap[1], snap[2], list(snap[3])
        return snap[4].copy()

    def drive(obs, act, n):
        """Steps until a fall (its step, 1-based) or n steps (None)."""
        for k in range(n):
            obs, fell = env.step(act(obs))
            if fell:
                return k + 1
        return None

    def mine(obs):
        return policy.plan(PlanRequest(obs=obs, task="stand")).actions[0]

    saved = 0
    for seed in range(first, last + 1):
        obs = env.reset(seed)
        policy.reset(seed)
        line = f"seed {seed}: policy stays up"
        t = 0
        while t < STEPS:
            if t and t % EVERY == 0:
                snap = snapshot(obs)
                fall = drive(obs, mine, EVERY)
                obs = restore(snap)
                if fall:
                    line = f"seed {seed} push at step {t}: policy falls after {fall}"
                    if expert is not None:
                        expert.reset(seed)
                        expert.warm_up(PlanRequest(obs=obs, task="stand", sim_state=env.get_state()), 10)
                        e = drive(obs, lambda o: expert.plan(PlanRequest(obs=o, task="stand",
                                                                         sim_state=env.get_state())).actions[0], EVERY)
                        saved += e is None
                        line += f"; expert {'survives %d' % EVERY if e is None else 'falls after %d' % e}"
                    if a.noisy:
                        falls = 0
                        for k in range(a.noisy):
                            obs = restore(snap)
                            rng, noise = np.random.default_rng([seed, t, k]), np.zeros(56)

                            def noisy(o, rng=rng):
                                nonlocal noise
                                noise = 0.9 * noise + np.sqrt(1 - 0.81) * a.sigma * rng.standard_normal(56)
                                return np.clip(mine(o) + noise, -1, 1)
                            falls += drive(obs, noisy, EVERY) is not None
                        line += f"; noisy continuations fall {falls}/{a.noisy}"
                    break
            obs, fell = env.step(mine(obs))
            t += 1
            if fell:
                line = f"seed {seed}: policy falls at step {t}, before a push it would fail"
                break
        print(line, flush=True)
    if expert is not None:
        print(f"the expert saved {saved} of the windows the policy fell in")


if __name__ == "__main__":
    main()
