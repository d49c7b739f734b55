"""The planner-kind registry: one record per learned planner kind, nothing else names a kind.

A record says where each part of a kind lives, as lazy ``"module:attr"`` strings, so that
choosing a kind never imports another's dependencies (a robot that runs a bundle imports the
runtime planner only, never torch):

* ``config``: the model config class ``planner train`` builds from YAML (``kind: <name>``);
  ``check_config`` (optional): kind-specific checks on it, raising ConfigError;
* ``trainer``: the class that trains it (``Trainer(config, data_dir, out, progress).run()``,
  resumable); ``tiny``: a training config (without ``kind``) small enough for tests;
* ``reference``: the PyTorch reference planner (a ``Planner``, built from a training run);
* ``export``: ``export_graphs(checkpoint: dict, out_dir, settings) -> Exported`` writes the
  kind's ONNX graphs (and reference weights) for ``planner export``;
* ``runtime``: the torch-free runtime planner (a ``Planner`` over a verified bundle);
* ``defaults``: the planner settings written into a bundle (``planner export`` overrides them);
  ``batch_param``: the setting that sizes the exported batch (``--samples N`` sets it);
* ``kind_config_keys``: the keys of the manifest's ``kind_config`` (checked at load);
* ``flops``: ``tick_flops(bundle) -> int``, the FLOPs one tick runs (``planner bench``);
* ``scores_with_critic``: its runtime planner adds the bundle's task critic to its candidates'
  scores (``planner export --critic`` is refused for a kind that would ignore it);
  ``smoke``: settings small enough for a plan in milliseconds (the registry smoke test).

To add a kind: its own files (model + config, reference planner, export, runtime planner, train
configs) and one record here. ``test/test_kinds.py`` runs every record with no per-name code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

#: A tiny training config of the VQ-VAE + prior kinds (tests: seconds on 2 cores).
LATENT_TINY = {"vq": {"horizon": 8, "width": 32, "heads": 2, "conv_blocks": 1, "latent_stride": 4, "codes_per_latent": 2,
                      "code_dim": 16, "codebook_size": 32, "predict_return": True},
               "prior": {"layers": 1, "heads": 2, "width": 32},
               "train": {"vq_steps": 60, "prior_steps": 60, "batch_size": 32, "lr": 0.002, "checkpoint_every": 60,
                         "eval_every": 60, "holdout_fraction": 0.25, "threads": 1}}

#: kind_config of the VQ-VAE + prior ("latent") kinds: their networks' shape, from the run's config.
LATENT_KIND_CONFIG = ("num_tokens", "codebook_size", "latent_stride", "codes_per_latent", "obs_dim", "act_dim",
                      "predict_return", "discount", "model_config")


@dataclass(frozen=True)
class Kind:
    name: str
    config: str
    reference: str
    export: str
    runtime: str
    flops: str
    defaults: dict = field(default_factory=dict)
    batch_param: str = "samples"
    kind_config_keys: tuple[str, ...] = ()
    check_config: str | None = None
    smoke: dict = field(default_factory=dict)   # settings for a seconds-long plan (tests, smoke runs)
    scores_with_critic: bool = False
    trainer: str = "planner_node.models.train:Trainer"
    tiny: dict = field(default_factory=lambda: LATENT_TINY)   # a seconds-long training config (tests)


KINDS: dict[str, Kind] = {
    "hgap": Kind(
        name="hgap", config="planner_node.models.config:ModelConfig",
        reference="planner_node.models.hgap:HGAPPlanner", export="planner_node.export.hgap:export_graphs",
        runtime="planner_node.runtime.hgap:RuntimeHGAPPlanner", flops="planner_node.export.hgap:tick_flops",
        defaults={"samples": 64, "temperature": 2.0, "top_p": 0.99}, batch_param="samples",
        kind_config_keys=LATENT_KIND_CONFIG, scores_with_critic=True),
    "tap": Kind(
        name="tap", config="planner_node.models.config:ModelConfig", check_config="planner_node.models.tap:check_config",
        reference="planner_node.models.tap:TAPPlanner", export="planner_node.export.tap:export_graphs",
        runtime="planner_node.runtime.tap:RuntimeTAPPlanner", flops="planner_node.export.tap:tick_flops",
        defaults={"beam": 64, "expansion": 4, "prob_threshold": 0.05, "prob_weight": 500.0, "temperature": 1.0},
        batch_param="beam", kind_config_keys=LATENT_KIND_CONFIG, smoke={"beam": 4, "expansion": 2}),
    "diffuser": Kind(
        name="diffuser", config="planner_node.models.diffuser:DiffuserConfig",
        trainer="planner_node.models.diffuser:DiffuserTrainer",
        reference="planner_node.models.diffuser:DiffuserPlanner", export="planner_node.export.diffuser:export_graphs",
        runtime="planner_node.runtime.diffuser:RuntimeDiffuserPlanner", flops="planner_node.export.diffuser:tick_flops",
        # The bundle's default is the real-time sampler: the previous plan, re-noised to level 4
        # of 20 and denoised in 2 DDIM steps, 32 samples ranked by value: p99 21 ms on one core
        # of this CPU, where 64 samples take 40 (experiments/diffuser_tradeoff.py, planner bench).
        defaults={"samples": 32, "sampler": "warm", "steps": 2, "warm_start": 4, "cold_steps": 4, "guide": "rank",
                  "guide_scale": 0.1, "guide_steps": 2, "guide_stop": 2},
        batch_param="samples",
        kind_config_keys=("diffusion_steps", "obs_dim", "act_dim", "tasks", "value_mean", "value_std",
                          "model_config"),
        smoke={"samples": 4, "steps": 2, "cold_steps": 2},
        tiny={"unet": {"horizon": 8, "dim": 16, "levels": 2}, "diffusion": {"steps": 5},
              "value": {"width": 32, "layers": 2},
              "train": {"diffusion_steps": 40, "value_steps": 20, "batch_size": 16, "lr": 0.001, "ema_decay": 0.9,
                        "checkpoint_every": 20, "eval_every": 20, "holdout_fraction": 0.25, "threads": 1}}),
    "chunk": Kind(
        name="chunk", config="planner_node.models.chunk:ChunkConfig", trainer="planner_node.models.chunk:ChunkTrainer",
        reference="planner_node.models.chunk:ChunkPlanner", export="planner_node.export.chunk:export_graphs",
        runtime="planner_node.runtime.chunk:RuntimeChunkPlanner", flops="planner_node.export.chunk:tick_flops",
        # One state per call: the policy's graph maps the current observation to its chunk; the
        # plan blends the last 8 chunks, weighted exp(-0.5 x age) (temporal ensembling).
        # task_weights: per task, how much of the policy's task conditioning is the task's rather
        # than stand's ('' = every task fully its own; runtime/chunk.py: parse_task_weights).
        # stance_gain, stance_width: the posture term against the feet sliding apart
        # (runtime/chunk.py: StanceHold; 0 = off; width: the standing pose's feet apart [m]).
        defaults={"batch": 1, "overlap": 8, "decay": 0.5, "task_weights": "", "stance_gain": 0.5, "stance_width": 0.91},
        batch_param="batch",
        kind_config_keys=("obs_dim", "act_dim", "tasks", "model_config"),
        tiny={"policy": {"horizon": 4, "width": 32, "layers": 1, "ensemble": 2},
              "train": {"steps": 40, "batch_size": 16, "checkpoint_every": 20, "eval_every": 20,
                        "holdout_fraction": 0.25, "threads": 1}}),
    "idql": Kind(
        name="idql", config="planner_node.models.idql:IDQLConfig", trainer="planner_node.models.idql:IDQLTrainer",
        reference="planner_node.models.idql:IDQLPlanner", export="planner_node.export.idql:export_graphs",
        runtime="planner_node.runtime.idql:RuntimeIDQLPlanner", flops="planner_node.export.idql:tick_flops",
        # ``samples`` chunks denoised in ``steps`` DDIM steps (one graph: the steps unrolled), one
        # executed by ``select`` (runtime/idql_select.py), blended as the chunk policy's. The
        # defaults are the measured best (docs/planners/idql.md, schedule B, 10 tasks): a uniform
        # choice beat the critic's argmax on 9 of 10 tasks, and 2 steps beat 4 on 6 (ties 4); p99
        # 5.0 ms. Every sample stays a candidate for the LDM filter, scored by the critic.
        defaults={"samples": 32, "steps": 2, "select": "uniform", "temperature": 1.0, "overlap": 8, "decay": 0.5,
                  "task_weights": "", "stance_gain": 0.5, "stance_width": 0.91},
        batch_param="samples",
        kind_config_keys=("obs_dim", "act_dim", "tasks", "diffusion_steps", "sample_steps", "expectile",
                          "model_config"),
        smoke={"samples": 4, "steps": 2},
        tiny={"policy": {"horizon": 4, "width": 32, "blocks": 1, "diffusion_steps": 5, "time_dim": 8},
              "critic": {"width": 32, "layers": 1, "steps": 20, "batch_size": 32},
              "train": {"steps": 40, "batch_size": 16, "checkpoint_every": 20, "eval_every": 20,
                        "holdout_fraction": 0.25, "threads": 1}}),
}


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        raise KeyError(f"unknown planner kind {name!r}; valid: {', '.join(KINDS)}")
    return KINDS[name]


def resolve(ref: str):
    """The object a ``"module:attr"`` string names (imported now, not before)."""
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)
