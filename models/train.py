"""Train a VQ-VAE and then its latent prior (H-GAP or TAP), resumable and deterministic on CPU.

``planner train --config config/train/hgap_small.yaml --data DIR --out RUN``

RUN/ holds ``config.yaml`` (as resolved), ``checkpoint.pt`` (atomic, every
``train.checkpoint_every`` steps and at each stage end), ``metrics.csv`` and ``loss.png``.
Re-running with an existing RUN resumes from its checkpoint (same config and data, else
refused). Batches come from an RNG keyed by (seed, stage, step, rank), and torch's RNG is
checkpointed, so a resumed run continues exactly as an uninterrupted one.

``--device auto|cpu|cuda`` (``models/device.py``): the model trains there, the data stays on the
CPU and each batch moves. Beyond one device: ``torchrun --nproc_per_node N -m planner_node.cli
train ...``; each rank draws its own batches, gradients and codebook statistics are all-reduced
(NCCL on GPUs, gloo on CPUs), rank 0 writes.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from planner_node.atomic import write_text
from planner_node.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from planner_node.models.config import ConfigError, ModelConfig, config_from_dict
from planner_node.models.device import cpu_state, ddp, describe, init_distributed, resolve_device, to
from planner_node.models.data import Normalizer, returns_to_go, split_episodes, window_features, window_set
from planner_node.models.prior import LatentPrior
from planner_node.models.vqvae import TrajectoryVQVAE, reconstruction_loss
from planner_node.dataset import Dataset

STAGES = ("vq", "prior", "done")


def codebook_usage(tokens: torch.Tensor, size: int) -> tuple[float, float]:
    """(fraction of codes used, perplexity / size) over a batch of token ids."""
    counts = torch.bincount(tokens.reshape(-1), minlength=size).float()
    p = counts / counts.sum()
    perplexity = torch.exp(-(p[p > 0] * p[p > 0].log()).sum()).item()
    return float((counts > 0).float().mean()), perplexity / size


class Trainer:
    def __init__(self, cfg: ModelConfig, data_dir: str | Path, out: str | Path, progress: bool = True,
                 device: str = "auto"):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.device = resolve_device(device)
        self.world, self.rank = init_distributed(self.device)
        torch.set_num_threads(cfg.train.threads)
        torch.manual_seed(cfg.train.seed)
        self.ds = Dataset(data_dir)
        self.ds.require_executed_actions("a trajectory world model")
        # The data is named by its hash (spec, tasks, ordered shard hashes), the path is a hint.
        self.data_id = {"path": str(self.ds.path.resolve()), "dataset_sha256": self.ds.sha256}
        rets = returns_to_go(self.ds, cfg.vq.discount)
        self.norm = Normalizer.from_dataset(self.ds, rets)
        train_eps, hold_eps = split_episodes(self.ds, cfg.train.holdout_fraction, cfg.train.seed)
        feats = torch.from_numpy(window_features(self.ds, self.norm, rets, cfg.vq.predict_return,
                                                 cfg.train.action_target))
        self.train_x = window_set(feats, train_eps, cfg.vq.horizon)   # gathered per batch
        self.hold_x = window_set(feats, hold_eps, cfg.vq.horizon)
        if len(self.train_x) == 0:
            raise ValueError(f"{data_dir}: no training episode is at least vq.horizon={cfg.vq.horizon} steps long")
        self.tasks = [self.ds.tasks[i] for i in np.unique(self.ds.arrays["task_ids"])]
        self.split = {"train_episodes": len(train_eps), "holdout_episodes": len(hold_eps),
                      "train_windows": len(self.train_x), "holdout_windows": len(self.hold_x)}
        self.vq = TrajectoryVQVAE(cfg.vq).to(self.device)
        self.prior = LatentPrior(cfg.vq, cfg.prior).to(self.device)
        t = cfg.train
        self.opt_vq = torch.optim.AdamW(self.vq.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.opt_prior = torch.optim.AdamW(self.prior.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.stage, self.step = "vq", 0
        self.best_prior = (float("inf"), 0, None)  # (held-out NLL, step, state dict)
        self._resume_or_start()

    # -- persistence -------------------------------------------------------------------------
    def _payload(self) -> dict:
        return {"kind": self.cfg.kind, "config": self.cfg.to_dict(), "stage": self.stage, "step": self.step,
                "vq": cpu_state(self.vq.state_dict()), "prior": cpu_state(self.prior.state_dict()),
                "opt_vq": cpu_state(self.opt_vq.state_dict()), "opt_prior": cpu_state(self.opt_prior.state_dict()),
                "normalizer": self.norm.to_tensors(), "dataset": self.data_id, "tasks": self.tasks, "split": self.split,
                "torch_rng": torch.get_rng_state(),
                "prior_best": self.best_prior[2] if self.best_prior[2] is not None else {},
                "prior_best_step": self.best_prior[1], "prior_best_holdout_nll": self.best_prior[0]}

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.out / "checkpoint.pt", self._payload())

    def _resume_or_start(self) -> None:
        ck_path = self.out / "checkpoint.pt"
        if ck_path.exists():
            ck = load_checkpoint(ck_path, expect_kind=self.cfg.kind)
            if not same_config(ck["config"], self.cfg.to_dict()):
                raise CheckpointError(f"{ck_path}: was trained with a different config; use a new --out")
            if ck["dataset"].get("dataset_sha256") != self.data_id["dataset_sha256"]:
                raise CheckpointError(f"{ck_path}: was trained on different data ({ck['dataset']['path']})")
            self.vq.load_state_dict(ck["vq"])
            self.prior.load_state_dict(ck["prior"])
            self.opt_vq.load_state_dict(ck["opt_vq"])
            self.opt_prior.load_state_dict(ck["opt_prior"])
            self.stage, self.step = ck["stage"], ck["step"]
            torch.set_rng_state(ck["torch_rng"])
            if ck.get("prior_best"):
                self.best_prior = (ck["prior_best_holdout_nll"], ck["prior_best_step"], ck["prior_best"])
        elif self.rank == 0:
            if self.out.exists() and any(p.name != "config.yaml" for p in self.out.iterdir()):
                raise CheckpointError(f"{self.out}: exists without a checkpoint; refusing to overwrite it")
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))

    def _log(self, row: dict) -> None:
        if self.rank != 0:
            return
        path = self.out / "metrics.csv"
        fields = ["stage", "step", "wall_s", "train_loss", "holdout_loss", "code_use", "perplexity"]
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    # -- stages --------------------------------------------------------------------------------
    def _batch(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        rng = np.random.default_rng([self.cfg.train.seed, stage, self.step, self.rank])
        return to(self.device, x[torch.from_numpy(rng.integers(0, len(x), self.cfg.train.batch_size))])[0]

    def _wrap(self, module):
        return ddp(module, self.device, self.world)

    @torch.no_grad()
    def _eval_vq(self) -> tuple[float, float, float]:
        self.vq.eval()
        x = self.hold_x[:1024] if len(self.hold_x) else self.train_x[:256]
        (x,) = to(self.device, x)
        loss, _ = self.vq.loss(x)
        _, idx, _ = self.vq.encode(x)
        self.vq.train()
        use, ppl = codebook_usage(idx, self.cfg.vq.codebook_size)
        return loss.item(), use, ppl

    @torch.no_grad()
    def encode_all(self, x: torch.Tensor) -> torch.Tensor:
        self.vq.eval()
        return torch.cat([self.vq.encode(to(self.device, x[i:i + 512])[0])[1].cpu() for i in range(0, len(x), 512)]) if len(x) else \
            torch.zeros((0, self.cfg.vq.num_tokens), dtype=torch.long)

    #: The prior's held-out NLL is measured on at most this many windows, this many at a time:
    #: the whole held-out set of the million-row rollouts (100k windows) in one batch took the
    #: trainer past 24 GB (OOM-killed); every smaller dataset's held-out set fits, so their
    #: figures are unchanged.
    PRIOR_HOLDOUT_MAX, PRIOR_HOLDOUT_CHUNK = 8192, 1024

    @torch.no_grad()
    def _prior_holdout_nll(self, state: torch.Tensor, tokens: torch.Tensor) -> float:
        n = min(len(tokens), self.PRIOR_HOLDOUT_MAX)
        if not n:
            return float("nan")
        total = 0.0
        for i in range(0, n, self.PRIOR_HOLDOUT_CHUNK):
            s, t = to(self.device, state[i:min(i + self.PRIOR_HOLDOUT_CHUNK, n)], tokens[i:min(i + self.PRIOR_HOLDOUT_CHUNK, n)])
            total += self.prior.nll(s, t).item() * len(t)
        return total / n

    def run(self, stop_after: int | None = None) -> dict:
        """Train to the end (or return after ``stop_after`` optimizer steps without saving:
        what a kill looks like to the next run, which resumes from the last checkpoint)."""
        from tqdm import tqdm

        t = self.cfg.train
        budget = [stop_after]

        def killed() -> bool:
            if budget[0] is None:
                return False
            budget[0] -= 1
            return budget[0] < 0
        t0 = time.time()
        if self.stage == "vq":
            vq = self._wrap(self.vq)
            self.vq.train()
            if self.progress and not self.rank:
                print(f"training on {describe(self.device)}, {self.world} rank(s)")
            bar = tqdm(total=t.vq_steps, initial=self.step, desc="vq-vae", disable=not self.progress or self.rank)
            while self.step < t.vq_steps:
                if killed():
                    return {"stage": "killed", "step": self.step}
                x = self._batch(self.train_x, 0)
                recon, _, commit = vq(x)
                loss = vq_loss(self.cfg, x, recon, commit)
                self.opt_vq.zero_grad()
                loss.backward()
                self.opt_vq.step()
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if self.step % t.eval_every == 0 or self.step == t.vq_steps:
                    hl, use, ppl = self._eval_vq()
                    self._log({"stage": "vq", "step": self.step, "wall_s": round(time.time() - t0, 2),
                               "train_loss": loss.item(), "holdout_loss": hl, "code_use": use, "perplexity": ppl})
                if self.step % t.checkpoint_every == 0:
                    self.save()
            bar.close()
            self.stage, self.step = "prior", 0
            self.save()
        if self.stage == "prior":
            state_tr = self.train_x.first()[:, : self.cfg.vq.obs_dim]
            tok_tr = self.encode_all(self.train_x)
            state_ho = self.hold_x.first()[:, : self.cfg.vq.obs_dim]
            tok_ho = self.encode_all(self.hold_x)
            prior = self._wrap(self.prior)
            self.prior.train()
            bar = tqdm(total=t.prior_steps, initial=self.step, desc="prior", disable=not self.progress or self.rank)
            while self.step < t.prior_steps:
                if killed():
                    return {"stage": "killed", "step": self.step}
                rng = np.random.default_rng([t.seed, 1, self.step, self.rank])
                i = torch.from_numpy(rng.integers(0, len(tok_tr), t.batch_size))
                s_b, tok_b = to(self.device, state_tr[i], tok_tr[i])
                logits = prior(s_b, tok_b)
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok_b.reshape(-1))
                self.opt_prior.zero_grad()
                loss.backward()
                self.opt_prior.step()
                self.step += 1
                bar.update(1)
                bar.set_postfix(nll=f"{loss.item():.3f}")
                if self.step % t.eval_every == 0 or self.step == t.prior_steps:
                    with torch.no_grad():
                        self.prior.eval()
                        hl = self._prior_holdout_nll(state_ho, tok_ho)
                        self.prior.train()
                    self._log({"stage": "prior", "step": self.step, "wall_s": round(time.time() - t0, 2),
                               "train_loss": loss.item(), "holdout_loss": hl})
                    # Early stopping by selection: keep the prior with the best held-out NLL
                    # (small datasets overfit it long before prior_steps).
                    if hl == hl and hl < self.best_prior[0]:
                        self.best_prior = (hl, self.step, cpu_state(self.prior.state_dict()))
                if self.step % t.checkpoint_every == 0:
                    self.save()
            bar.close()
            self.stage, self.step = "done", 0
            self.save()
        if self.rank == 0:
            plot_metrics(self.out)
        return {"stage": self.stage, "wall_s": time.time() - t0, **self.split}


def vq_loss(cfg: ModelConfig, x, recon, commit) -> torch.Tensor:
    return reconstruction_loss(cfg.vq, x, recon, commit)[0]


#: The VQ-VAE + prior trainer's curves: (stage in metrics.csv, y label) per panel.
METRIC_FIELDS = ("stage", "step", "wall_s", "train_loss", "holdout_loss")


def append_metrics(run: Path, row: dict, fields=METRIC_FIELDS) -> None:
    """One row of ``run/metrics.csv`` (the header when the file is new); what ``plot_metrics`` reads."""
    path = run / "metrics.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def policy_step(trainer, loss, t0: float, bar, stage: str = "policy") -> None:
    """One optimizer step of a policy kind's trainer (chunk, IDQL) and its bookkeeping: the
    cosine learning rate (``train.lr`` to 0 over ``train.steps``), the step, the progress bar,
    a metrics row every ``eval_every`` (with ``trainer._holdout()``) and a checkpoint every
    ``checkpoint_every`` (``trainer.save()``). ``trainer`` has ``cfg.train``, ``opt``, ``step``,
    ``out``."""
    t = trainer.cfg.train
    lr = float(t.lr * 0.5 * (1 + np.cos(np.pi * min(trainer.step, t.steps) / max(t.steps, 1))))
    for g in trainer.opt.param_groups:
        g["lr"] = lr
    trainer.opt.zero_grad()
    loss.backward()
    trainer.opt.step()
    trainer.step += 1
    bar.update(1)
    bar.set_postfix(loss=f"{loss.item():.4f}")
    if trainer.step % t.eval_every == 0 or trainer.step == t.steps:
        append_metrics(trainer.out, {"stage": stage, "step": trainer.step, "wall_s": round(time.time() - t0, 2),
                                     "train_loss": loss.item(), "holdout_loss": trainer._holdout()})
    if trainer.step % t.checkpoint_every == 0:
        trainer.save()


def same_config(recorded: dict, config: dict) -> bool:
    """Whether a checkpoint's recorded config is ``config``, once each is read as the code reads
    it now: a setting added since the run was trained takes its default, which is what the run
    was trained with (so committed runs still resume and export). A recorded key the code no
    longer knows, or any value that differs, is a different config."""
    import dataclasses
    if recorded == config:
        return True
    try:
        return dataclasses.asdict(config_from_dict(recorded)) == dataclasses.asdict(config_from_dict(config))
    except (ConfigError, TypeError, ValueError):
        return False


def open_run(out: Path, config: dict, data_id: dict, kind: str, states: tuple[str, ...],
             write: bool = True) -> dict | None:
    """A trainer's run directory: the checkpoint to resume from (trained with this ``config`` on
    this data; each of ``states`` present, except that a finished run may be committed without
    its optimizer state), or None after starting a new run (``config.yaml`` written; a directory
    that holds anything else but no checkpoint is refused, never overwritten). ``write=False``
    (a rank other than 0): only reads."""
    ck_path = out / "checkpoint.pt"
    if ck_path.exists():
        ck = load_checkpoint(ck_path, expect_kind=kind)
        if not same_config(ck["config"], config):
            raise CheckpointError(f"{ck_path}: was trained with a different config; use a new --out")
        if ck["dataset"].get("dataset_sha256") != data_id["dataset_sha256"]:
            raise CheckpointError(f"{ck_path}: was trained on different data ({ck['dataset']['path']})")
        missing = [n for n in states if n not in ck]
        if missing and ck["stage"] != "done":
            raise CheckpointError(f"{ck_path}: has no {missing[0]!r} state, so it cannot resume training")
        return ck
    if not write:
        return None
    if out.exists() and any(p.name != "config.yaml" for p in out.iterdir()):
        raise CheckpointError(f"{out}: exists without a checkpoint; refusing to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return None


LATENT_PANELS = (("vq", "reconstruction + commitment (MSE)"), ("prior", "NLL (nats/code)"))


def plot_metrics(run: Path, panels=LATENT_PANELS) -> None:
    """``run/loss.png``: train (batch) and held-out loss per stage of ``run/metrics.csv``, one panel
    per (stage, y label), log scale; any kind's trainer writes its metrics in this layout."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = run / "metrics.csv"
    if not path.exists():
        return
    rows = list(csv.DictReader(open(path)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (stage, ylabel) in zip(axes[0], panels):
        r = [x for x in rows if x["stage"] == stage]
        if not r:
            continue
        steps = [int(x["step"]) for x in r]
        ax.plot(steps, [float(x["train_loss"]) for x in r], label="train (batch)")
        ax.plot(steps, [float(x["holdout_loss"]) for x in r], label="held-out")
        ax.set_title(f"{run.name}: {stage}")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    from planner_node.atomic import atomic_path
    with atomic_path(run / "loss.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def train(config_path: str | Path, data_dir: str | Path, out: str | Path, progress: bool = True,
          device: str = "auto") -> dict:
    from planner_node.kinds import get_kind, resolve
    from planner_node.models.config import load_config
    cfg = load_config(config_path)
    return resolve(get_kind(cfg.kind).trainer)(cfg, data_dir, out, progress, device=device).run()


def build_models(ck: dict, best: bool = True) -> tuple[ModelConfig, TrajectoryVQVAE, LatentPrior, Normalizer]:
    """Rebuild trained networks from a loaded checkpoint (eval mode). ``best``: the prior with the
    lowest held-out NLL (when the run held data out), else the last one."""
    cfg = config_from_dict(ck["config"])
    vq, prior = TrajectoryVQVAE(cfg.vq), LatentPrior(cfg.vq, cfg.prior)
    vq.load_state_dict(ck["vq"])
    prior.load_state_dict(ck["prior_best"] if best and ck.get("prior_best") else ck["prior"])
    return cfg, vq.eval(), prior.eval(), Normalizer.from_tensors(ck["normalizer"])
