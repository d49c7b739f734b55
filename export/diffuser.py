"""Diffuser's export: three fixed-shape graphs at the sample count, each checked against torch.

* ``denoiser``: x (N, H, D), t (N,) float -> x0 (N, H, D), the EMA temporal U-Net;
* ``value``: x, t -> value (N, n_tasks), normalised per task (ranking);
* ``value_grad``: x, t, weight (N, n_tasks) -> value, grad = d sum(weight * value) / dx, the
  value MLP's backward pass written out as graph ops (guidance without autograd), checked
  against torch's autograd as well as against itself.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from planner_node import spec
from planner_node.export.kind_export import Exported, ExportError, check_parity, export_onnx
from planner_node.models.diffuser import ValueGradGraph, build_models
from planner_node.runtime.diffuser import check_settings, ddim_timesteps

ATOL = {"denoiser": 1e-4, "value": 1e-4, "value_grad": 1e-4}


def export_graphs(ck: dict, out_dir: Path, settings: dict) -> Exported:
    cfg, unet, value, norm = build_models(ck)
    check_settings(settings, cfg.diffusion.steps)
    n, H, D = int(settings["samples"]), cfg.unet.horizon, cfg.transition_dim
    n_tasks = len(ck["value_tasks"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, H, D, generator=gen)
    t = torch.randint(0, cfg.diffusion.steps, (n,), generator=gen).float()
    w = torch.nn.functional.one_hot(torch.randint(0, n_tasks, (n,), generator=gen), n_tasks).float()
    errs = {}
    export_onnx(unet, (x, t), ["x", "t"], ["x0"], out_dir / "denoiser.onnx")
    with torch.no_grad():
        errs["denoiser"] = check_parity(out_dir / "denoiser.onnx", {"x": x.numpy(), "t": t.numpy()},
                                        [unet(x, t).numpy()], ATOL["denoiser"])
        export_onnx(value, (x, t), ["x", "t"], ["value"], out_dir / "value.onnx")
        errs["value"] = check_parity(out_dir / "value.onnx", {"x": x.numpy(), "t": t.numpy()},
                                     [value(x, t).numpy()], ATOL["value"])
        export_onnx(ValueGradGraph(value), (x, t, w), ["x", "t", "weight"], ["value", "grad"],
                    out_dir / "value_grad.onnx")
    xg = x.clone().requires_grad_(True)
    v = value(xg, t)
    (g,) = torch.autograd.grad((v * w).sum(), xg)   # the closed form must equal autograd
    scale = max(1.0, float(g.abs().max()))
    errs["value_grad"] = check_parity(out_dir / "value_grad.onnx", {"x": x.numpy(), "t": t.numpy(), "weight": w.numpy()},
                                      [v.detach().numpy(), g.numpy()], ATOL["value_grad"] * scale)
    if not np.all(np.isfinite([*errs.values()])):
        raise ExportError("Diffuser export: a parity error is not finite")
    kind_config = {"diffusion_steps": cfg.diffusion.steps, "obs_dim": spec.OBS_DIM, "act_dim": spec.ACTION_DIM,
                   "tasks": list(ck["value_tasks"]),
                   "value_mean": np.asarray(ck["value_mean"], float).tolist(),
                   "value_std": np.asarray(ck["value_std"], float).tolist(), "model_config": ck["config"]}
    params = sum(p.numel() for p in unet.parameters())
    return Exported(graphs=errs, horizon=H, kind_config=kind_config,
                    normalizer={k: np.asarray(a).astype(float).tolist() for k, a in norm.stats.items()},
                    card=[f"- Model: Diffuser, temporal U-Net {cfg.unet.dims} ({params / 1e6:.2f} M parameters), "
                          f"{cfg.diffusion.steps} diffusion steps, horizon {H}; value MLP over "
                          f"{n_tasks} tasks (config in manifest.yaml: kind_config.model_config)."])


def tick_flops(bundle) -> int:
    """FLOPs of one tick at the bundle's settings, from the graphs' MatMul/Gemm/Conv counts."""
    from planner_node.export.bench import onnx_flops
    p, kc = bundle.manifest["planner_defaults"], bundle.manifest["kind_config"]
    den, val, grad = (onnx_flops(bundle.graph_path(g)) for g in ("denoiser", "value", "value_grad"))
    T = int(kc["diffusion_steps"])
    steps = {"ddpm": T, "ddim": int(p["steps"]), "warm": int(p["steps"])}[p["sampler"]]
    guided = 0
    if p["guide"] == "gradient":
        levels = (range(T) if p["sampler"] == "ddpm" else
                  ddim_timesteps(int(p["warm_start"]) if p["sampler"] == "warm" else T - 1, steps))
        guided = sum(1 for t in levels if t >= int(p["guide_stop"])) * int(p["guide_steps"])
    return steps * den + guided * grad + val
