"""The ``torch`` and ``torch-cuda`` engine backends: a bundle's graphs run by the PyTorch reference
modules from its ``reference.pt`` (``weights_only=True``), for parity checks and benchmarks. They
live in the export package because they import torch and the models; the runtime names them in
``BACKENDS`` as strings and imports them only when chosen.

``torch-cuda`` keeps static input/output buffers on the GPU and replays the graph as one captured
CUDA graph per call (shapes are fixed, so one capture serves every tick): a whole-plan call is then
one launch instead of hundreds of kernels and host syncs."""
from __future__ import annotations

import numpy as np

from planner_node.runtime.bundle import Bundle
from planner_node.runtime.engine import Engine


def reference_module(bundle: Bundle, graph: str):
    """The torch module behind one of the bundle's graphs, weights verified against the manifest."""
    import torch

    from planner_node.atomic import sha256_file
    from planner_node.export.graphs import DecoderGraph, PriorStepGraph, SampledPlanGraph
    from planner_node.models.config import config_from_dict
    from planner_node.models.prior import LatentPrior
    from planner_node.models.vqvae import TrajectoryVQVAE
    from planner_node.runtime.bundle import BundleError, _inside

    ref = bundle.manifest.get("reference") or {}
    path = _inside(bundle.root, ref.get("file", ""), "reference")
    if not path.is_file() or sha256_file(path) != ref.get("sha256"):
        raise BundleError(f"{path}: missing or sha256 mismatch (reference)")
    weights = torch.load(path, map_location="cpu", weights_only=True)
    cfg = config_from_dict(bundle.manifest["kind_config"]["model_config"])
    prior, vq = LatentPrior(cfg.vq, cfg.prior), TrajectoryVQVAE(cfg.vq)
    prior.load_state_dict(weights["prior"])
    vq.load_state_dict(weights["vq"])
    if graph == "plan":
        return SampledPlanGraph(prior, vq).eval()
    if graph.startswith("prior_step"):
        return PriorStepGraph(prior).eval()
    return DecoderGraph(vq).eval()


class TorchEngine(Engine):
    backend = "torch"
    device = "cpu"

    def __init__(self, bundle: Bundle, graph: str, threads: int = 0):
        super().__init__(bundle, graph)
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.module = reference_module(bundle, graph).to(self.device)
        self._torch = torch

    def run(self, feeds):
        with self._torch.inference_mode():
            outs = self.module(*[self._torch.from_numpy(np.ascontiguousarray(feeds[t.name])) for t in self.inputs])
        outs = outs if isinstance(outs, tuple) else (outs,)
        return {t.name: o.numpy() for t, o in zip(self.outputs, outs)}


class TorchCudaEngine(TorchEngine):
    """One CUDA graph per engine: inputs copied into static device buffers, the captured graph
    replayed, outputs copied back (one host sync per call)."""

    backend = "torch-cuda"
    device = "cuda"

    def __init__(self, bundle: Bundle, graph: str, threads: int = 0, cuda_graph: bool = True):
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("backend torch-cuda: no CUDA device visible to torch on this machine")
        super().__init__(bundle, graph, threads)
        from planner_node.runtime.bundle import DTYPES
        self._in = [torch.zeros(t.shape, dtype=getattr(torch, t.dtype), device="cuda") for t in self.inputs]
        self._host = {t.name: np.empty(t.shape, DTYPES[t.dtype]) for t in self.outputs}
        self._graph = None
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):          # warm-up off the capture stream, as torch documents
                for _ in range(3):
                    outs = self.module(*self._in)
            torch.cuda.current_stream().wait_stream(side)
            if cuda_graph:
                self._graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self._graph):
                    outs = self.module(*self._in)
        self._out = outs if isinstance(outs, tuple) else (outs,)

    def run(self, feeds):
        torch = self._torch
        with torch.inference_mode():
            for buf, t in zip(self._in, self.inputs):
                buf.copy_(torch.from_numpy(np.ascontiguousarray(feeds[t.name])), non_blocking=False)
            if self._graph is not None:
                self._graph.replay()
                outs = self._out
            else:
                outs = self.module(*self._in)
                outs = outs if isinstance(outs, tuple) else (outs,)
        for t, o in zip(self.outputs, outs):
            self._host[t.name][...] = o.cpu().numpy()
        return self._host
