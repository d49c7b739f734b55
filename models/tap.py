"""TAP's PyTorch reference planner: beam search over codes (beam B, expansion E). A candidate's
objective is the task reward summed over its decoded prefix, plus the decoder's return-to-go at
the end of the prefix when the model was trained on that task alone, minus ``prob_weight`` for
each code whose probability is below ``prob_threshold`` times the most likely code's (TAP's
likelihood threshold, keeping plans in-distribution). Seeded like H-GAP's."""
from __future__ import annotations

import numpy as np
import torch

from planner_node.models.checkpoint import load_checkpoint
from planner_node.models.config import ConfigError
from planner_node.models.latent_reference import LatentReferencePlanner
from planner_node.models.prior import filter_logits, inverse_cdf
from planner_node.planning import Candidates, Plan, PlanRequest
from planner_node.robot.tasks import get_task


def check_config(cfg) -> None:
    """TAP's search scores returns: its decoder must predict them."""
    if not cfg.vq.predict_return:
        raise ConfigError(f"vq.predict_return must be true for kind {cfg.kind!r} (its search scores returns)")


class TAPPlanner(LatentReferencePlanner):
    name = kind = "tap"

    def __init__(self, checkpoint: str, beam: int = 64, expansion: int = 4, prob_threshold: float = 0.05,
                 prob_weight: float = 500.0, temperature: float = 1.0, **kw):
        self.beam, self.expansion = beam, expansion
        self.prob_threshold, self.prob_weight, self.temperature = prob_threshold, prob_weight, temperature
        super().__init__(checkpoint, **kw)
        ck = load_checkpoint(checkpoint, expect_kind=self.kind)
        self.trained_tasks = ck.get("tasks")

    def plan(self, request: PlanRequest) -> Plan:
        c = self.candidates(request, decode=1)
        return Plan(c.actions[0], float(c.scores[0]), info={"tokens": c.tokens[0].tolist()})

    @torch.no_grad()
    def candidates(self, request: PlanRequest, decode: int | None = None) -> Candidates:
        """The final beam, best first (the first ``decode`` beams; all by default), scored by
        TAP's objective."""
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
        n = len(tokens) if decode is None else decode
        traj = self.vq.decode_tokens(tokens[:n], s.expand(n, -1))
        obs, act, _ = self._unpack(traj)
        return Candidates(act, best_objective[:n], obs[:, -1], tokens[:n].numpy(), obs.shape[1] - 1)
