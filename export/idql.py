"""IDQL's export: one fixed-shape graph per tick, checked against torch.

* ``policy``: noise (N, H*56) draws, obs (1, 224) z-scored, task (1, n_tasks), command (1, 3) ->
  actions (N, H, 56) z-scored (the ``steps`` DDIM steps unrolled) and advantage (N,) (the task
  critic's Q - V of each sample's first action). N = the ``samples`` setting, ``steps`` is baked
  in (the manifest's ``kind_config.sample_steps``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from planner_node import spec
from planner_node.export.kind_export import Exported, check_parity, export_onnx
from planner_node.models.idql import build_tick
from planner_node.runtime.chunk import COMMAND_DIM
from planner_node.runtime.idql_select import check_settings

ATOL = 2e-4   # z units, after up to 10 unrolled steps in fp32


def export_graphs(ck: dict, out_dir: Path, settings: dict) -> Exported:
    steps, n = settings["steps"], settings["samples"]
    cfg, tick, critic = build_tick(ck, steps)
    tasks = list(ck["policy_tasks"])
    check_settings(settings, cfg.policy.horizon, tasks, cfg.policy.diffusion_steps)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(n, cfg.policy.horizon * spec.ACTION_DIM, generator=gen)
    obs = torch.randn(1, spec.OBS_DIM, generator=gen)
    task = torch.nn.functional.one_hot(torch.randint(0, len(tasks), (1,), generator=gen), len(tasks)).float()
    cmd = torch.randn(1, COMMAND_DIM, generator=gen) * 0.3
    args = (noise, obs, task, cmd)
    path = out_dir / "policy.onnx"
    export_onnx(tick, args, ["noise", "obs", "task", "command"], ["actions", "advantage"], path)
    with torch.no_grad():
        want = [w.numpy() for w in tick(*args)]
    err = check_parity(path, {"noise": noise.numpy(), "obs": obs.numpy(), "task": task.numpy(), "command": cmd.numpy()},
                       want, ATOL * max(1.0, float(np.abs(want[1]).max())))
    p, c = cfg.policy, cfg.critic
    den = sum(x.numel() for x in tick.denoiser.parameters())
    crit = sum(x.numel() for x in (*tick.q.parameters(), *tick.v.parameters()))
    m = ck["critic"]["metrics"]
    return Exported(graphs={"policy": err}, horizon=p.horizon,
                    kind_config={"obs_dim": spec.OBS_DIM, "act_dim": spec.ACTION_DIM, "tasks": tasks,
                                 "diffusion_steps": p.diffusion_steps, "sample_steps": int(steps),
                                 "expectile": float(critic.expectile), "model_config": ck["config"]},
                    normalizer={k: np.asarray(a).astype(float).tolist() for k, a in tick_norm(ck).items()},
                    card=[f"- Model: IDQL. A diffusion policy over chunks of {p.horizon} actions (LN-ResNet, "
                          f"{p.blocks} x {p.width}, {p.diffusion_steps} diffusion steps, DDIM in {steps} at run time; "
                          f"{den / 1e6:.2f} M parameters) and the IQL task critic ({c.layers} x {c.width}, expectile "
                          f"{c.expectile}, discount {c.discount}; {crit / 1e6:.2f} M parameters) choosing among "
                          f"{n} samples per tick by the advantage of their first action (config in manifest.yaml: "
                          "kind_config.model_config).",
                          f"- Critic, held out: TD MSE {m['holdout_td_mse']:.4g} over {m['holdout_transitions']} "
                          "transitions."])


def tick_norm(ck: dict) -> dict:
    from planner_node.models.data import Normalizer
    return Normalizer.from_tensors(ck["normalizer"]).stats


def tick_flops(bundle) -> int:
    """FLOPs of one tick: one call of the policy graph."""
    from planner_node.export.bench import onnx_flops
    return onnx_flops(bundle.graph_path("policy"))
