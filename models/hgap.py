"""H-GAP's PyTorch reference planner: sample N code sequences from the prior (temperature,
top-p), decode them into trajectories conditioned on the current state, score each with the task
function on the predicted observations (the same task code as the sim), execute the best's first
action. Seeded: the same seed and observation give the same plan."""
from __future__ import annotations

import numpy as np
import torch

from planner_node.models.latent_reference import LatentReferencePlanner
from planner_node.models.prior import sample_tokens
from planner_node.planning import Candidates, Plan, PlanRequest
from planner_node.robot.tasks import get_task


class HGAPPlanner(LatentReferencePlanner):
    name = kind = "hgap"

    def __init__(self, checkpoint: str, samples: int = 64, temperature: float = 2.0, top_p: float = 0.99, **kw):
        self.samples, self.temperature, self.top_p = samples, temperature, top_p
        super().__init__(checkpoint, **kw)

    @torch.no_grad()
    def candidates(self, request: PlanRequest) -> Candidates:
        """Every sampled plan, with the model's scores."""
        s = self._state(request.obs)
        u = self.rng.random((self.samples, self.cfg.vq.num_tokens))
        tokens = sample_tokens(self.prior, s, self.samples, self.temperature, self.top_p, u)
        traj = self.vq.decode_tokens(tokens, s.expand(self.samples, -1))
        obs, act, _ = self._unpack(traj)
        # Step 0 of the prediction is the current state; score the predicted future.
        score = get_task(request.task).reward(obs[:, 1:], request.command).sum(axis=1)
        return Candidates(act, score, obs[:, -1], tokens.numpy(), obs.shape[1] - 1)

    def plan(self, request: PlanRequest) -> Plan:
        c = self.candidates(request)
        best = int(np.argmax(c.scores))
        return Plan(c.actions[best], float(c.scores[best]),
                    info={"tokens": c.tokens[best].tolist(), "candidates": c.first_actions()})
