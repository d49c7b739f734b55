#!/usr/bin/env python3
"""H-GAP's candidates chosen by the model's score plus beta x log p(codes | state) (the prior's
likelihood of each sampled code sequence, by teacher forcing): does preferring likely plans,
the in-distribution ones, keep the robot up longer? Same seeds and pushes for every beta.

    python experiments/likelihood_scoring.py [--run runs/hgap_default] [--task stand] [--betas 0 0.3 1 10 100]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/hgap_default")
    ap.add_argument("--task", default="stand")
    ap.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=9001)
    a = ap.parse_args()
    import torch

    from planner_node.models.hgap import HGAPPlanner
    from planner_node.planning import Plan, Planner
    from planner_node.sim.env import EnvConfig
    from planner_node.sim.evaluate import evaluate

    class LikelihoodScored(Planner):
        name = "hgap+loglik"

        def __init__(self, beta: float):
            self.p, self.beta = HGAPPlanner(a.run, seed=0, threads=1), beta

        def reset(self, seed=None):
            self.p.reset(seed)

        @torch.no_grad()
        def plan(self, req):
            c = self.p.candidates(req)
            tok = torch.from_numpy(c.tokens)
            logits = self.p.prior(self.p._state(req.obs).expand(len(tok), -1), tok)   # teacher forcing
            logp = torch.log_softmax(logits, -1).gather(-1, tok[..., None])[..., 0].sum(-1).numpy()
            best = int(np.argmax(c.scores + self.beta * logp))
            return Plan(c.actions[best], float(c.scores[best]))

    print(f"{a.run} on {a.task}: {a.episodes} episodes x {a.steps} steps, seeds {a.seed}+, pushes 0.3 m/s every 67 "
          "steps; mean ± s.e.")
    print(f"{'beta':>6}{'length':>16}{'return':>16}{'falls':>7}")
    for beta in a.betas:
        r = evaluate(LikelihoodScored(beta), a.task, a.episodes, a.seed, a.steps,
                     EnvConfig(push_every=67, push_speed=0.3), progress=False)
        L = np.array([e["length"] for e in r["episodes"]])
        R = np.array([e["return"] for e in r["episodes"]])
        print(f"{beta:>6g}{L.mean():>9.1f} ± {L.std(ddof=1) / np.sqrt(len(L)):<4.1f}"
              f"{R.mean():>9.1f} ± {R.std(ddof=1) / np.sqrt(len(R)):<4.1f}{r['fall_rate']:>7.0%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
