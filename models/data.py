"""Training windows from a dataset: normalized (obs, action[, reward, return-to-go]) chunks."""
from __future__ import annotations

import numpy as np
import torch

from planner_node.dataset import Dataset


class Normalizer:
    """z-score with std + 1e-4 (H-GAP); travels with the checkpoint and later the bundle."""

    KEYS = ("obs_mean", "obs_std", "act_mean", "act_std", "ret_mean", "ret_std")

    def __init__(self, stats: dict):
        missing = [k for k in self.KEYS if k not in stats]
        if missing:
            raise ValueError(f"normalizer lacks {missing}")
        self.stats = {k: np.asarray(stats[k], dtype=np.float32) for k in self.KEYS}

    @classmethod
    def from_dataset(cls, ds: Dataset, returns: np.ndarray) -> "Normalizer":
        r = np.stack([ds.arrays["rewards"], returns], axis=-1)
        return cls({**{k: ds.stats[k] for k in ("obs_mean", "obs_std", "act_mean", "act_std")},
                    "ret_mean": r.mean(0), "ret_std": r.std(0) + 1e-4})

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v.copy()) for k, v in self.stats.items()}

    @classmethod
    def from_tensors(cls, d: dict) -> "Normalizer":
        return cls({k: np.asarray(v) for k, v in d.items()})

    def norm_obs(self, o):
        return (o - self.stats["obs_mean"]) / self.stats["obs_std"]

    def unnorm_obs(self, o):
        return o * self.stats["obs_std"] + self.stats["obs_mean"]

    def norm_act(self, a):
        return (a - self.stats["act_mean"]) / self.stats["act_std"]

    def unnorm_act(self, a):
        return a * self.stats["act_std"] + self.stats["act_mean"]

    def unnorm_ret(self, r):
        return r * self.stats["ret_std"] + self.stats["ret_mean"]


def returns_to_go(ds: Dataset, discount: float) -> np.ndarray:
    rew = ds.arrays["rewards"].astype(np.float64)
    out = np.zeros_like(rew)
    for ep in ds.episodes():
        acc = 0.0
        for i in ep[::-1]:
            acc = rew[i] + discount * acc
            out[i] = acc
    return out.astype(np.float32)


def split_episodes(ds: Dataset, holdout_fraction: float, seed: int) -> tuple[list, list]:
    eps = ds.episodes()
    order = np.random.default_rng(seed).permutation(len(eps))
    n_hold = int(round(holdout_fraction * len(eps)))
    if holdout_fraction > 0 and len(eps) > 1:
        n_hold = max(1, n_hold)
    hold = sorted(order[:n_hold].tolist())
    train = sorted(order[n_hold:].tolist())
    return [eps[i] for i in train], [eps[i] for i in hold]


def make_windows(ds: Dataset, episodes: list, horizon: int, norm: Normalizer, returns: np.ndarray,
                 with_returns: bool) -> np.ndarray:
    """(N, H, D) float32 windows that lie inside one episode."""
    a = ds.arrays
    feats = [norm.norm_obs(a["observations"]), norm.norm_act(a["actions"])]
    if with_returns:
        r = np.stack([a["rewards"], returns], axis=-1)
        feats.append((r - norm.stats["ret_mean"]) / norm.stats["ret_std"])
    x = np.concatenate(feats, axis=-1).astype(np.float32)
    out = [x[ep[s: s + horizon]] for ep in episodes for s in range(0, len(ep) - horizon + 1)]
    if not out:
        return np.zeros((0, horizon, x.shape[1]), np.float32)
    return np.stack(out)
