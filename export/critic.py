"""Export of a trained task critic (``models/critic.py``) into a bundle: ``critic_value``, raw
observations (N, 224) -> V of every task (N, n_tasks), at the planner's sample count, checked
against torch; and the manifest's ``critic`` block (task order, discount, weight)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from planner_node.export.kind_export import check_parity, export_onnx

GRAPH = "critic_value"
PARITY_RTOL = 1e-5  # max abs error allowed: this times the largest |V| (fp32)


def export_critic(run: str | Path, out_dir: Path, batch: int, weight: float) -> tuple[dict[str, float], dict]:
    from planner_node.export.bundle_writer import _repo_relative
    from planner_node.models.critic import Critic

    critic = Critic(run)
    mean, std = critic.v.obs_mean.numpy(), critic.v.obs_std.numpy()
    obs = (mean + std * np.random.default_rng(0).standard_normal((batch, len(mean)))).astype(np.float32)
    path = out_dir / f"{GRAPH}.onnx"
    export_onnx(critic.v, (torch.from_numpy(obs),), ["obs"], ["values"], path)
    with torch.no_grad():
        want = critic.v(torch.from_numpy(obs)).numpy()
    err = check_parity(path, {"obs": obs}, [want], PARITY_RTOL * max(1.0, float(np.abs(want).max())))
    block = {"graph": GRAPH, "tasks": list(critic.tasks), "discount": float(critic.discount), "weight": float(weight),
             "source": _repo_relative(run)}
    return {GRAPH: err}, block
