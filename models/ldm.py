"""Lyapunov density model (Kang et al.): keep the robot where the data is dense, now and later.

* **Density** E(s, a) = -log p(s, a): an affine-coupling normalizing flow (RealNVP) over the
  normalized (observation, action) pair, trained by exact maximum likelihood. Chosen over a
  library flow (e.g. zuko's neural spline flows, as the authors' prototype used): it needs only
  Linear, tanh, exp and Gather, so it exports to ONNX and TensorRT as it is, it has no extra
  dependency, and one pass over 64 candidates costs well under a millisecond on this CPU.
* **Lyapunov density** G(s, a), trained on the dataset's (s, a, s') transitions (the same
  transition set as the task critic, ``models/critic.py``) by the backup

      G(s, a) <- max{ E(s, a),  gamma * min_{a'} G(s', a') + (1 - gamma) * E(s, a) }

  starting from G = E. gamma < 1 is the discounted form (a contraction, stable to learn); gamma
  -> 1 is the exact backup G <- max{E, min G(s', .)}. The min over a' runs over candidate
  actions at s': the action the data took at s' and ``candidates - 1`` actions drawn from the
  dataset (the behaviour's action marginal). A fall is not special: it bootstraps from the
  fallen state, which the data rarely holds, so G rises before falls.
* **Threshold** -log c, c the ``percentile``-th percentile of the dataset's densities p(s, a)
  (the prototype used the 40th): a candidate is admissible when G(s, a) <= -log c.

All inputs are raw observations (N, 224) and actions in the plan contract's [-1, 1] (N, 56);
normalization is inside the networks, so the exported graphs take what the runtime has.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from planner_node.dataset import Dataset
from planner_node.models.critic import _split, mlp, polyak, transitions

KIND = "ldm"


@dataclass(frozen=True)
class LDMConfig:
    # Sized for the filter's budget (<= 3 ms p99 for 64 candidates on 2 cores): G runs E too.
    flow_layers: int = 4          # affine coupling layers
    flow_width: int = 128
    flow_steps: int = 4000
    g_width: int = 128
    g_layers: int = 2
    g_steps: int = 4000
    candidates: int = 8           # actions a' in the min over a' (the data's own + dataset draws)
    discount: float = 0.95        # gamma of the discounted backup
    percentile: float = 40.0      # threshold: -log of this percentile of the data's densities
    batch_size: int = 512
    lr: float = 3e-4
    polyak: float = 0.01
    holdout_fraction: float = 0.1
    seed: int = 0
    threads: int = 2

    def __post_init__(self):
        checks = {"flow_layers": self.flow_layers >= 2, "flow_width": self.flow_width >= 1,
                  "flow_steps": self.flow_steps >= 1, "g_width": self.g_width >= 1, "g_layers": self.g_layers >= 1,
                  "g_steps": self.g_steps >= 0, "candidates": self.candidates >= 1, "discount": 0 < self.discount <= 1,
                  "percentile": 0 < self.percentile < 100, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
                  "polyak": 0 < self.polyak <= 1, "holdout_fraction": 0 <= self.holdout_fraction < 1}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"LDMConfig.{name} has an invalid value: {getattr(self, name)!r}")


class _Normalized(nn.Module):
    """(obs, act) -> the normalized, concatenated pair (statistics of the training data)."""

    def __init__(self, stats: dict):
        super().__init__()
        for k in ("obs_mean", "obs_std", "act_mean", "act_std"):
            self.register_buffer(k, torch.as_tensor(np.asarray(stats[k]), dtype=torch.float32))

    def pair(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return torch.cat([(obs - self.obs_mean) / self.obs_std, (act - self.act_mean) / self.act_std], -1)


class DensityFlow(_Normalized):
    """RealNVP: each layer permutes the features (fixed, seeded), then transforms the second half
    by a scale (tanh-bounded) and shift computed from the first half. ``energy`` = -log p."""

    def __init__(self, stats: dict, dim: int, layers: int, width: int, seed: int = 0):
        super().__init__(stats)
        self.dim, self.half = dim, dim // 2
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("perms", torch.stack([torch.randperm(dim, generator=g) for _ in range(layers)]))
        self.nets = nn.ModuleList([mlp(self.half, 2 * (dim - self.half), width, 2) for _ in range(layers)])

    def log_prob_normalized(self, x: torch.Tensor) -> torch.Tensor:
        logdet = torch.zeros(x.shape[0], device=x.device)
        for perm, net in zip(self.perms, self.nets):
            x = x[:, perm]
            a, b = x[:, : self.half], x[:, self.half:]
            scale, shift = net(a).chunk(2, -1)
            scale = torch.tanh(scale)                    # |log-scale| <= 1 per layer: stable
            b = b * torch.exp(scale) + shift
            logdet = logdet + scale.sum(-1)
            x = torch.cat([a, b], -1)
        base = -0.5 * (x.pow(2).sum(-1) + self.dim * math.log(2 * math.pi))
        return base + logdet

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """E(s, a) = -log p(s, a) in the normalized space, (N,)."""
        return -self.log_prob_normalized(self.pair(obs, act))


class LyapunovNet(nn.Module):
    """G(s, a) = E(s, a) + softplus(h(s, a)), (N,): at least E by construction (the backup is a
    max with E), so h learns only what the future adds: the risk of leaving the data later."""

    def __init__(self, flow: DensityFlow, width: int, layers: int):
        super().__init__()
        self.flow = flow
        self.net = mlp(flow.dim, 1, width, layers)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.flow(obs, act) + nn.functional.softplus(self.net(self.flow.pair(obs, act))[:, 0])


def _stats(ds: Dataset) -> dict:
    return {k: np.asarray(ds.stats[k], np.float32) for k in ("obs_mean", "obs_std", "act_mean", "act_std")}


def train_ldm(data: str | Path, out: str | Path, cfg: LDMConfig = LDMConfig(), progress: bool = True,
              device: str = "auto") -> dict:
    """Train E then G on ``data``; writes ``out/ldm.pt`` (weights_only-loadable) and ``out/curves.json``.
    ``device``: where the networks train (``models/device.py``); saved and evaluated on the CPU."""
    from tqdm import tqdm

    from planner_node.models.device import resolve_device, to

    from planner_node.atomic import write_json
    from planner_node.models.checkpoint import save_checkpoint

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    dev = resolve_device(device)
    ds = Dataset(data)
    ds.require_executed_actions("the Lyapunov density model")
    tr = transitions(ds, tasks=["stand"])  # the (s, a, s') set; rewards are not used here
    train_idx, hold_idx = _split(tr, cfg.holdout_fraction, cfg.seed)
    stats = _stats(ds)
    dim = tr["s"].shape[1] + tr["a"].shape[1]
    S, A, S2 = (torch.from_numpy(np.asarray(tr[k], np.float32)) for k in ("s", "a", "s2"))
    # The data's action at s': the next row's (a fall's s' is its own state: its own action).
    next_row = np.where(tr["fell"] > 0, tr["rows"], tr["rows"] + 1)
    A2 = torch.from_numpy(np.asarray(ds.arrays["actions"][next_row], np.float32))
    rng = np.random.default_rng(cfg.seed)
    t0 = time.time()

    flow = DensityFlow(stats, dim, cfg.flow_layers, cfg.flow_width, cfg.seed).to(dev)
    opt = torch.optim.Adam(flow.parameters(), lr=cfg.lr)
    curves = []
    for step in tqdm(range(1, cfg.flow_steps + 1), desc="train density (E)", disable=not progress):
        b = torch.from_numpy(rng.choice(train_idx, cfg.batch_size))
        loss = flow(*to(dev, S[b], A[b])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 1 or step % 250 == 0 or step == cfg.flow_steps:
            curves.append({"stage": "E", "step": step, "nll": loss.item()})
    flow.eval()
    for p in flow.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        E = torch.cat([flow(*to(dev, S[i:i + 4096], A[i:i + 4096])).cpu() for i in range(0, len(S), 4096)])
    threshold = float(np.percentile(E[train_idx].numpy(), 100.0 - cfg.percentile))  # -log(percentile of p)

    g = LyapunovNet(flow, cfg.g_width, cfg.g_layers)
    with torch.no_grad():  # start from G = E (softplus(-6) ~ 0.0025)
        g.net[-1].bias.fill_(-6.0)
    g_target = LyapunovNet(flow, cfg.g_width, cfg.g_layers)
    g_target.load_state_dict(g.state_dict())
    g, g_target = g.to(dev), g_target.to(dev)
    opt = torch.optim.Adam(g.net.parameters(), lr=cfg.lr)
    K = cfg.candidates
    for step in tqdm(range(1, cfg.g_steps + 1), desc="train Lyapunov density (G)", disable=not progress):
        b = torch.from_numpy(rng.choice(train_idx, cfg.batch_size))
        with torch.no_grad():
            n = len(b)
            others = A[torch.from_numpy(rng.choice(train_idx, (n, K - 1)))]            # dataset actions
            cand = torch.cat([A2[b][:, None], others], 1)                              # (n, K, 56)
            s2 = S2[b][:, None].expand(-1, K, -1)
            s2, cand, e_b, s_b, a_b = to(dev, s2.reshape(n * K, -1), cand.reshape(n * K, -1), E[b], S[b], A[b])
            g_next = g_target(s2, cand).view(n, K).min(1).values
            # max{E, gamma min G' + (1 - gamma) E} - E: what the future adds to E (>= 0)
            target = torch.clamp(cfg.discount * (g_next - e_b), min=0.0)
        residual = nn.functional.softplus(g.net(flow.pair(s_b, a_b))[:, 0])
        loss = nn.functional.smooth_l1_loss(residual, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        polyak(g_target.net, g.net, cfg.polyak)
        if step == 1 or step % 250 == 0 or step == cfg.g_steps:
            curves.append({"stage": "G", "step": step, "loss": loss.item()})
    g, flow = g.eval().cpu(), flow.cpu()
    metrics = evaluate_ldm(flow, g, S, A, E, hold_idx if len(hold_idx) else train_idx, threshold)
    metrics["threshold"] = threshold
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "ldm.pt", {"kind": KIND, "config": asdict(cfg), "stats": {k: v.tolist() for k, v in stats.items()},
                                      "dim": dim, "flow": flow.state_dict(), "g": g.state_dict(),
                                      "threshold": threshold, "metrics": metrics,
                                      "dataset": {"path": str(ds.path.resolve()), "dataset_sha256": ds.sha256}})
    write_json(out / "curves.json", {"curves": curves, "metrics": metrics, "train_s": time.time() - t0})
    return metrics


@torch.no_grad()
def evaluate_ldm(flow, g, S, A, E, idx, threshold: float) -> dict:
    """Held-out: G - E (the backup only raises G), and the share of pairs above the threshold."""
    idx = torch.from_numpy(np.asarray(idx))
    e = flow(S[idx], A[idx])
    gv = g(S[idx], A[idx])
    diff = (gv - e).numpy()
    return {"holdout_pairs": int(len(idx)), "holdout_nll": float(e.mean()),
            "g_minus_e_p1": float(np.percentile(diff, 1)), "g_minus_e_median": float(np.median(diff)),
            "g_below_e_fraction": float((diff < 0).mean()),
            "e_above_threshold_fraction": float((e.numpy() > threshold).mean()),
            "g_above_threshold_fraction": float((gv.numpy() > threshold).mean())}


class LDM:
    """A trained Lyapunov density model (torch): ``energy`` and ``lyapunov`` of (obs, act) rows."""

    def __init__(self, run: str | Path, threads: int = 1):
        from planner_node.models.checkpoint import load_checkpoint
        p = Path(run)
        ck = load_checkpoint(p / "ldm.pt" if p.is_dir() else p, expect_kind=KIND)
        cfg = LDMConfig(**ck["config"])
        self.config, self.threshold, self.metrics = cfg, float(ck["threshold"]), ck["metrics"]
        stats = {k: np.asarray(v, np.float32) for k, v in ck["stats"].items()}
        self.flow = DensityFlow(stats, ck["dim"], cfg.flow_layers, cfg.flow_width, cfg.seed)
        self.flow.load_state_dict(ck["flow"])
        self.g = LyapunovNet(self.flow, cfg.g_width, cfg.g_layers)
        self.g.load_state_dict(ck["g"])
        self.flow.eval()
        self.g.eval()
        torch.set_num_threads(threads)

    @torch.no_grad()
    def energy(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        return self.flow(*_rows(obs, act)).numpy()

    @torch.no_grad()
    def lyapunov(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        return self.g(*_rows(obs, act)).numpy()


def _rows(obs, act):
    a = torch.as_tensor(np.asarray(act, np.float32))
    s = torch.as_tensor(np.asarray(obs, np.float32))
    return (s.expand(len(a), -1) if s.ndim == 1 else s), a


def load_curves(run: str | Path) -> dict:
    return json.loads((Path(run) / "curves.json").read_text())
