#!/usr/bin/env python3
"""Model quality of a trained H-GAP/TAP run on held-out episodes, against a one-step MLP baseline.

Prints reconstruction error, prior negative log-likelihood, and open-loop prediction error
(normalized observation MSE) versus horizon step for: the VQ-VAE decoding the true chunk's
codes (it sees the chunk's actions through them) and a one-step MLP dynamics model trained in
this run on the same training split, rolled out from s_0 with the chunk's true actions.
Writes a PNG of error vs horizon.

    python experiments/model_quality.py --run runs/hgap_small --data data/default [--png F] [--json F]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from torch import nn

from planner_node.models.checkpoint import load_checkpoint
from planner_node.models.data import make_windows, returns_to_go, split_episodes
from planner_node.models.train import build_models
from planner_node.dataset import Dataset


def train_mlp(x: torch.Tensor, obs_dim: int, steps: int, seed: int) -> nn.Module:
    """s_{t+1} - s_t = f(s_t, a_t) in normalized units, on consecutive pairs inside windows."""
    torch.manual_seed(seed)
    s, a, s1 = x[:, :-1, :obs_dim], x[:, :-1, obs_dim:obs_dim + 56], x[:, 1:, :obs_dim]
    inp = torch.cat([s, a], -1).reshape(-1, obs_dim + 56)
    tgt = (s1 - s).reshape(-1, obs_dim)
    net = nn.Sequential(nn.Linear(obs_dim + 56, 256), nn.Mish(), nn.Linear(256, 256), nn.Mish(), nn.Linear(256, obs_dim))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        i = torch.from_numpy(rng.integers(0, len(inp), 256))
        loss = nn.functional.mse_loss(net(inp[i]), tgt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--mlp-steps", type=int, default=2000)
    ap.add_argument("--png", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    ck = load_checkpoint(a.run)
    cfg, vq, prior, norm = build_models(ck)
    ds = Dataset(a.data)
    rets = returns_to_go(ds, cfg.vq.discount)
    tr_eps, ho_eps = split_episodes(ds, cfg.train.holdout_fraction, cfg.train.seed)
    mk = lambda eps: torch.from_numpy(make_windows(ds, eps, cfg.vq.horizon, norm, rets, cfg.vq.predict_return))  # noqa: E731
    xtr, xho = mk(tr_eps), mk(ho_eps)
    if len(xho) == 0:
        print("no held-out window is long enough; nothing to measure", file=sys.stderr)
        return 1
    D = cfg.vq.obs_dim
    with torch.no_grad():
        recon, tokens, _ = vq(xho)
        err_vq = ((recon[..., :D] - xho[..., :D]) ** 2).mean(dim=(0, 2)).numpy()
        act_err = ((recon[..., D:D + 56] - xho[..., D:D + 56]) ** 2).mean().item()
        nll = prior.nll(xho[:, 0, :D], tokens).item()
    t = time.perf_counter()
    mlp = train_mlp(xtr, D, a.mlp_steps, cfg.train.seed)
    mlp_s = time.perf_counter() - t
    with torch.no_grad():
        s = xho[:, 0, :D]
        preds = [s]
        for k in range(cfg.vq.horizon - 1):
            s = s + mlp(torch.cat([s, xho[:, k, D:D + 56]], -1))
            preds.append(s)
        err_mlp = ((torch.stack(preds, 1) - xho[..., :D]) ** 2).mean(dim=(0, 2)).numpy()
    print(f"run {a.run} ({ck['kind']}), held-out windows: {len(xho)}, training windows: {len(xtr)}")
    print(f"reconstruction MSE (normalized): observations {err_vq.mean():.4f}, actions {act_err:.4f}")
    print(f"prior NLL on held-out codes: {nll:.3f} nats/code (uniform would be {np.log(cfg.vq.codebook_size):.3f}); "
          f"perplexity {np.exp(nll):.1f} of {cfg.vq.codebook_size}")
    print(f"\n{'horizon step':>12}{'VQ-VAE MSE':>12}{'1-step MLP MSE':>16}{'MLP / VQ':>10}")
    for k in range(cfg.vq.horizon):
        print(f"{k:>12}{err_vq[k]:>12.4f}{err_mlp[k]:>16.4f}{err_mlp[k] / max(err_vq[k], 1e-9):>10.2f}")
    print(f"(MLP trained in this run: {a.mlp_steps} steps, {mlp_s:.0f} s)")
    if a.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(err_vq, "o-", label=f"{ck['kind']} VQ-VAE (decode true codes)")
        ax.plot(err_mlp, "s-", label="one-step MLP, open loop")
        ax.set_xlabel("horizon step (x 30 ms)")
        ax.set_ylabel("observation MSE (normalized)")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.png, dpi=90)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"recon_obs_mse": float(err_vq.mean()), "recon_act_mse": act_err, "prior_nll": nll,
                       "vq_mse_by_step": err_vq.tolist(), "mlp_mse_by_step": err_mlp.tolist()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
