"""IDQL (Hansen-Estruch et al. 2023): a diffusion model of the behaviour policy's action chunks,
and the IQL task critic choosing among its samples. Its training (``planner train`` with
``kind: idql``), the tick it runs (``IDQLTick``, also what the export traces) and its PyTorch
reference planner.

Why: the chunk policy regresses to the mean of the expert's actions; where the expert's
recoveries are multimodal (a step left or right), the mean is neither. A diffusion model samples
the modes; the critic (Q - V of each sample's first action, falls terminal) picks among them.

* Denoiser: IDQL's LN-ResNet over the noisy chunk (H x 56, z-scored), FiLM-conditioned in every
  block on an encoding of the z-scored observation, the task (one-hot, or a blend with stand:
  ``task_weights``) and the command, plus a sinusoidal embedding of the diffusion step. Output:
  the clean chunk (x0 prediction), not the noise as IDQL's: under the cosine schedule the last
  step's alpha-bar is 2.4e-5, so an epsilon model's clean estimate there is its noise error
  times 204, and DDIM in 4 steps starts there. Predicting x0 bounds the error at every level; at
  the noisiest it is the chunk policy's regression.
* Training: DDPM on the data's chunks (the chunk policy's windows, ``window_arrays``: a label
  row supervises its first action only), cosine noise schedule over ``diffusion_steps``; the
  loss is the clean chunk's error in action units, as the chunk policy's, so joints the expert
  barely moves (mostly its exploration noise) do not dominate.
* Critic: the task critic (``models/critic.py``: Q and V of every task, expectile V) trained
  after the policy on the same data's episodes of executed actions (label rounds' recorded
  actions were not executed, so no backup runs over them), and carried in the checkpoint.
* Sampling: DDIM (deterministic) over ``steps`` of the schedule, from draws the caller gives,
  with each step's clean estimate clipped to the action limits; unrolled, so one graph per tick.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from planner_node import spec
from planner_node.dataset import Dataset
from planner_node.models.checkpoint import load_checkpoint, save_checkpoint
from planner_node.models.chunk import recipe_weights, window_arrays
from planner_node.models.config import ConfigError, check_fields
from planner_node.models.critic import Critic, CriticConfig, QNet, ValueNet, train_critic
from planner_node.models.data import Normalizer, returns_to_go, split_episodes
from planner_node.models.device import cpu_state, describe, resolve_device, to
from planner_node.models.train import open_run, plot_metrics, policy_step
from planner_node.planning import Plan, Planner, PlanRequest
from planner_node.runtime.chunk import COMMAND_DIM, ChunkExecution, policy_inputs
from planner_node.runtime.idql_select import check_settings, choose, plan_info, sample_steps

KIND = "idql"


@dataclass(frozen=True)
class DenoiserConfig:
    horizon: int = 8            # actions per chunk (x 30 ms)
    width: int = 256
    blocks: int = 3             # LN-ResNet blocks (IDQL: 3 x 256)
    dropout: float = 0.1        # inside each block while training (IDQL's); identity when exported
    diffusion_steps: int = 10   # T of the training schedule (IDQL: 5); DDIM runs ``steps`` of them
    time_dim: int = 32          # sinusoidal embedding of the step

    def __post_init__(self):
        check_fields("policy", {"horizon": self.horizon >= 1, "width": self.width > 0, "blocks": self.blocks >= 1,
                                "dropout": 0 <= self.dropout < 1, "diffusion_steps": self.diffusion_steps >= 1,
                                "time_dim": self.time_dim >= 2 and self.time_dim % 2 == 0}, self)


@dataclass(frozen=True)
class IDQLTrainConfig:
    steps: int = 20_000
    batch_size: int = 256
    lr: float = 1e-3            # cosine-annealed to 0 over ``steps``
    weight_decay: float = 1e-4
    drop_before_fall: int = 0   # as ChunkTrainConfig
    label_weight: float = 1.0   # as ChunkTrainConfig
    recipe_weights: str = ""    # as ChunkTrainConfig
    action_target: str = "executed"  # as ChunkTrainConfig ("clean": a rollout's clean actions)
    seed: int = 0
    holdout_fraction: float = 0.1
    checkpoint_every: int = 1000
    eval_every: int = 500
    threads: int = 2

    def __post_init__(self):
        from planner_node.models.chunk import cloning_checks
        check_fields("train", cloning_checks(self), self)


@dataclass(frozen=True)
class IDQLCriticConfig:
    """The task critic trained beside the policy (``CriticConfig``'s fields)."""
    width: int = 256
    layers: int = 2
    discount: float = 0.99
    expectile: float = 0.7
    steps: int = 20_000
    batch_size: int = 512
    lr: float = 3e-4

    def __post_init__(self):
        check_fields("critic", {"width": self.width > 0, "layers": self.layers >= 1, "discount": 0 < self.discount < 1,
                                "expectile": 0 < self.expectile < 1, "steps": self.steps >= 1,
                                "batch_size": self.batch_size > 0, "lr": self.lr > 0}, self)


@dataclass(frozen=True)
class IDQLConfig:
    kind: str = KIND
    policy: DenoiserConfig = field(default_factory=DenoiserConfig)
    critic: IDQLCriticConfig = field(default_factory=IDQLCriticConfig)
    train: IDQLTrainConfig = field(default_factory=IDQLTrainConfig)

    def __post_init__(self):
        if self.kind != KIND:
            raise ConfigError(f"kind: {self.kind!r} is not {KIND!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- network ------------------------------------------------------------------------------------
def cosine_alphas_cumprod(T: int) -> np.ndarray:
    """(T,) alpha-bar of the cosine schedule (Nichol & Dhariwal 2021), step t = 0 .. T-1, each beta
    at most 0.999."""
    s = 0.008
    x = np.linspace(0, T, T + 1) / T
    f = np.cos((x + s) / (1 + s) * np.pi / 2) ** 2
    betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
    return np.cumprod(1 - betas)


class ResBlock(nn.Module):
    """IDQL's LN-ResNet block, FiLM-conditioned: x + W2 Mish(W1 (LN(Dropout(x)) (1 + s) + b)),
    4x wide inside; (s, b) from the block's projection of the condition embedding."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.pre = nn.Sequential(nn.Dropout(dropout), nn.LayerNorm(width))
        self.film = nn.Linear(width, 2 * width)
        self.net = nn.Sequential(nn.Linear(width, 4 * width), nn.Mish(), nn.Linear(4 * width, width))

    def forward(self, x, c):
        s, b = self.film(c).chunk(2, -1)
        return x + self.net(self.pre(x) * (1 + s) + b)


class Denoiser(nn.Module):
    """(x_t (N, H*56), t (N,) float step, cond (N, 224 + n_tasks + 3)) -> the predicted clean
    chunk x0 (N, H*56), z-scored.

    The condition (observation, task, command) has its own encoder and reaches every block
    through FiLM with the step's embedding (as Diffusion Policy conditions its denoiser), so its
    encoding is computed once per tick, not once per sample and step.
    ``encode`` and ``step`` split the work so that a tick encodes its one observation once."""

    def __init__(self, cfg: DenoiserConfig, n_tasks: int):
        super().__init__()
        self.cfg = cfg
        d, w = cfg.horizon * spec.ACTION_DIM, cfg.width
        self.time = nn.Sequential(nn.Linear(cfg.time_dim, w), nn.Mish(), nn.Linear(w, w))
        self.cond = nn.Sequential(nn.Linear(spec.OBS_DIM + n_tasks + COMMAND_DIM, w), nn.Mish(), nn.Linear(w, w))
        self.inp = nn.Linear(d, w)
        self.blocks = nn.ModuleList([ResBlock(w, cfg.dropout) for _ in range(cfg.blocks)])
        self.out = nn.Sequential(nn.Mish(), nn.Linear(w, d))
        half = cfg.time_dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half))

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        a = t[:, None] * self.freqs[None]
        return self.time(torch.cat([a.sin(), a.cos()], -1))

    def encode(self, cond: torch.Tensor) -> torch.Tensor:
        return self.cond(cond)

    def step(self, x, t, c):
        """One prediction, ``c`` the encoded condition ((N or 1, width)), ``t`` (N or 1,)."""
        c = nn.functional.mish(c + self.embed(t))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(h)

    def forward(self, x, t, cond):
        return self.step(x, t, self.encode(cond))


class IDQLTick(nn.Module):
    """One tick: (noise (N, H*56) draws, obs (1, 224) z-scored, task (1, n_tasks), command (1, 3))
    -> the N sampled chunks (N, H, 56) z-scored and each one's advantage (N,): Q(s, a0) - V(s) of
    its first action under the task (a task blend weighs the tasks' advantages alike; the critic's
    columns are picked in the policy's task order). DDIM over
    ``steps`` (a subsequence of the schedule), unrolled; each clean estimate is clipped to the
    actions' limits in z units."""

    def __init__(self, denoiser: Denoiser, q: QNet, v: ValueNet, norm: Normalizer, steps: int, task_cols: list[int]):
        super().__init__()
        self.register_buffer("task_cols", torch.tensor(task_cols, dtype=torch.int64))   # policy task -> critic
        self.denoiser, self.q, self.v = denoiser, q, v
        self.H = denoiser.cfg.horizon
        ab = cosine_alphas_cumprod(denoiser.cfg.diffusion_steps)
        self.schedule = [(t, float(ab[t]), float(ab[p]) if p >= 0 else 1.0)
                         for t, p in sample_steps(denoiser.cfg.diffusion_steps, steps)]
        st = norm.stats
        for name in ("obs_mean", "obs_std", "act_mean", "act_std"):
            self.register_buffer(name, torch.from_numpy(st[name].copy()))
        self.register_buffer("z_lo", torch.from_numpy(((-1.0 - st["act_mean"]) / st["act_std"]).astype(np.float32)))
        self.register_buffer("z_hi", torch.from_numpy(((1.0 - st["act_mean"]) / st["act_std"]).astype(np.float32)))

    def sample(self, noise, obs, task, command):
        n = noise.shape[0]
        c = self.denoiser.encode(torch.cat([obs, task, command], -1))   # (1, width): once per tick
        x = noise
        lo, hi = self.z_lo.repeat(self.H), self.z_hi.repeat(self.H)
        for t, ab, ab_prev in self.schedule:
            x0 = torch.maximum(torch.minimum(self.denoiser.step(x, torch.full((1,), float(t)), c), hi), lo)
            eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
            x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps if ab_prev < 1.0 else x0
        return x.reshape(n, self.H, spec.ACTION_DIM)

    def advantage(self, chunks, obs, task):
        raw = obs * self.obs_std + self.obs_mean
        first = torch.clamp(chunks[:, 0] * self.act_std + self.act_mean, -1.0, 1.0)
        a = (self.q(raw.expand(chunks.shape[0], -1), first) - self.v(raw)).index_select(1, self.task_cols)
        return (a * task).sum(-1) / task.sum(-1)

    def forward(self, noise, obs, task, command):
        chunks = self.sample(noise, obs, task, command)
        return chunks, self.advantage(chunks, obs, task)


# -- training -----------------------------------------------------------------------------------
class IDQLTrainer:
    """The denoiser (resumable, deterministic batches keyed by (seed, step)), then the critic on
    the same data; the run directory's layout is the other kinds'."""

    def __init__(self, cfg: IDQLConfig, data_dir: str | Path, out: str | Path, progress: bool = True,
                 device: str = "auto"):
        self.cfg, self.out, self.progress, self.data_dir = cfg, Path(out), progress, data_dir
        self.device_name, self.device = device, resolve_device(device)
        t, H = cfg.train, cfg.policy.horizon
        torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)
        self.ds = Dataset(data_dir)
        self.data_id = {"path": str(self.ds.path.resolve()), "dataset_sha256": self.ds.sha256}
        self.norm = Normalizer.from_dataset(self.ds, returns_to_go(self.ds, 0.99))
        self.policy_tasks = list(self.ds.tasks)
        train_eps, hold_eps = split_episodes(self.ds, t.holdout_fraction, t.seed)
        labelled, weights = self.ds.label_rows(), recipe_weights(self.ds, t.recipe_weights)
        # as the chunk policy's default: a label row supervises its first action only
        windows = SimpleNamespace(drop_before_fall=t.drop_before_fall, label_tails="none", label_tail_weight=1.0,
                                  label_weight=t.label_weight, action_target=t.action_target)
        self.train = window_arrays(self.ds, self.norm, self.policy_tasks, train_eps, H, windows, labelled, weights)
        self.hold = window_arrays(self.ds, self.norm, self.policy_tasks, hold_eps, H, windows, labelled, weights)
        if not len(self.train[0]):
            raise ValueError(f"{data_dir}: no training episode")
        self.tasks = [self.ds.tasks[i] for i in np.unique(self.ds.arrays["task_ids"])]
        self.split = {"train_episodes": len(train_eps), "holdout_episodes": len(hold_eps),
                      "train_windows": len(self.train[0]), "holdout_windows": len(self.hold[0])}
        act_var = torch.from_numpy(self.norm.stats["act_std"] ** 2)
        self.act_var = (act_var / act_var.mean()).to(self.device)   # action units, scaled to a mean of 1
        self.alphas = torch.from_numpy(cosine_alphas_cumprod(cfg.policy.diffusion_steps).astype(np.float32)).to(self.device)
        self.model = Denoiser(cfg.policy, len(self.policy_tasks)).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.step, self.critic = 0, None
        ck = open_run(self.out, cfg.to_dict(), self.data_id, KIND, ("model", "opt"))
        if ck is not None:
            self.model.load_state_dict(ck["model"])
            if "opt" in ck:
                self.opt.load_state_dict(ck["opt"])
            self.step, self.critic = ck["step"], ck.get("critic")
            torch.set_rng_state(ck["torch_rng"])

    def _payload(self) -> dict:
        done = self.step >= self.cfg.train.steps and self.critic is not None
        return {"kind": KIND, "config": self.cfg.to_dict(), "stage": "done" if done else "policy", "step": self.step,
                "model": cpu_state(self.model.state_dict()), "opt": cpu_state(self.opt.state_dict()),
                "normalizer": self.norm.to_tensors(),
                "dataset": self.data_id, "tasks": self.tasks, "policy_tasks": self.policy_tasks, "split": self.split,
                "torch_rng": torch.get_rng_state(), **({"critic": self.critic} if self.critic is not None else {})}

    def save(self) -> None:
        save_checkpoint(self.out / "checkpoint.pt", self._payload())

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """``batch_size`` training windows drawn with ``rng``: the same rows of every array."""
        idx = torch.from_numpy(rng.integers(0, len(self.train[0]), self.cfg.train.batch_size))
        return to(self.device, *(x[idx] for x in self.train))

    def loss(self, x0, obs, task, cmd, mask, rng: np.random.Generator) -> torch.Tensor:
        """The clean chunk's MSE at a random step, weighted per joint in action units and by
        the windows' step mask (steps past an episode's end, label tails: 0)."""
        n = x0.shape[0]
        t, eps = to(self.device, torch.from_numpy(rng.integers(0, len(self.alphas), n)),
                    torch.from_numpy(rng.standard_normal(x0.shape, dtype=np.float32)))
        ab = self.alphas[t][:, None, None]
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        pred = self.model(xt.reshape(n, -1), t.float(), torch.cat([obs, task, cmd], -1)).reshape(x0.shape)
        err = ((pred - x0) ** 2 * self.act_var).mean(-1) * mask
        return err.sum() / mask.sum().clamp(min=1)

    @torch.no_grad()
    def _holdout(self) -> float:
        if not len(self.hold[0]):
            return float("nan")
        obs, task, cmd, act, mask = to(self.device, *(x[:4096] for x in self.hold))
        self.model.eval()
        try:
            return self.loss(act, obs, task, cmd, (mask > 0).float(), np.random.default_rng(0)).item()
        finally:
            self.model.train()

    def _train_critic(self) -> None:
        """The task critic on this data's executed episodes, into ``critic/`` and the checkpoint."""
        c = self.cfg.critic
        cc = CriticConfig(width=c.width, layers=c.layers, discount=c.discount, expectile=c.expectile, steps=c.steps,
                          batch_size=c.batch_size, lr=c.lr, seed=self.cfg.train.seed, threads=self.cfg.train.threads)
        train_critic(self.data_dir, self.out / "critic", cc, progress=self.progress, skip_labels=True,
                     device=self.device_name)
        self.critic = {k: v for k, v in load_checkpoint(self.out / "critic" / "critic.pt", expect_kind="critic").items()
                       if k in ("kind", "config", "tasks", "v", "q", "metrics")}

    def run(self, stop_after: int | None = None) -> dict:
        """Train to the end (or return after ``stop_after`` optimizer steps without saving, as a
        kill would leave it: the next run resumes from the last checkpoint)."""
        from tqdm import tqdm

        t = self.cfg.train
        t0, done_steps = time.time(), 0
        if self.progress:
            print(f"training on {describe(self.device)}")
        bar = tqdm(total=t.steps, initial=self.step, desc="idql denoiser", disable=not self.progress)
        while self.step < t.steps:
            if stop_after is not None and done_steps >= stop_after:
                return {"stage": "killed", "step": self.step}
            rng = np.random.default_rng([t.seed, self.step])
            obs, task, cmd, act, mask = self.batch(rng)
            loss = self.loss(act, obs, task, cmd, mask, rng)
            policy_step(self, loss, t0, bar)
            done_steps += 1
        bar.close()
        if self.critic is None:
            self.save()                  # the denoiser is kept if the critic's training is killed
            self._train_critic()
            done_steps += 1
        if done_steps:   # a finished run resumed is left as it is
            self.save()
            plot_metrics(self.out, (("policy", "clean-chunk MSE (action-unit weighted)"),))
        return {"stage": "done", "wall_s": time.time() - t0, **self.split, "critic": self.critic["metrics"]}


# -- the planner --------------------------------------------------------------------------------
def build_tick(ck: dict, steps: int) -> tuple[IDQLConfig, IDQLTick, Critic]:
    """The trained tick (eval mode) from a loaded checkpoint, sampling in ``steps`` DDIM steps."""
    from planner_node.models.checkpoint import CheckpointError
    from planner_node.models.config import config_from_dict
    if "critic" not in ck:
        raise CheckpointError(f"idql checkpoint at step {ck.get('step')} has no critic yet: finish its training "
                              "(planner train resumes it)")
    cfg = config_from_dict(ck["config"])
    den = Denoiser(cfg.policy, len(ck["policy_tasks"]))
    den.load_state_dict(ck["model"])
    critic = Critic(None, payload=ck["critic"])
    missing = [t for t in ck["policy_tasks"] if t not in critic.tasks]
    if missing:
        raise CheckpointError(f"idql checkpoint: its critic knows no task {missing[0]!r} (it knows "
                              f"{', '.join(critic.tasks)})")
    cols = [critic.tasks.index(t) for t in ck["policy_tasks"]]
    tick = IDQLTick(den, critic.q, critic.v, Normalizer.from_tensors(ck["normalizer"]), steps, cols)
    return cfg, tick.eval(), critic


class IDQLPlanner(Planner):
    """IDQL's PyTorch reference planner: ``samples`` chunks from the denoiser, one chosen by the
    critic (``select``), blended with the last ones (temporal ensembling) as the chunk policy's."""

    name = kind = KIND

    def __init__(self, checkpoint: str, seed: int | None = 0, threads: int = 2, **settings):
        from planner_node.kinds import get_kind
        unknown = sorted(set(settings) - set(get_kind(KIND).defaults))
        if unknown:
            raise ValueError(f"unknown idql settings {unknown}; valid: {sorted(get_kind(KIND).defaults)}")
        ck = load_checkpoint(checkpoint, expect_kind=KIND)
        self.settings = {**get_kind(KIND).defaults, **settings}
        self.cfg, self.tick, self.critic = build_tick(ck, int(self.settings["steps"]))
        self.norm = Normalizer.from_tensors(ck["normalizer"])
        self.tasks = list(ck["policy_tasks"])
        torch.set_num_threads(threads)
        self.task_weights = check_settings(self.settings, self.cfg.policy.horizon, self.tasks,
                                           self.cfg.policy.diffusion_steps)
        self.execution = ChunkExecution(self.settings)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.execution.reset()

    @torch.no_grad()
    def plan(self, request: PlanRequest) -> Plan:
        n, d = int(self.settings["samples"]), self.cfg.policy.horizon * spec.ACTION_DIM
        noise = self.rng.standard_normal((n, d), dtype=np.float32)
        obs = self.norm.norm_obs(np.asarray(request.obs, np.float32)).astype(np.float32)[None]
        task, cmd = policy_inputs(obs, self.tasks, request.task, request.command, self.task_weights)
        z, adv = self.tick(torch.from_numpy(noise), torch.from_numpy(obs), torch.from_numpy(task),
                           torch.from_numpy(cmd))
        chunks = np.clip(self.norm.unnorm_act(z.numpy().astype(np.float64)), -1.0, 1.0)
        i = choose(adv.numpy().astype(np.float64), self.settings, self.rng, self.critic.expectile)
        return Plan(self.execution(chunks[i], request.obs), float(adv[i]), info=plan_info(chunks, adv.numpy()))
