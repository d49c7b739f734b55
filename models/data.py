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


#: What a model learns as the data's actions (``target_actions``).
ACTION_TARGETS = ("executed", "clean")


def target_actions(ds: Dataset, target: str = "executed") -> np.ndarray:
    """(N, 56) the actions a model learns from. "executed": what ran. "clean": the recorded
    clean action (a policy rollout's action before its exploration noise, as MoCapAct's
    ``mean_actions``), the executed one in rows of shards that did not record it."""
    acts = ds.arrays["actions"]
    if target == "executed":
        return acts
    if target != "clean":
        raise ValueError(f"action_target: {target!r}; valid: {', '.join(ACTION_TARGETS)}")
    clean = ds.optional("clean_actions")
    if clean is None:
        raise ValueError(f"action_target: 'clean', but {ds.path} records no clean_actions "
                         "(a policy_rollouts recipe does)")
    missing = np.isnan(clean).any(axis=1)
    return np.where(missing[:, None], acts, clean).astype(acts.dtype)


def window_features(ds: Dataset, norm: Normalizer, returns: np.ndarray | None, with_returns: bool,
                    action_target: str = "executed") -> np.ndarray:
    """(N, D) float32, one row per dataset row: the z-scored observation, action (``action_target``)
    [, reward and return-to-go]; what every window of the dataset is cut from."""
    a = ds.arrays
    feats = [norm.norm_obs(a["observations"]), norm.norm_act(target_actions(ds, action_target))]
    if with_returns:
        r = np.stack([a["rewards"], returns], axis=-1)
        feats.append((r - norm.stats["ret_mean"]) / norm.stats["ret_std"])
    return np.concatenate(feats, axis=-1).astype(np.float32)


def window_starts(episodes: list, horizon: int) -> np.ndarray:
    """The dataset row each window of ``episodes`` starts at, in ``make_windows``' order."""
    return np.asarray([ep[s] for ep in episodes for s in range(0, len(ep) - horizon + 1)], np.int64)


class WindowSet:
    """The ``horizon``-step windows that lie inside one episode, gathered on demand from one
    (N, D) feature tensor: a million rows in 16-step windows of 280 features take 18 GB
    materialised, the features 1.1 GB. Indexing (an int, a slice, an index tensor) gives the
    (B, H, D) windows, as indexing the materialised array would."""

    def __init__(self, feats: torch.Tensor, starts: np.ndarray, horizon: int):
        self.feats, self.horizon = feats, horizon
        self.starts = torch.from_numpy(np.asarray(starts, np.int64))
        self._steps = torch.arange(horizon)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), self.horizon, self.feats.shape[1])

    def __getitem__(self, idx) -> torch.Tensor:
        s = self.starts[idx]
        return self.feats[s[..., None] + self._steps]

    def first(self) -> torch.Tensor:
        """(N, D): each window's first row (the state a plan starts from)."""
        return self.feats[self.starts]


def window_set(feats: np.ndarray | torch.Tensor, episodes: list, horizon: int) -> WindowSet:
    f = feats if isinstance(feats, torch.Tensor) else torch.from_numpy(feats)
    return WindowSet(f, window_starts(episodes, horizon), horizon)


def make_windows(ds: Dataset, episodes: list, horizon: int, norm: Normalizer, returns: np.ndarray,
                 with_returns: bool) -> np.ndarray:
    """(N, H, D) float32 windows that lie inside one episode, materialised (small data, probes)."""
    x = window_features(ds, norm, returns, with_returns)
    w = window_set(x, episodes, horizon)
    return w[:].numpy() if len(w) else np.zeros((0, horizon, x.shape[1]), np.float32)


def windows_at(ds: Dataset, starts: np.ndarray, horizon: int, norm: Normalizer, returns: np.ndarray,
               with_returns: bool) -> np.ndarray:
    """(len(starts), H, D) float32: ``make_windows``' window that starts at each dataset row (each
    must have ``horizon`` rows left in its episode)."""
    ids = ds.arrays["episode_ids"]
    j = np.asarray(starts)[:, None] + np.arange(horizon)[None]
    if len(j) and (j.max() >= len(ids) or (ids[j] != ids[j[:, :1]]).any()):
        raise ValueError(f"a window of {horizon} steps leaves its episode")
    rows = j.reshape(-1)
    a = ds.arrays
    feats = [norm.norm_obs(a["observations"][rows]), norm.norm_act(a["actions"][rows])]
    if with_returns:
        r = np.stack([a["rewards"][rows], returns[rows]], axis=-1)
        feats.append((r - norm.stats["ret_mean"]) / norm.stats["ret_std"])
    return np.concatenate(feats, axis=-1).astype(np.float32).reshape(len(j), horizon, -1)
