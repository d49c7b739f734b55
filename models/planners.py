"""Reference planners in PyTorch over a trained VQ-VAE + prior (what the exported runtime is checked against).

* ``HGAPPlanner``: sample N code sequences from the prior (temperature, top-p), decode them
  into trajectories conditioned on the current state, score each with the task function on
  the predicted observations (the same task code as the sim), execute the best's first action.
* ``TAPPlanner``: beam search over codes (beam B, expansion E). A candidate's objective is the
  task reward summed over its decoded prefix, plus the decoder's return-to-go at the end of
  the prefix when the model was trained on that task alone, minus ``prob_weight`` for each
  code whose probability is below ``prob_threshold`` times the most likely code's (TAP's
  likelihood threshold, keeping plans in-distribution).

Both are seeded: the same seed and observation give the same plan.
"""
from __future__ import annotations

import numpy as np
import torch

from planner_node.models.checkpoint import load_checkpoint
from planner_node.models.prior import filter_logits, inverse_cdf, sample_tokens
from planner_node.planning import Plan, Planner, PlanRequest
from planner_node.robot.tasks import get_task


class _LatentPlanner(Planner):
    kind = ""

    def __init__(self, checkpoint: str, seed: int | None = 0, threads: int = 2, **_):
        from planner_node.models.train import build_models

        ck = load_checkpoint(checkpoint, expect_kind=self.kind)
        self.cfg, self.vq, self.prior, self.norm = build_models(ck)
        self.dataset_tasks = None
        torch.set_num_threads(threads)
        self.obs_dim, self.act_dim = self.cfg.vq.obs_dim, self.cfg.vq.act_dim
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        # numpy draws (not torch's): the runtime planner consumes the very same stream.
        self.rng = np.random.default_rng(seed)

    def _state(self, obs: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.norm.norm_obs(np.asarray(obs, np.float32)))[None]

    def _unpack(self, traj: torch.Tensor):
        t = traj.numpy()
        obs = self.norm.unnorm_obs(t[..., : self.obs_dim])
        act = np.clip(self.norm.unnorm_act(t[..., self.obs_dim: self.obs_dim + self.act_dim]), -1.0, 1.0)
        return obs, act, t


class HGAPPlanner(_LatentPlanner):
    name = kind = "hgap"

    def __init__(self, checkpoint: str, samples: int = 64, temperature: float = 2.0, top_p: float = 0.99, **kw):
        self.samples, self.temperature, self.top_p = samples, temperature, top_p
        super().__init__(checkpoint, **kw)

    @torch.no_grad()
    def plan(self, request: PlanRequest) -> Plan:
        s = self._state(request.obs)
        u = self.rng.random((self.samples, self.cfg.vq.num_tokens))
        tokens = sample_tokens(self.prior, s, self.samples, self.temperature, self.top_p, u)
        traj = self.vq.decode_tokens(tokens, s.expand(self.samples, -1))
        obs, act, _ = self._unpack(traj)
        # Step 0 of the prediction is the current state; score the predicted future.
        score = get_task(request.task).reward(obs[:, 1:], request.command).sum(axis=1)
        best = int(np.argmax(score))
        return Plan(act[best], float(score[best]), info={"tokens": tokens[best].tolist()})


class TAPPlanner(_LatentPlanner):
    name = kind = "tap"

    def __init__(self, checkpoint: str, beam: int = 64, expansion: int = 4, prob_threshold: float = 0.05,
                 prob_weight: float = 500.0, temperature: float = 1.0, **kw):
        self.beam, self.expansion = beam, expansion
        self.prob_threshold, self.prob_weight, self.temperature = prob_threshold, prob_weight, temperature
        super().__init__(checkpoint, **kw)
        ck = load_checkpoint(checkpoint, expect_kind="tap")
        self.trained_tasks = ck.get("tasks")

    @torch.no_grad()
    def plan(self, request: PlanRequest) -> Plan:
        cfg = self.cfg.vq
        task = get_task(request.task)
        use_value = self.trained_tasks == [request.task]
        s = self._state(request.obs)
        logits, cache = self.prior.step(s, None, None)
        tokens = torch.zeros((1, 0), dtype=torch.long)
        penalty = torch.zeros(1)
        for t in range(cfg.num_tokens):
            n = tokens.shape[0]
            logp = filter_logits(logits, self.temperature, 1.0)                  # (n, K)
            u = torch.from_numpy(self.rng.random((n, self.expansion)))
            cand = torch.stack([inverse_cdf(logp.exp(), u[:, j]) for j in range(self.expansion)], 1)[..., 0]
            rel = (logp.gather(1, cand) - logp.max(1, keepdim=True).values).exp()  # p / p_max
            cand_tokens = torch.cat([tokens.repeat_interleave(self.expansion, 0), cand.reshape(-1, 1)], 1)
            cand_pen = penalty.repeat_interleave(self.expansion) + (rel.reshape(-1) < self.prob_threshold).float()
            # Decode the prefix (the decoder is causal: padding does not change prefix steps).
            pad = cand_tokens[:, -1:].expand(-1, cfg.num_tokens - t - 1)
            full = torch.cat([cand_tokens, pad], 1)
            obs, _, raw = self._unpack(self.vq.decode_tokens(full, s.expand(len(full), -1)))
            steps = ((t + 1) // cfg.codes_per_latent) * cfg.latent_stride if cfg.codes_per_latent > 1 else (t + 1) * cfg.latent_stride
            steps = max(1, min(steps, cfg.horizon))
            objective = task.reward(obs[:, 1:steps + 1], request.command).sum(1) if steps > 1 else np.zeros(len(full))
            if use_value:
                rtg = self.norm.unnorm_ret(raw[:, steps - 1, -2:])[:, 1]
                objective = objective + (cfg.discount ** steps) * rtg
            objective = objective - self.prob_weight * cand_pen.numpy()
            keep = torch.from_numpy(np.argsort(-objective, kind="stable")[: self.beam].copy())
            tokens, penalty = cand_tokens[keep], cand_pen[keep]
            best_objective = objective[keep.numpy()]
            if t + 1 < cfg.num_tokens:
                parent = keep // self.expansion
                cache = [(k[parent], v[parent]) for k, v in cache]
                logits, cache = self.prior.step(s.expand(len(keep), -1), tokens[:, -1:], cache)
        traj = self.vq.decode_tokens(tokens[:1], s)
        _, act, _ = self._unpack(traj)
        return Plan(act[0], float(best_objective[0]), info={"tokens": tokens[0].tolist()})
