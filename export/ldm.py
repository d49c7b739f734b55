"""Export of a trained Lyapunov density model (``models/ldm.py``) into a bundle: ``ldm_energy``
(E) and ``ldm_g`` (G), (obs (N, 224), act (N, 56)) -> (N,), at the planner's candidate count,
each checked against torch; and the manifest's ``safety_filter`` block."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from planner_node.export.kind_export import check_parity, export_onnx

GRAPHS = {"energy": "ldm_energy", "lyapunov": "ldm_g"}
PARITY_RTOL = 1e-5  # E and G are ~1e2: max abs error allowed is this times the largest |value| (fp32)


def export_ldm(run: str | Path, out_dir: Path, batch: int) -> tuple[dict[str, float], dict]:
    """Writes the two graphs into ``out_dir``; returns their parity errors and the manifest block."""
    from planner_node.export.bundle_writer import _repo_relative
    from planner_node.models.ldm import LDM

    ldm = LDM(run)
    stats = {k: v.numpy() for k, v in ldm.flow.state_dict().items() if k.endswith(("_mean", "_std"))}
    gen = np.random.default_rng(0)
    obs = (stats["obs_mean"] + stats["obs_std"] * gen.standard_normal((batch, len(stats["obs_mean"])))).astype(np.float32)
    act = gen.uniform(-1, 1, (batch, len(stats["act_mean"]))).astype(np.float32)
    errs = {}
    for role, module in (("energy", ldm.flow), ("lyapunov", ldm.g)):
        name = GRAPHS[role]
        path = out_dir / f"{name}.onnx"
        args = (torch.from_numpy(obs), torch.from_numpy(act))
        export_onnx(module, args, ["obs", "act"], [role], path)
        with torch.no_grad():
            want = module(*args).numpy()
        errs[name] = check_parity(path, {"obs": obs, "act": act}, [want], PARITY_RTOL * max(1.0, float(np.abs(want).max())))
    block = {"name": "ldm", "energy": GRAPHS["energy"], "lyapunov": GRAPHS["lyapunov"],
             "threshold": float(ldm.threshold), "percentile": float(ldm.config.percentile),
             "source": _repo_relative(run)}
    return errs, block
