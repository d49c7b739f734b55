"""One Engine interface (named arrays in, named arrays out), backends chosen by name, imported lazily.

* ``onnxruntime``: CPU; CUDA / TensorRT execution providers when onnxruntime-gpu is installed.
  Preallocated outputs bound with IO binding, so a tick does not allocate.
* ``tensorrt``: a serialized plan (see ``planner_node.runtime.tensorrt_build``), execute_async_v3 on
  preallocated device buffers, optionally captured into a CUDA graph (fixed shapes).
* ``torch``: the PyTorch reference modules (bundle's ``reference.pt``), for parity and benchmarks;
  ``torch-cuda``: the same on a CUDA GPU, each call one replay of a captured CUDA graph. Both live
  in ``planner_node.export.torch_engine`` (torch is allowed there, never here).

``make_engine`` never imports torch unless ``backend == "torch"``.
"""
from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod

import numpy as np

from planner_node.runtime.bundle import DTYPES, Bundle


class Engine(ABC):
    """Runs one graph of a bundle: ``run({name: array}) -> {name: array}``."""

    backend: str = "?"

    def __init__(self, bundle: Bundle, graph: str):
        self.graph = graph
        self.inputs = bundle.io(graph, "inputs")
        self.outputs = bundle.io(graph, "outputs")

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ...

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        for t in self.inputs:
            a = feeds.get(t.name)
            if a is None or a.shape != t.shape or a.dtype != DTYPES[t.dtype]:
                got = None if a is None else (a.shape, a.dtype)
                raise ValueError(f"{self.graph}: input {t.name} must be {t.dtype}{list(t.shape)}, got {got}")


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, bundle: Bundle, graph: str, providers: list[str] | None = None, threads: int = 0):
        super().__init__(bundle, graph)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        # No busy-waiting between kernels: the planner's numpy work runs between ~17 engine calls
        # per tick, and spinning pool threads took the cores from it (2 cores, same run, 3 pairs:
        # p99 37.6/38.7/42.3 ms spinning vs 33.4/32.6/29.8 ms not). PLANNER_ORT_SPIN=1 restores it.
        spin = "1" if os.environ.get("PLANNER_ORT_SPIN") == "1" else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        available = ort.get_available_providers()
        wanted = providers or [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                           "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(bundle.graph_path(graph)), sess_options=opts, providers=wanted)
        self.providers = self.session.get_providers()
        self._out = {t.name: np.empty(t.shape, DTYPES[t.dtype]) for t in self.outputs}
        self._binding = self.session.io_binding()

    def run(self, feeds):
        b = self._binding
        for t in self.inputs:
            b.bind_cpu_input(t.name, np.ascontiguousarray(feeds[t.name]))
        for name, arr in self._out.items():
            b.bind_output(name, "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
        self.session.run_with_iobinding(b)
        return self._out


#: name -> "module:Class"; TensorRT lives with its plan cache logic.
BACKENDS = {
    "onnxruntime": "planner_node.runtime.engine:OnnxRuntimeEngine",
    "tensorrt": "planner_node.runtime.tensorrt_engine:make_tensorrt_engine",  # says which engine and why
    # The PyTorch reference lives where torch may be imported; named here, imported only if chosen.
    "torch": "planner_node.export.torch_engine:TorchEngine",
    "torch-cuda": "planner_node.export.torch_engine:TorchCudaEngine",  # static buffers, one CUDA graph per call
}


def make_engine(bundle: Bundle, graph: str, backend: str = "onnxruntime", **kw) -> Engine:
    if backend not in BACKENDS:
        raise KeyError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module), cls)(bundle, graph, **kw)
