"""H-GAP's export: the prior step and the decoder at the sample count (``samples``)."""
from __future__ import annotations

from pathlib import Path

from planner_node.export.kind_export import Exported
from planner_node.export.latent import export_latent


def export_graphs(ck: dict, out_dir: Path, settings: dict) -> Exported:
    n = settings["samples"]
    return export_latent(ck, out_dir, prior_batches=[n], decoder_batches=[n])


def tick_flops(bundle) -> int:
    """One tick: a prior step per code, then one decoder call, all at the sample count."""
    from planner_node.export.bench import onnx_flops
    T = bundle.manifest["kind_config"]["num_tokens"]
    return T * onnx_flops(bundle.graph_path("prior_step")) + onnx_flops(bundle.graph_path("decoder"))
