"""Model and training configs: frozen dataclasses, filled from YAML with strict checks.

Unknown keys and wrong types are refused with the dotted name of the field, e.g.
``config/train/hgap_small.yaml: vq.width: expected int, got str 'wide'``.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from planner_node import spec


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class VQConfig:
    """Trajectory VQ-VAE (H-GAP; TAP with ``predict_return``). Defaults: H-GAP's reference sizes."""

    horizon: int = 16
    width: int = 128
    heads: int = 4
    conv_blocks: int = 2
    latent_stride: int = 4        # one latent step per this many trajectory steps
    codes_per_latent: int = 8     # each latent step is split into this many codes
    code_dim: int = 128
    codebook_size: int = 512
    ema_decay: float = 0.99
    commitment: float = 0.25
    # The action reconstruction's weight against the observation's (each a mean over its own
    # z-scored features): above 1 spends the codes on the actions, which the planner executes.
    action_weight: float = 1.0
    predict_return: bool = False  # TAP: decoder also predicts reward and return-to-go
    discount: float = 0.99

    def __post_init__(self):
        _positive(self, "horizon", "width", "heads", "conv_blocks", "latent_stride", "codes_per_latent",
                  "code_dim", "codebook_size")
        if self.horizon % self.latent_stride:
            raise ConfigError(f"vq.horizon ({self.horizon}) must be a multiple of vq.latent_stride "
                              f"({self.latent_stride})")
        if self.width % self.heads or self.width % 8:
            raise ConfigError(f"vq.width ({self.width}) must divide by vq.heads and by 8 (GroupNorm)")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"vq.ema_decay must be in (0, 1), got {self.ema_decay}")
        if not 0 < self.action_weight < float("inf"):
            raise ConfigError(f"vq.action_weight must be > 0, got {self.action_weight}")

    @property
    def latent_steps(self) -> int:
        return self.horizon // self.latent_stride

    @property
    def num_tokens(self) -> int:
        return self.latent_steps * self.codes_per_latent

    @property
    def obs_dim(self) -> int:
        return spec.OBS_DIM

    @property
    def act_dim(self) -> int:
        return spec.ACTION_DIM


@dataclass(frozen=True)
class PriorConfig:
    """Causal transformer over codes, conditioned on the current state."""

    layers: int = 4
    heads: int = 4
    width: int = 128
    dropout: float = 0.0

    def __post_init__(self):
        _positive(self, "layers", "heads", "width")
        if self.width % self.heads:
            raise ConfigError(f"prior.width ({self.width}) must divide by prior.heads ({self.heads})")


@dataclass(frozen=True)
class TrainConfig:
    vq_steps: int = 2000
    prior_steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    seed: int = 0
    holdout_fraction: float = 0.1
    checkpoint_every: int = 250
    eval_every: int = 100
    threads: int = 2
    # The windows' actions: "executed", or a policy rollout's recorded "clean" ones
    # (``models/data.py: target_actions``; the states are always the executed trajectory's).
    action_target: str = "executed"

    def __post_init__(self):
        from planner_node.models.data import ACTION_TARGETS
        _positive(self, "batch_size", "checkpoint_every", "eval_every", "threads")
        if self.action_target not in ACTION_TARGETS:
            raise ConfigError(f"train.action_target must be one of {', '.join(ACTION_TARGETS)}, got {self.action_target!r}")
        if self.vq_steps < 0 or self.prior_steps < 0:
            raise ConfigError("train.vq_steps and train.prior_steps must be >= 0")
        if not 0 <= self.holdout_fraction < 1:
            raise ConfigError(f"train.holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class ModelConfig:
    """One run: which model kind, its networks, and how to train them."""

    kind: str = ""  # a planner kind from planner_node.kinds (required)
    vq: VQConfig = field(default_factory=VQConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        from planner_node.kinds import KINDS, resolve
        if self.kind not in KINDS:
            raise ConfigError(f"kind: {'missing' if not self.kind else f'unknown model kind {self.kind!r}'}; "
                              f"valid: {', '.join(KINDS)}")
        check = KINDS[self.kind].check_config
        if check:
            resolve(check)(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTION = {"VQConfig": "vq.", "PriorConfig": "prior.", "TrainConfig": "train."}


def check_fields(section: str, checks: dict, obj) -> None:
    """Raise ConfigError naming ``section.field`` for the first check that is False."""
    for name, ok in checks.items():
        if not ok:
            raise ConfigError(f"{section}.{name}: invalid value {getattr(obj, name)!r}")


def _positive(obj, *names):
    for n in names:
        v = getattr(obj, n)
        if v <= 0:
            raise ConfigError(f"{_SECTION.get(type(obj).__name__, '')}{n} must be > 0, got {v!r}")


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; valid keys: {', '.join(sorted(names))}")
    kwargs = {}
    for k, v in data.items():
        t = hints[k]
        path = f"{where}.{k}" if where else k
        if dataclasses.is_dataclass(t):
            kwargs[k] = _build(t, v, path)
            continue
        ok = (isinstance(v, bool) if t is bool else
              isinstance(v, (int, float)) and not isinstance(v, bool) if t is float else
              isinstance(v, int) and not isinstance(v, bool) if t is int else isinstance(v, t))
        if not ok:
            raise ConfigError(f"{path}: expected {t.__name__}, got {type(v).__name__} {v!r}")
        kwargs[k] = float(v) if t is float else v
    try:
        return cls(**kwargs)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if not where or msg.startswith(where) else f"{where}: {msg}") from None


def config_from_dict(data: dict, where: str = ""):
    """The config of the kind ``data["kind"]`` names (its registry record's ``config`` class;
    ``ModelConfig`` refuses a missing or unknown kind, naming the valid ones)."""
    from planner_node.kinds import KINDS, resolve
    kind = data.get("kind") if isinstance(data, dict) else None
    cls = resolve(KINDS[kind].config) if isinstance(kind, str) and kind in KINDS else ModelConfig
    return _build(cls, data, where)


def load_config(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from e
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
