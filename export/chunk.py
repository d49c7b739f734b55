"""The action-chunk policy's export: one fixed-shape graph, checked against torch.

* ``policy``: obs (B, 224) z-scored, task (B, n_tasks) one-hot, command (B, 3) -> actions
  (B, H, 56) z-scored, the ensemble's mean (B = the ``batch`` setting; the node plans one state).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from planner_node import spec
from planner_node.export.kind_export import Exported, check_parity, export_onnx
from planner_node.models.chunk import build_policy
from planner_node.runtime.chunk import COMMAND_DIM, check_settings

ATOL = 1e-4


def export_graphs(ck: dict, out_dir: Path, settings: dict) -> Exported:
    cfg, policy, norm = build_policy(ck)
    b = int(settings["batch"])
    if b < 1:
        raise ValueError(f"batch: must be >= 1, got {b}")
    tasks = list(ck["policy_tasks"])
    check_settings(settings, cfg.policy.horizon, tasks)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(b, spec.OBS_DIM, generator=gen)
    task = torch.nn.functional.one_hot(torch.randint(0, len(tasks), (b,), generator=gen), len(tasks)).float()
    cmd = torch.randn(b, COMMAND_DIM, generator=gen) * 0.3
    export_onnx(policy, (obs, task, cmd), ["obs", "task", "command"], ["actions"], out_dir / "policy.onnx")
    with torch.no_grad():
        err = check_parity(out_dir / "policy.onnx", {"obs": obs.numpy(), "task": task.numpy(), "command": cmd.numpy()},
                           [policy(obs, task, cmd).numpy()], ATOL)
    params = sum(p.numel() for p in policy.parameters())
    p = cfg.policy
    return Exported(graphs={"policy": err}, horizon=p.horizon,
                    kind_config={"obs_dim": spec.OBS_DIM, "act_dim": spec.ACTION_DIM, "tasks": tasks,
                                 "model_config": ck["config"]},
                    normalizer={k: np.asarray(a).astype(float).tolist() for k, a in norm.stats.items()},
                    card=[f"- Model: action-chunk policy, {p.ensemble} MLPs ({p.layers} x {p.width}, GELU) averaged, "
                          f"{p.horizon} actions per chunk ({params / 1e6:.2f} M parameters; config in manifest.yaml: "
                          "kind_config.model_config)."])


def tick_flops(bundle) -> int:
    """FLOPs of one tick: one call of the policy graph."""
    from planner_node.export.bench import onnx_flops
    return onnx_flops(bundle.graph_path("policy"))
