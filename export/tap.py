"""TAP's export: the prior step at the beam width and the decoder at beam x expansion, plus
smaller fixed-shape copies. TAP's beam grows 1, E, E^2, ... before it reaches the beam width:
the copies let the runtime run each step at the smallest batch that fits, as the eager reference
does, instead of padding every step to the full beam (measured 3x slower)."""
from __future__ import annotations

from pathlib import Path

from planner_node.export.kind_export import Exported
from planner_node.export.latent import bucket_sizes, export_latent


def export_graphs(ck: dict, out_dir: Path, settings: dict) -> Exported:
    B, E = settings["beam"], settings["expansion"]
    return export_latent(ck, out_dir, prior_batches=[B, *bucket_sizes(B, E)],
                         decoder_batches=[B * E, *bucket_sizes(B * E, E)[1:]])  # >= E: candidates come E at a time


def tick_flops(bundle) -> int:
    """FLOPs of the graphs one TAP tick runs: the beam is 1, E, E^2, ... rows wide until it is
    full, and each call uses the smallest fixed-shape copy that holds its rows."""
    from planner_node.export.bench import onnx_flops
    from planner_node.runtime.bundle_planner import BundlePlanner
    m = bundle.manifest
    by = {"prior_step": {}, "decoder": {}}
    for name, g in m["graphs"].items():
        base = "prior_step" if name.startswith("prior_step") else "decoder"
        batch = next(t["shape"][0] for t in g["inputs"] if t["name"] == "state")
        by[base][batch] = onnx_flops(bundle.graph_path(name))

    def fit(base, n):  # the graph the runtime planner picks for n rows
        return BundlePlanner._fit(dict(sorted(by[base].items())), n)[1]
    B, E, T = m["planner_defaults"]["beam"], m["planner_defaults"]["expansion"], m["kind_config"]["num_tokens"]
    total, beams = fit("prior_step", 1), 1
    for t in range(T):
        total += fit("decoder", beams * E)
        beams = min(B, beams * E)
        if t + 1 < T:
            total += fit("prior_step", beams)
    return total + fit("decoder", 1)
