"""H-GAP's export: the prior step and the decoder at the sample count (``samples``), and the
whole sampled plan as one graph (``plan``: every prior step, in-graph sampling, the decoder)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from planner_node.export.graphs import SampledPlanGraph
from planner_node.export.kind_export import Exported, ExportError, export_onnx
from planner_node.export.latent import export_latent
from planner_node.models.train import build_models

PLAN_ATOL = 1e-4  # max abs trajectory difference, ONNX Runtime vs torch, on rows with the same tokens


def export_plan(ck: dict, n: int, path: Path, temperature: float, top_p: float) -> float:
    """The whole-plan graph at n samples, checked against torch on the same draws: the tokens
    must agree (all but rows where a draw sits on a float32 CDF boundary) and the trajectories
    of agreeing rows within ``PLAN_ATOL``."""
    import onnxruntime as ort

    cfg, vq, prior, _ = build_models(ck)
    graph = SampledPlanGraph(prior, vq).eval()
    gen = torch.Generator().manual_seed(0)
    args = (torch.rand(n, cfg.vq.num_tokens, generator=gen), torch.randn(1, cfg.vq.obs_dim, generator=gen),
            torch.tensor([float(temperature)]), torch.tensor([float(top_p)]))
    export_onnx(graph, args, ["uniforms", "state", "temperature", "top_p"],
                ["tokens", "trajectory", "nucleus_overflow"], path)
    with torch.no_grad():
        tok, traj, _ = (t.numpy() for t in graph(*args))
    got_tok, got_traj, _ = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, dict(zip(["uniforms", "state", "temperature", "top_p"], (a.numpy() for a in args))))
    same = (got_tok == tok).all(axis=1)
    if same.sum() < n - max(1, n // 16):
        raise ExportError(f"{path.name}: ONNX Runtime drew other tokens than torch in {n - same.sum()} of {n} rows")
    err = float(np.max(np.abs(got_traj[same] - traj[same])))
    if not err <= PLAN_ATOL:
        raise ExportError(f"{path.name}: ONNX Runtime differs from torch by {err:.2e} > {PLAN_ATOL:.0e}")
    return err


def export_graphs(ck: dict, out_dir: Path, settings: dict) -> Exported:
    n = settings["samples"]
    ex = export_latent(ck, out_dir, prior_batches=[n], decoder_batches=[n])
    ex.graphs["plan"] = export_plan(ck, n, out_dir / "plan.onnx", settings["temperature"], settings["top_p"])
    ex.card.append(f"- Whole-plan graph `plan`: {ex.kind_config['num_tokens']} prior steps, sampling and the decoder "
                   "in one engine call (the step graphs stay for bundles' older runtimes and benchmarks).")
    return ex


def tick_flops(bundle) -> int:
    """One tick: a prior step per code, then one decoder call, all at the sample count (the step
    graphs' count; the whole-plan graph attends to fewer cache slots)."""
    from planner_node.export.bench import onnx_flops
    T = bundle.manifest["kind_config"]["num_tokens"]
    return T * onnx_flops(bundle.graph_path("prior_step")) + onnx_flops(bundle.graph_path("decoder"))
