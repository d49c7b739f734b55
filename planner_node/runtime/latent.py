"""The runtime base of the VQ-VAE + prior ("latent") kinds: a prior-step graph (one autoregressive
step over an explicit KV cache) and a decoder graph (codes + state -> trajectory), each possibly at
several fixed batch sizes. Sampling arithmetic is shared with the PyTorch reference planners, so a
runtime plan matches the reference draw for draw."""
from __future__ import annotations

import time

import numpy as np

from planner_node.runtime.bundle_planner import BundlePlanner


class LatentBundlePlanner(BundlePlanner):
    def __init__(self, bundle, backend: str = "onnxruntime", seed: int | None = 0, threads: int = 1, **overrides):
        super().__init__(bundle, backend=backend, seed=seed, threads=threads, **overrides)
        kc = self.kind_config
        self.priors = self.engines("prior_step")
        self.decoders = self.engines("decoder")
        self.prior, self.decoder = self.priors[max(self.priors)], self.decoders[max(self.decoders)]
        n = self.bundle.normalizer()
        self.ret_mean, self.ret_std = n["ret_mean"], n["ret_std"]
        self.T, self.D = kc["num_tokens"], kc["obs_dim"]
        shapes = {t.name: t.shape for t in self.prior.inputs}
        self.n_prior = shapes["state"][0]
        self.cache_shape = shapes["k_cache"]
        self.n_dec = {t.name: t.shape for t in self.decoder.inputs}["tokens"][0]

    def _norm_state(self, obs: np.ndarray, n: int) -> np.ndarray:
        return self.norm_obs(obs, n)

    def _unpack(self, traj: np.ndarray):
        obs = traj[..., : self.D] * self.obs_std + self.obs_mean
        act = self.unnorm_act(traj[..., self.D: self.D + len(self.act_mean)])
        return obs, act

    def _step_cost_s(self) -> float:
        return getattr(self, "_ema_step_s", 0.0)

    def _timed_prior(self, feeds, engine=None):
        t = time.perf_counter()
        out = (engine or self.prior).run(feeds)
        dt = time.perf_counter() - t
        self._ema_step_s = 0.8 * self._step_cost_s() + 0.2 * dt if self._step_cost_s() else dt
        return out
