"""The ``torch`` engine backend: a bundle's graphs run by the PyTorch reference modules from its
``reference.pt`` (``weights_only=True``), for parity checks and benchmarks. It lives in the export
package because it imports torch and the models; the runtime names it in ``BACKENDS`` as a string
and imports it only when ``backend == "torch"``."""
from __future__ import annotations

import numpy as np

from planner_node.runtime.bundle import Bundle
from planner_node.runtime.engine import Engine


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, bundle: Bundle, graph: str, threads: int = 0):
        super().__init__(bundle, graph)
        import torch

        from planner_node.atomic import sha256_file
        from planner_node.export.graphs import DecoderGraph, PriorStepGraph
        from planner_node.models.config import config_from_dict
        from planner_node.models.prior import LatentPrior
        from planner_node.models.vqvae import TrajectoryVQVAE
        from planner_node.runtime.bundle import BundleError, _inside

        ref = bundle.manifest.get("reference") or {}
        path = _inside(bundle.root, ref.get("file", ""), "reference")
        if not path.is_file() or sha256_file(path) != ref.get("sha256"):
            raise BundleError(f"{path}: missing or sha256 mismatch (reference)")
        if threads:
            torch.set_num_threads(threads)
        weights = torch.load(path, map_location="cpu", weights_only=True)
        cfg = config_from_dict(bundle.manifest["kind_config"]["model_config"])
        if graph.startswith("prior_step"):
            m = LatentPrior(cfg.vq, cfg.prior)
            m.load_state_dict(weights["prior"])
            self.module = PriorStepGraph(m).eval()
        else:
            m = TrajectoryVQVAE(cfg.vq)
            m.load_state_dict(weights["vq"])
            self.module = DecoderGraph(m).eval()
        self._torch = torch

    def run(self, feeds):
        with self._torch.inference_mode():
            outs = self.module(*[self._torch.from_numpy(np.ascontiguousarray(feeds[t.name])) for t in self.inputs])
        outs = outs if isinstance(outs, tuple) else (outs,)
        return {t.name: o.numpy() for t, o in zip(self.outputs, outs)}
