"""The base of PyTorch reference planners over a trained VQ-VAE + prior (the "latent" kinds):
load the run, normalise, seed the numpy stream the runtime planner consumes draw for draw.
Each kind's search lives in its own module (see ``planner_node.kinds``)."""
from __future__ import annotations

import numpy as np
import torch

from planner_node.models.checkpoint import load_checkpoint
from planner_node.planning import Planner


class LatentReferencePlanner(Planner):
    kind = ""  # set by each kind's subclass

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
