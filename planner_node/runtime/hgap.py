"""H-GAP's runtime planner (numpy + engines, no torch): what the node runs for an H-GAP bundle.
Reproduces ``planner_node.models.hgap.HGAPPlanner`` draw for draw."""
from __future__ import annotations

import numpy as np

from planner_node.planning import Candidates, Plan, PlanRequest
from planner_node.robot.tasks import get_task
from planner_node.runtime.latent import LatentBundlePlanner
from planner_node.runtime.sampling import filtered_probs, inverse_cdf


class RuntimeHGAPPlanner(LatentBundlePlanner):
    """Sample N code sequences (temperature, top-p), decode, score with the task, keep the best."""

    name = kind = "hgap"

    def plan(self, request: PlanRequest) -> Plan:
        c = self.candidates(request)
        if isinstance(c, Plan):  # the deadline came first: the fallback plan
            return c
        best = int(np.argmax(c.scores))
        self._remember(self._last_obs[best], c.actions[best])
        return Plan(c.actions[best].copy(), float(c.scores[best]), info={"tokens": c.tokens[best].tolist()})

    def candidates(self, request: PlanRequest) -> Candidates | Plan:
        """Every sampled plan with the model's scores (or the fallback Plan if the deadline came first)."""
        p, N = self.params, self.n_prior
        u = self.rng.random((N, self.T))  # drawn up front: the stream matches the reference planner
        state = self._norm_state(request.obs, N)
        k = np.zeros(self.cache_shape, np.float32)
        v = np.zeros(self.cache_shape, np.float32)
        token = np.zeros((N, 1), np.int64)
        tokens = np.zeros((N, self.T), np.int64)
        for t in range(self.T):
            # Anytime: stop sampling if the remaining steps + decode would overrun the deadline.
            if self._late(request.deadline, (self.T - t + 2) * self._step_cost_s()):
                return self._fallback(request, f"deadline at token {t}/{self.T}")
            out = self._timed_prior({"state": state, "token": token, "pos": np.array([t], np.int64),
                                     "k_cache": k, "v_cache": v})
            k[:, :, :, t], v[:, :, :, t] = out["k_new"], out["v_new"]  # write slot t (copies)
            probs = filtered_probs(out["logits"], p["temperature"], p["top_p"])
            token = inverse_cdf(probs, u[:, t])[:, None]
            tokens[:, t] = token[:, 0]
        traj = self.decoder.run({"tokens": tokens, "state": state})["trajectory"]
        obs, act = self._unpack(traj)
        score = get_task(request.task).reward(obs[:, 1:], request.command).sum(axis=1)
        self._last_obs = obs
        return Candidates(act, score, obs[:, -1], tokens, obs.shape[1] - 1)
