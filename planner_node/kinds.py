"""The planner-kind registry: one record per learned planner kind, nothing else names a kind.

A record says where each part of a kind lives, as lazy ``"module:attr"`` strings, so that
choosing a kind never imports another's dependencies (a robot that runs a bundle imports the
runtime planner only, never torch):

* ``config``: the model config class ``planner train`` builds from YAML (``kind: <name>``);
  ``check_config`` (optional): kind-specific checks on it, raising ConfigError;
* ``reference``: the PyTorch reference planner (a ``Planner``, built from a training run);
* ``export``: ``export_graphs(checkpoint: dict, out_dir, settings) -> Exported`` writes the
  kind's ONNX graphs (and reference weights) for ``planner export``;
* ``runtime``: the torch-free runtime planner (a ``Planner`` over a verified bundle);
* ``defaults``: the planner settings written into a bundle (``planner export`` overrides them);
  ``batch_param``: the setting that sizes the exported batch (``--samples N`` sets it);
* ``kind_config_keys``: the keys of the manifest's ``kind_config`` (checked at load);
* ``flops``: ``tick_flops(bundle) -> int``, the FLOPs one tick runs (``planner bench``);
  ``smoke``: settings small enough for a plan in milliseconds (the registry smoke test).

To add a kind: its own files (model + config, reference planner, export, runtime planner, train
configs) and one record here. ``test/test_kinds.py`` runs every record with no per-name code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

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


KINDS: dict[str, Kind] = {
    "hgap": Kind(
        name="hgap", config="planner_node.models.config:ModelConfig",
        reference="planner_node.models.hgap:HGAPPlanner", export="planner_node.export.hgap:export_graphs",
        runtime="planner_node.runtime.hgap:RuntimeHGAPPlanner", flops="planner_node.export.hgap:tick_flops",
        defaults={"samples": 64, "temperature": 2.0, "top_p": 0.99}, batch_param="samples",
        kind_config_keys=LATENT_KIND_CONFIG),
    "tap": Kind(
        name="tap", config="planner_node.models.config:ModelConfig", check_config="planner_node.models.tap:check_config",
        reference="planner_node.models.tap:TAPPlanner", export="planner_node.export.tap:export_graphs",
        runtime="planner_node.runtime.tap:RuntimeTAPPlanner", flops="planner_node.export.tap:tick_flops",
        defaults={"beam": 64, "expansion": 4, "prob_threshold": 0.05, "prob_weight": 500.0, "temperature": 1.0},
        batch_param="beam", kind_config_keys=LATENT_KIND_CONFIG, smoke={"beam": 4, "expansion": 2}),
}


def get_kind(name: str) -> Kind:
    if name not in KINDS:
        raise KeyError(f"unknown planner kind {name!r}; valid: {', '.join(KINDS)}")
    return KINDS[name]


def resolve(ref: str):
    """The object a ``"module:attr"`` string names (imported now, not before)."""
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)
