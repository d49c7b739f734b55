"""A task critic that foresees falls: V(s) for every task at once, IQL-style.

Trained on the dataset's (s, a, s') transitions with the robot's fall as a terminal state:

* rewards are *relabelled*: tasks are pure functions of the next observation (and, for
  ``track``, the episode's command), so every transition teaches every task's value;
* Q(s, a) regresses r + gamma (1 - fell) V(s');
* V(s) is the tau-expectile of Q(s, a) over the dataset's actions at s (Kostrikov et al.,
  IQL): an in-sample maximum, so it never queries actions the data does not hold;
* a fall is terminal: V(fallen) = 0, so states a fall follows from have low value.

A learned planner scores a candidate by its predicted reward plus gamma^H V(s_H), s_H the
model's predicted last state (``score_with_critic``). The pieces any backup over (s, a, s')
transitions needs (the relabelled transition set, batches, expectile loss, Polyak targets)
are public here, so the Lyapunov density model trains its backup on the same code.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from planner_node.dataset import Dataset
from planner_node.robot.tasks import TASKS

KIND = "critic"


@dataclass(frozen=True)
class CriticConfig:
    width: int = 256
    layers: int = 2
    discount: float = 0.99      # per 30 ms control step: an effective horizon of ~3 s
    expectile: float = 0.7      # IQL's tau for locomotion
    steps: int = 20_000
    batch_size: int = 512
    lr: float = 3e-4
    polyak: float = 0.005       # target-network update rate
    holdout_fraction: float = 0.1
    seed: int = 0
    threads: int = 2

    def __post_init__(self):
        checks = {"width": self.width >= 1, "layers": self.layers >= 1, "discount": 0 < self.discount < 1,
                  "expectile": 0 < self.expectile < 1, "steps": self.steps >= 1, "batch_size": self.batch_size >= 1,
                  "lr": self.lr > 0, "polyak": 0 < self.polyak <= 1, "holdout_fraction": 0 <= self.holdout_fraction < 1}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"CriticConfig.{name} has an invalid value: {getattr(self, name)!r}")


def mlp(n_in: int, n_out: int, width: int, layers: int) -> nn.Sequential:
    mods, d = [], n_in
    for _ in range(layers):
        mods += [nn.Linear(d, width), nn.LayerNorm(width), nn.Mish()]
        d = width
    return nn.Sequential(*mods, nn.Linear(d, n_out))


class ValueNet(nn.Module):
    """Raw observation (N, 224) -> value of each task (N, n_tasks); normalization inside."""

    def __init__(self, obs_mean: np.ndarray, obs_std: np.ndarray, n_tasks: int, width: int, layers: int):
        super().__init__()
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(obs_std, dtype=torch.float32))
        self.net = mlp(len(obs_mean), n_tasks, width, layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net((obs - self.obs_mean) / self.obs_std)


class QNet(nn.Module):
    def __init__(self, obs_mean, obs_std, act_dim: int, n_tasks: int, width: int, layers: int):
        super().__init__()
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(obs_std, dtype=torch.float32))
        self.net = mlp(len(obs_mean) + act_dim, n_tasks, width, layers)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([(obs - self.obs_mean) / self.obs_std, act], dim=-1))


def transitions(ds: Dataset, tasks: list[str] | None = None, skip_labels: bool = False) -> dict[str, np.ndarray]:
    """(s, a, s', fell, r[task]) for every step whose next state is known: all but an
    episode's last step, which is kept only when it ended in a fall (then s' is unused).
    ``skip_labels``: leave out the episodes of label rounds (their actions were not executed)."""
    tasks = list(tasks or TASKS)
    a = ds.arrays
    obs, act = a["observations"], a["actions"]
    keep, nxt = [], []
    labelled = ds.label_rows() if skip_labels else np.zeros(len(ds), bool)
    for ep in ds.episodes():
        if labelled[ep[0]]:
            continue
        keep.append(ep[:-1])
        nxt.append(ep[1:])
        if a["terminals"][ep[-1]]:
            keep.append(ep[-1:])
            nxt.append(ep[-1:])
    idx, nidx = np.concatenate(keep), np.concatenate(nxt)
    s2 = obs[nidx]
    fell = a["terminals"][idx].astype(np.float32)
    rewards = np.zeros((len(idx), len(tasks)), np.float32)
    cmds = a["commands"][idx]
    for k, name in enumerate(tasks):
        task = TASKS[name]
        if name == "track":  # the episode's command (constant within an episode)
            for c in np.unique(cmds, axis=0):
                rows = np.all(cmds == c, axis=1)
                rewards[rows, k] = task.reward(s2[rows], c if np.any(c) else None)
        else:
            rewards[:, k] = task.reward(s2, None)
    rewards[fell > 0] = 0.0  # a fall earns nothing (the reward is gated by `healthy` anyway)
    return {"s": obs[idx], "a": act[idx], "s2": s2, "fell": fell, "r": rewards,
            "episode": a["episode_ids"][idx], "rows": idx, "tasks": tasks}


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Asymmetric L2: weight tau where diff > 0, 1 - tau where diff < 0 (IQL's L2_tau)."""
    w = torch.where(diff > 0, tau, 1.0 - tau)
    return (w * diff.pow(2)).mean()


def polyak(target: nn.Module, source: nn.Module, rate: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.mul_(1.0 - rate).add_(s, alpha=rate)


def _split(tr: dict, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    eps = np.unique(tr["episode"])
    hold = np.random.default_rng(seed).permutation(eps)[: int(round(fraction * len(eps)))]
    is_hold = np.isin(tr["episode"], hold)
    return np.flatnonzero(~is_hold), np.flatnonzero(is_hold)


def _fall_auc(values: np.ndarray, near_fall: np.ndarray) -> float:
    """P(V(a state within 10 steps of a fall) < V(a state that is not)): 0.5 is chance."""
    pos, neg = values[near_fall], values[~near_fall]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg])))
    return 1.0 - float((ranks[: len(pos)].sum() - len(pos) * (len(pos) - 1) / 2) / (len(pos) * len(neg)))


def near_fall_mask(ds: Dataset, tr: dict, within: int = 10) -> np.ndarray:
    """Which transitions of ``tr`` start within ``within`` steps before a fall."""
    flag = np.zeros(len(ds), bool)
    for ep in ds.episodes():
        if ds.arrays["terminals"][ep[-1]]:
            flag[ep[-within:]] = True
    return flag[tr["rows"]]


def train_critic(data: str | Path, out: str | Path, cfg: CriticConfig = CriticConfig(), progress: bool = True,
                 skip_labels: bool = False, device: str = "auto") -> dict:
    """Train on ``data``; writes ``out/critic.pt`` (weights_only-loadable) and ``out/curves.json``.
    Data that holds label rounds is refused, unless ``skip_labels``: then it trains on the
    other episodes (a policy kind's critic, trained beside it on the same data). ``device``:
    where the networks train (``models/device.py``); they are saved and evaluated on the CPU."""
    from tqdm import tqdm

    from planner_node.models.device import resolve_device, to

    from planner_node.atomic import write_json
    from planner_node.models.checkpoint import save_checkpoint

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    dev = resolve_device(device)
    ds = Dataset(data)
    if not skip_labels:
        ds.require_executed_actions("the task critic")
    tr = transitions(ds, skip_labels=skip_labels)
    if not len(tr["rows"]):
        raise ValueError(f"{data}: no episode of executed actions to train the task critic on")
    tasks = tr["tasks"]
    train_idx, hold_idx = _split(tr, cfg.holdout_fraction, cfg.seed)
    mean, std = ds.stats["obs_mean"], ds.stats["obs_std"]
    n_t = len(tasks)
    v = ValueNet(mean, std, n_t, cfg.width, cfg.layers)
    q = QNet(mean, std, tr["a"].shape[1], n_t, cfg.width, cfg.layers)
    q_target = QNet(mean, std, tr["a"].shape[1], n_t, cfg.width, cfg.layers)
    q_target.load_state_dict(q.state_dict())
    v, q, q_target = v.to(dev), q.to(dev), q_target.to(dev)
    opt_v = torch.optim.Adam(v.parameters(), lr=cfg.lr)
    opt_q = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    T = {k: torch.from_numpy(np.asarray(tr[k], np.float32)) for k in ("s", "a", "s2", "fell", "r")}
    rng = np.random.default_rng(cfg.seed)
    curves = []
    t0 = time.time()
    for step in tqdm(range(1, cfg.steps + 1), desc="train critic", disable=not progress):
        b = torch.from_numpy(rng.choice(train_idx, cfg.batch_size))
        s, a, s2, fell, r = to(dev, *(T[k][b] for k in ("s", "a", "s2", "fell", "r")))
        with torch.no_grad():
            q_t = q_target(s, a)
            target = r + cfg.discount * (1.0 - fell)[:, None] * v(s2)
        loss_v = expectile_loss(q_t - v(s), cfg.expectile)
        opt_v.zero_grad()
        loss_v.backward()
        opt_v.step()
        loss_q = (q(s, a) - target).pow(2).mean()
        opt_q.zero_grad()
        loss_q.backward()
        opt_q.step()
        polyak(q_target, q, cfg.polyak)
        if step % 500 == 0 or step == cfg.steps:
            curves.append({"step": step, "loss_v": loss_v.item(), "loss_q": loss_q.item()})
    v, q = v.cpu(), q.cpu()
    metrics = evaluate_critic(v, q, tr, hold_idx if len(hold_idx) else train_idx, cfg, near_fall_mask(ds, tr))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "critic.pt", {"kind": KIND, "config": asdict(cfg), "tasks": tasks,
                                         "v": v.state_dict(), "q": q.state_dict(),
                                         "dataset": {"path": str(ds.path.resolve()), "dataset_sha256": ds.sha256},
                                         "metrics": metrics})
    write_json(out / "curves.json", {"curves": curves, "metrics": metrics, "train_s": time.time() - t0})
    return metrics


@torch.no_grad()
def evaluate_critic(v: ValueNet, q: QNet, tr: dict, idx: np.ndarray, cfg: CriticConfig, near_fall: np.ndarray) -> dict:
    """Held-out TD error, and how well V(s) ranks states just before a fall below the others."""
    s, a, s2 = (torch.from_numpy(np.asarray(tr[k][idx], np.float32)) for k in ("s", "a", "s2"))
    fell, r = torch.from_numpy(tr["fell"][idx]), torch.from_numpy(tr["r"][idx])
    target = r + cfg.discount * (1.0 - fell)[:, None] * v(s2)
    vs = v(s).numpy()
    td = (q(s, a) - target).pow(2).mean().item()
    auc = {t: _fall_auc(vs[:, k], near_fall[idx]) for k, t in enumerate(tr["tasks"])}
    return {"holdout_transitions": int(len(idx)), "holdout_td_mse": td, "near_fall_auc": auc,
            "mean_value": {t: float(vs[:, k].mean()) for k, t in enumerate(tr["tasks"])}}


class Critic:
    """A trained critic for scoring (torch): ``values(obs)`` -> (N, n_tasks) numpy."""

    def __init__(self, run: str | Path | None, threads: int = 1, payload: dict | None = None):
        """From a run (``critic.pt`` or its directory), or the ``payload`` of a loaded one (a
        checkpoint that carries its critic inside)."""
        from planner_node.models.checkpoint import CheckpointError, load_checkpoint
        if payload is None:
            p = Path(run)
            ck = load_checkpoint(p / "critic.pt" if p.is_dir() else p, expect_kind=KIND)
        else:
            ck = payload
        cfg = CriticConfig(**ck["config"])
        self.expectile = cfg.expectile
        self.tasks, self.discount = list(ck["tasks"]), cfg.discount
        sd = ck["v"]
        self.v = ValueNet(sd["obs_mean"].numpy(), sd["obs_std"].numpy(), len(self.tasks), cfg.width, cfg.layers)
        try:
            self.v.load_state_dict(sd)
        except RuntimeError as e:
            raise CheckpointError(f"{run}: critic weights do not fit its config ({e})") from e
        self.v.eval()
        sq = ck["q"]
        self.q = QNet(sq["obs_mean"].numpy(), sq["obs_std"].numpy(), cfg_act_dim(sq), len(self.tasks), cfg.width, cfg.layers)
        self.q.load_state_dict(sq)
        self.q.eval()
        torch.set_num_threads(threads)

    def _task(self, task: str) -> int:
        if task not in self.tasks:
            raise KeyError(f"the critic was not trained for task {task!r} (it knows {', '.join(self.tasks)})")
        return self.tasks.index(task)

    @torch.no_grad()
    def values(self, obs: np.ndarray, task: str) -> np.ndarray:
        return self.v(torch.as_tensor(np.asarray(obs, np.float32)))[:, self._task(task)].numpy()

    @torch.no_grad()
    def q_values(self, obs: np.ndarray, actions: np.ndarray, task: str) -> np.ndarray:
        """Q(s, a) of each action (N, 56) at one observation (224,): what executing it now is worth."""
        a = torch.as_tensor(np.asarray(actions, np.float32))
        s = torch.as_tensor(np.asarray(obs, np.float32)).expand(len(a), -1)
        return self.q(s, a)[:, self._task(task)].numpy()

    @torch.no_grad()
    def advantages(self, obs: np.ndarray, actions: np.ndarray, task: str) -> np.ndarray:
        """A(s, a) = Q(s, a) - V(s) for row-aligned (N, 224) observations and (N, 56) actions."""
        s = torch.as_tensor(np.asarray(obs, np.float32))
        a = torch.as_tensor(np.asarray(actions, np.float32))
        k = self._task(task)
        return (self.q(s, a)[:, k] - self.v(s)[:, k]).numpy()


def cfg_act_dim(q_state: dict) -> int:
    """The action width a Q network's first layer was built for."""
    return int(q_state["net.0.weight"].shape[1] - q_state["obs_mean"].shape[0])


def score_with_critic(model_scores: np.ndarray, final_obs: np.ndarray, horizon: int, critic: Critic, task: str,
                      weight: float = 1.0) -> np.ndarray:
    """Predicted reward over the plan plus (weight x) the discounted value of where it ends."""
    return model_scores + weight * critic.discount ** horizon * critic.values(final_obs, task)


def load_curves(run: str | Path) -> dict:
    return json.loads((Path(run) / "curves.json").read_text())
