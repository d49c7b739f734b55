"""Diffuser (Janner et al. 2022): a temporal U-Net that denoises whole trajectories of
(observation, action) rows, a value network on noisy trajectories that guides and ranks them,
its training (``planner train`` with ``kind: diffuser``) and its PyTorch reference planner.

* Rows are normalised (observation, action), observation first; the current observation is
  written into row 0 after every denoising step (inpainting), in training and in sampling.
* The network predicts the clean trajectory x0 (Diffuser's locomotion setting); the loss is
  the MSE to x0 with the first row's action weighted ``diffusion.action_weight`` times.
* The value network is an MLP over the flattened noisy trajectory plus a time embedding, with
  one output per task. Its targets are the discounted return-to-go of every task from the
  window's first step, from the critic's relabelled transitions (``models/critic.py:
  transitions``: every task's reward of every step, a fall terminal), z-scored per task. An
  MLP has a closed-form input gradient (``value_and_grad``), which exports to ONNX and
  TensorRT as plain graph ops, so guidance runs in the runtime without autograd.
* Sampling (every sampler, guidance, ranking) is ``planner_node.runtime.diffuser``'s
  ``DiffusionSampler``, over torch modules here and over the bundle's graphs in the runtime.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from planner_node import spec
from planner_node.dataset import Dataset
from planner_node.models.checkpoint import load_checkpoint, save_checkpoint
from planner_node.models.config import ConfigError, check_fields
from planner_node.models.data import (Normalizer, returns_to_go, split_episodes, window_features, window_set,
                                      window_starts)
from planner_node.models.device import cpu_state, ddp, describe, init_distributed, resolve_device, to
from planner_node.models.layers import mish
from planner_node.models.train import append_metrics, open_run, plot_metrics
from planner_node.planning import Candidates, Plan, Planner, PlanRequest
from planner_node.runtime.diffuser import DiffusionSampler, DiffuserPlanMixin, Schedule

KIND = "diffuser"


@dataclass(frozen=True)
class UNetConfig:
    """Temporal U-Net: ``levels`` resolutions, channels dim x 2^level, the horizon halving per level."""

    horizon: int = 32
    dim: int = 32
    levels: int = 4          # the paper: 32 -> 64 -> 128 -> 256
    kernel: int = 5

    def __post_init__(self):
        check_fields("unet", {"horizon": self.horizon > 0 and self.horizon % 2 ** (self.levels - 1) == 0,
                        "dim": self.dim > 0 and self.dim % 8 == 0, "levels": self.levels >= 1,
                        "kernel": self.kernel % 2 == 1}, self)

    @property
    def dims(self) -> list[int]:
        return [self.dim * 2 ** i for i in range(self.levels)]


@dataclass(frozen=True)
class DiffusionConfig:
    steps: int = 20               # T, the DDPM steps of training and of the reference sampler
    action_weight: float = 10.0   # loss weight of the first row's action (what is executed)

    def __post_init__(self):
        check_fields("diffusion", {"steps": self.steps >= 2, "action_weight": self.action_weight > 0}, self)


@dataclass(frozen=True)
class ValueConfig:
    width: int = 256
    layers: int = 2
    discount: float = 0.99        # per 30 ms control step, as the critic's

    def __post_init__(self):
        check_fields("value", {"width": self.width > 0, "layers": self.layers >= 1, "discount": 0 < self.discount < 1}, self)


@dataclass(frozen=True)
class DiffuserTrainConfig:
    diffusion_steps: int = 20000
    value_steps: int = 5000
    batch_size: int = 32
    lr: float = 2e-4
    ema_decay: float = 0.995      # the sampler uses the EMA weights (the paper's)
    seed: int = 0
    holdout_fraction: float = 0.1
    checkpoint_every: int = 250
    eval_every: int = 100
    threads: int = 2
    action_target: str = "executed"   # as the VQ-VAE's TrainConfig ("clean": a rollout's clean actions)

    def __post_init__(self):
        from planner_node.models.data import ACTION_TARGETS
        check_fields("train", {"diffusion_steps": self.diffusion_steps >= 0, "value_steps": self.value_steps >= 0,
                         "action_target": self.action_target in ACTION_TARGETS,
                         "batch_size": self.batch_size > 0, "lr": self.lr > 0, "ema_decay": 0 <= self.ema_decay < 1,
                         "holdout_fraction": 0 <= self.holdout_fraction < 1,
                         "checkpoint_every": self.checkpoint_every > 0, "eval_every": self.eval_every > 0,
                         "threads": self.threads > 0}, self)


@dataclass(frozen=True)
class DiffuserConfig:
    kind: str = KIND
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    train: DiffuserTrainConfig = field(default_factory=DiffuserTrainConfig)

    def __post_init__(self):
        if self.kind != KIND:
            raise ConfigError(f"kind: {self.kind!r} is not {KIND!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def transition_dim(self) -> int:
        return spec.OBS_DIM + spec.ACTION_DIM


# -- networks -----------------------------------------------------------------------------------
def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the (float) diffusion step t (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(10000.0) / (half - 1)))
    a = t[:, None].float() * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=-1)


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.norm = nn.GroupNorm(8, c_out)

    def forward(self, x):
        return mish(self.norm(self.conv(x)))


class ResidualTemporalBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int, kernel: int):
        super().__init__()
        self.b1, self.b2 = ConvBlock(c_in, c_out, kernel), ConvBlock(c_out, c_out, kernel)
        self.time = nn.Linear(t_dim, c_out)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.b1(x) + self.time(mish(temb))[:, :, None]
        return self.b2(h) + self.skip(x)


class TemporalUnet(nn.Module):
    """x (N, H, D), t (N,) float -> the predicted clean trajectory x0 (N, H, D)."""

    def __init__(self, cfg: UNetConfig, transition_dim: int):
        super().__init__()
        dims, k = cfg.dims, cfg.kernel
        self.t_dim = cfg.dim
        self.time_mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.dim * 4), nn.Mish(), nn.Linear(cfg.dim * 4, cfg.dim))
        io = list(zip([transition_dim, *dims[:-1]], dims))
        self.downs = nn.ModuleList()
        for i, (ci, co) in enumerate(io):
            last = i == len(io) - 1
            self.downs.append(nn.ModuleList([ResidualTemporalBlock(ci, co, cfg.dim, k),
                                             ResidualTemporalBlock(co, co, cfg.dim, k),
                                             nn.Conv1d(co, co, 3, stride=2, padding=1) if not last else nn.Identity()]))
        mid = dims[-1]
        self.mid1, self.mid2 = ResidualTemporalBlock(mid, mid, cfg.dim, k), ResidualTemporalBlock(mid, mid, cfg.dim, k)
        self.ups = nn.ModuleList()
        for ci, co in reversed(io[1:]):   # levels - 1 upsamplings undo the downsamplings
            self.ups.append(nn.ModuleList([ResidualTemporalBlock(co * 2, ci, cfg.dim, k),
                                           ResidualTemporalBlock(ci, ci, cfg.dim, k),
                                           nn.ConvTranspose1d(ci, ci, 4, stride=2, padding=1)]))
        self.final = nn.Sequential(ConvBlock(dims[0], dims[0], k), nn.Conv1d(dims[0], transition_dim, 1))

    def forward(self, x, t):
        x = x.transpose(1, 2)
        temb = self.time_mlp(time_embedding(t, self.t_dim))
        skips = []
        for r1, r2, down in self.downs:
            x = r2(r1(x, temb), temb)
            skips.append(x)
            x = down(x)
        x = self.mid2(self.mid1(x, temb), temb)
        for r1, r2, up in self.ups:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(r2(r1(x, temb), temb))
        return self.final(x).transpose(1, 2)


def _mish_grad(z: torch.Tensor) -> torch.Tensor:
    """d mish(z) / dz = tanh(sp) + z sigmoid(z) (1 - tanh(sp)^2), sp = softplus(z)."""
    th = torch.tanh(F.softplus(z))
    return th + z * torch.sigmoid(z) * (1.0 - th * th)


class TrajectoryValue(nn.Module):
    """Noisy trajectory (N, H, D) and step t (N,) -> normalised value of every task (N, n_tasks)."""

    def __init__(self, horizon: int, transition_dim: int, n_tasks: int, width: int, layers: int, t_dim: int = 32):
        super().__init__()
        self.t_dim = t_dim
        self.time = nn.Linear(t_dim, width)
        self.inp = nn.Linear(horizon * transition_dim, width)
        self.hidden = nn.ModuleList([nn.Linear(width, width) for _ in range(layers - 1)])
        self.out = nn.Linear(width, n_tasks)

    def _pre(self, x, t):
        return self.inp(x.flatten(1)) + self.time(time_embedding(t, self.t_dim))

    def forward(self, x, t):
        h = mish(self._pre(x, t))   # layers.mish: F.mish, or its one-exp form in ONNX export
        for layer in self.hidden:
            h = mish(layer(h))
        return self.out(h)

    def value_and_grad(self, x, t, weight):
        """(values, d sum(weight * values) / dx), the backward pass written out (no autograd),
        so that it exports as a graph."""
        zs = [self._pre(x, t)]
        h = mish(zs[0])
        for layer in self.hidden:
            zs.append(layer(h))
            h = mish(zs[-1])
        v = self.out(h)
        g = weight @ self.out.weight
        for layer, z in zip(reversed([self.inp, *self.hidden]), reversed(zs)):
            g = (g * _mish_grad(z)) @ layer.weight
        return v, g.reshape(x.shape)


class ValueGradGraph(nn.Module):
    """The exported guidance graph: (x, t, weight) -> (value, grad)."""

    def __init__(self, value: TrajectoryValue):
        super().__init__()
        self.value = value

    def forward(self, x, t, weight):
        return self.value.value_and_grad(x, t, weight)


# -- data ---------------------------------------------------------------------------------------
def task_returns(ds: Dataset, discount: float) -> tuple[np.ndarray, list[str]]:
    """(len(ds), n_tasks) discounted return-to-go of every task from every step, over the critic's
    relabelled transitions (a fall terminal); an episode's unrecorded last step counts 0."""
    from planner_node.models.critic import transitions
    tr = transitions(ds)
    r = np.zeros((len(ds), len(tr["tasks"])), np.float64)
    r[tr["rows"]] = tr["r"]
    out = np.zeros_like(r)
    for ep in ds.episodes():
        acc = np.zeros(r.shape[1])
        for i in ep[::-1]:
            acc = r[i] + discount * acc
            out[i] = acc
    return out.astype(np.float32), tr["tasks"]


def apply_condition(x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, 0, : spec.OBS_DIM] = state
    return x


# -- training -----------------------------------------------------------------------------------
class DiffuserTrainer:
    """Stages ``diffusion`` then ``value`` then ``done``; resumable, deterministic batches keyed by
    (seed, stage, step), the same run directory layout as the VQ-VAE + prior trainer."""

    def __init__(self, cfg: DiffuserConfig, data_dir: str | Path, out: str | Path, progress: bool = True,
                 device: str = "auto"):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.device = resolve_device(device)
        self.world, self.rank = init_distributed(self.device)
        t, H = cfg.train, cfg.unet.horizon
        torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)
        self.ds = Dataset(data_dir)
        self.ds.require_executed_actions("Diffuser (a trajectory model)")
        self.data_id = {"path": str(self.ds.path.resolve()), "dataset_sha256": self.ds.sha256}
        self.norm = Normalizer.from_dataset(self.ds, returns_to_go(self.ds, cfg.value.discount))
        train_eps, hold_eps = split_episodes(self.ds, t.holdout_fraction, t.seed)
        feats = torch.from_numpy(window_features(self.ds, self.norm, None, False, t.action_target))
        self.train_x, self.hold_x = window_set(feats, train_eps, H), window_set(feats, hold_eps, H)
        if len(self.train_x) == 0:
            raise ValueError(f"{data_dir}: no training episode is at least unet.horizon={H} steps long")
        rtg, self.value_tasks = task_returns(self.ds, cfg.value.discount)
        self.train_v = rtg[window_starts(train_eps, H)]
        self.hold_v = rtg[window_starts(hold_eps, H)]
        self.val_mean = self.train_v.mean(0)
        self.val_std = self.train_v.std(0) + 1e-4
        self.train_v = torch.from_numpy((self.train_v - self.val_mean) / self.val_std)
        self.hold_v = torch.from_numpy((self.hold_v - self.val_mean) / self.val_std)
        self.tasks = [self.ds.tasks[i] for i in np.unique(self.ds.arrays["task_ids"])]
        self.split = {"train_episodes": len(train_eps), "holdout_episodes": len(hold_eps),
                      "train_windows": len(self.train_x), "holdout_windows": len(self.hold_x)}
        D = cfg.transition_dim
        self.model, self.ema = TemporalUnet(cfg.unet, D).to(self.device), TemporalUnet(cfg.unet, D).to(self.device)
        self.ema.load_state_dict(self.model.state_dict())
        self.value = TrajectoryValue(H, D, len(self.value_tasks), cfg.value.width, cfg.value.layers).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=t.lr)
        self.opt_value = torch.optim.Adam(self.value.parameters(), lr=t.lr)
        sched = Schedule(cfg.diffusion.steps)
        self.sqrt_ab = torch.tensor(np.sqrt(sched.alphas_cumprod), dtype=torch.float32, device=self.device)
        self.sqrt_1mab = torch.tensor(np.sqrt(1 - sched.alphas_cumprod), dtype=torch.float32, device=self.device)
        w = torch.ones(H, D)
        w[0, spec.OBS_DIM:] = cfg.diffusion.action_weight
        self.loss_weight = w.to(self.device)
        self.stage, self.step = "diffusion", 0
        self._resume_or_start()

    def _payload(self) -> dict:
        return {"kind": KIND, "config": self.cfg.to_dict(), "stage": self.stage, "step": self.step,
                **{name: cpu_state(getattr(self, name).state_dict()) for name in ("model", "ema", "value", "opt", "opt_value")},
                "normalizer": self.norm.to_tensors(), "dataset": self.data_id, "tasks": self.tasks,
                "value_tasks": self.value_tasks, "value_mean": torch.from_numpy(self.val_mean),
                "value_std": torch.from_numpy(self.val_std), "split": self.split, "torch_rng": torch.get_rng_state()}

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.out / "checkpoint.pt", self._payload())

    def _resume_or_start(self) -> None:
        states = ("model", "ema", "value", "opt", "opt_value")
        ck = open_run(self.out, self.cfg.to_dict(), self.data_id, KIND, states, write=self.rank == 0)
        if ck is not None:
            for name in states:
                if name in ck:
                    getattr(self, name).load_state_dict(ck[name])
            self.stage, self.step = ck["stage"], ck["step"]
            torch.set_rng_state(ck["torch_rng"])

    def _noisy(self, x0: torch.Tensor, rng: np.random.Generator):
        """(x_t conditioned on row 0's observation, t) for x0 at random steps, noise from ``rng``."""
        t, noise = to(self.device, torch.from_numpy(rng.integers(0, self.cfg.diffusion.steps, len(x0))),
                      torch.from_numpy(rng.standard_normal(x0.shape, dtype=np.float32)))
        xt = self.sqrt_ab[t][:, None, None] * x0 + self.sqrt_1mab[t][:, None, None] * noise
        return apply_condition(xt, x0[:, 0, : spec.OBS_DIM]), t

    def diffusion_loss(self, model, x0: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        xt, t = self._noisy(x0, rng)
        pred = apply_condition(model(xt, t.float()), x0[:, 0, : spec.OBS_DIM])
        return ((pred - x0) ** 2 * self.loss_weight).mean()

    def value_loss(self, x0: torch.Tensor, target: torch.Tensor, rng: np.random.Generator, value=None) -> torch.Tensor:
        xt, t = self._noisy(x0, rng)
        return F.mse_loss((self.value if value is None else value)(xt, t.float()), target)

    @torch.no_grad()
    def _holdout(self, stage: str) -> float:
        if not len(self.hold_x):
            return float("nan")
        rng = np.random.default_rng([self.cfg.train.seed, 99])   # the same noise at every evaluation
        x, v = to(self.device, self.hold_x[:512], self.hold_v[:512])
        if stage == "diffusion":
            return self.diffusion_loss(self.ema, x, rng).item()
        return self.value_loss(x, v, rng).item()

    def _ema_update(self) -> None:
        d = self.cfg.train.ema_decay
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.model.parameters()):
                e.mul_(d).add_(p, alpha=1 - d)
            for e, p in zip(self.ema.buffers(), self.model.buffers()):
                e.copy_(p)

    def run(self, stop_after: int | None = None) -> dict:
        """Train to the end (or return after ``stop_after`` optimizer steps without saving, as
        a kill would leave it: the next run resumes from the last checkpoint)."""
        from tqdm import tqdm

        t = self.cfg.train
        t0, done_steps = time.time(), 0
        for stage, total, opt in (("diffusion", t.diffusion_steps, self.opt), ("value", t.value_steps, self.opt_value)):
            if self.stage != stage:
                continue
            if self.progress and not self.rank:
                print(f"training on {describe(self.device)}, {self.world} rank(s)")
            trained = ddp(self.model if stage == "diffusion" else self.value, self.device, self.world)
            bar = tqdm(total=total, initial=self.step, desc=f"diffuser {stage}", disable=not self.progress or self.rank)
            while self.step < total:
                if stop_after is not None and done_steps >= stop_after:
                    return {"stage": "killed", "step": self.step}
                # one rank keys its batches as before torchrun existed (resumed runs match)
                key = [t.seed, 0 if stage == "diffusion" else 1, self.step] + ([self.rank] if self.world > 1 else [])
                rng = np.random.default_rng(key)
                i = torch.from_numpy(rng.integers(0, len(self.train_x), t.batch_size))
                x0, v0 = to(self.device, self.train_x[i], self.train_v[i])
                loss = (self.diffusion_loss(trained, x0, rng) if stage == "diffusion"
                        else self.value_loss(x0, v0, rng, trained))
                opt.zero_grad()
                loss.backward()
                opt.step()
                if stage == "diffusion":
                    self._ema_update()
                self.step += 1
                done_steps += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if (self.step % t.eval_every == 0 or self.step == total) and self.rank == 0:
                    append_metrics(self.out, {"stage": stage, "step": self.step, "wall_s": round(time.time() - t0, 2),
                               "train_loss": loss.item(), "holdout_loss": self._holdout(stage)})
                if self.step % t.checkpoint_every == 0:
                    self.save()
            bar.close()
            self.stage, self.step = ("value", 0) if stage == "diffusion" else ("done", 0)
            self.save()
        if self.rank == 0:
            plot_metrics(self.out, (("diffusion", "weighted x0 MSE"), ("value", "value MSE (z-scored)")))
        return {"stage": self.stage, "wall_s": time.time() - t0, **self.split}


def build_models(ck: dict) -> tuple[DiffuserConfig, TemporalUnet, TrajectoryValue, Normalizer]:
    """The trained networks (the EMA denoiser), in eval mode, from a loaded checkpoint."""
    from planner_node.models.config import config_from_dict
    cfg = config_from_dict(ck["config"])
    D = cfg.transition_dim
    unet = TemporalUnet(cfg.unet, D)
    unet.load_state_dict(ck["ema"])
    value = TrajectoryValue(cfg.unet.horizon, D, len(ck["value_tasks"]), cfg.value.width, cfg.value.layers)
    value.load_state_dict(ck["value"])
    return cfg, unet.eval(), value.eval(), Normalizer.from_tensors(ck["normalizer"])


# -- the reference planner ----------------------------------------------------------------------
#: The paper's planner: 20 DDPM steps, value-gradient guidance, 64 samples ranked by value.
REFERENCE_SETTINGS = {"samples": 64, "sampler": "ddpm", "steps": 20, "warm_start": 4, "cold_steps": 10,
                      "guide": "gradient", "guide_scale": 0.1, "guide_steps": 2, "guide_stop": 2}


class DiffuserPlanner(Planner, DiffuserPlanMixin):
    """Diffuser's PyTorch reference planner; any sampler setting (the paper's by default)."""

    name = kind = KIND

    def __init__(self, checkpoint: str, seed: int | None = 0, threads: int = 2, **settings):
        unknown = sorted(set(settings) - set(REFERENCE_SETTINGS))
        if unknown:
            raise ValueError(f"unknown Diffuser settings {unknown}; valid: {sorted(REFERENCE_SETTINGS)}")
        ck = load_checkpoint(checkpoint, expect_kind=KIND)
        self.cfg, self.unet, self.value, self.norm = build_models(ck)
        torch.set_num_threads(threads)
        self.sampler = DiffusionSampler(self.cfg.diffusion.steps, spec.OBS_DIM, self._denoise, self._value,
                                        self._value_grad)
        self._setup({**REFERENCE_SETTINGS, **settings}, ck["value_tasks"], ck["value_mean"].numpy(),
                    ck["value_std"].numpy(), spec.OBS_DIM, self.cfg.unet.horizon, self.cfg.transition_dim)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self._last = None

    @staticmethod
    def _t(n: int, t: int) -> torch.Tensor:
        return torch.full((n,), float(t))

    @torch.no_grad()
    def _denoise(self, x, t):
        return self.unet(torch.from_numpy(x), self._t(len(x), t)).numpy()

    @torch.no_grad()
    def _value(self, x, t):
        return self.value(torch.from_numpy(x), self._t(len(x), t)).numpy()

    def _value_grad(self, x, t, weight):
        # The reference differentiates with autograd; the exported graph has the closed form.
        xt = torch.from_numpy(x).requires_grad_(True)
        v = self.value(xt, self._t(len(x), t))
        (g,) = torch.autograd.grad((v * torch.from_numpy(weight)).sum(), xt)
        return v.detach().numpy(), g.numpy()

    def _sample(self, request: PlanRequest):
        state = self.norm.norm_obs(np.asarray(request.obs, np.float32)).astype(np.float32)
        return self._sample_and_rank(request, state)

    def candidates(self, request: PlanRequest) -> Candidates:
        """Every sample, with its value (what ``planner eval --score`` chooses among)."""
        x, scores = self._sample(request)
        obs = self.norm.unnorm_obs(x[:, :, : spec.OBS_DIM])
        act = np.clip(self.norm.unnorm_act(x[:, :, spec.OBS_DIM:]), -1.0, 1.0)
        return Candidates(act, scores, obs[:, -1], np.zeros((len(x), 0), np.int64), x.shape[1] - 1)

    def plan(self, request: PlanRequest) -> Plan:
        x, scores = self._sample(request)
        return self._finish(x, scores, self.norm.unnorm_obs, lambda a: np.clip(self.norm.unnorm_act(a), -1.0, 1.0))
