"""TensorRT backend: execute_async_v3 on preallocated device buffers, optional CUDA-graph capture.

Chooses its plan with ``plan_cache.decide`` (bundle plan, cached plan, rebuild, or fall back to
ONNX Runtime, saying which). Needs ``tensorrt`` and ``cuda-python`` (the ``gpu`` extra).
"""
from __future__ import annotations

import logging

import numpy as np

from planner_node.runtime.bundle import DTYPES, Bundle
from planner_node.runtime.engine import Engine
from planner_node.runtime.plan_cache import decide

log = logging.getLogger(__name__)


def _check(err_and_values):
    from cuda.bindings import runtime as cudart
    err, *values = err_and_values if isinstance(err_and_values, tuple) else (err_and_values,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


def make_tensorrt_engine(bundle: Bundle, graph: str, precision: str = "fp16", cuda_graph: bool = True,
                         **kw) -> Engine:
    """The engine for ``backend: tensorrt``, and why: a ``TensorRTEngine`` on the bundle's plan, a
    cached plan or one rebuilt from the ONNX for this GPU; or, where TensorRT or a CUDA GPU is
    absent, an ``OnnxRuntimeEngine``. Either way the returned engine's ``fallback_reason`` says
    which (None on TensorRT) and the decision is logged."""
    from planner_node.runtime.tensorrt_build import machine_info
    g = bundle.manifest["graphs"][graph]
    d = decide(graph, g["sha256"], bundle.root, bundle.manifest.get("plans") or [], machine_info(), precision)
    log.warning(d.reason)
    if d.action == "fallback_onnxruntime":
        from planner_node.runtime.engine import OnnxRuntimeEngine
        eng = OnnxRuntimeEngine(bundle, graph, **kw)
        eng.fallback_reason = d.reason
        return eng
    return TensorRTEngine(bundle, graph, d, precision=precision, cuda_graph=cuda_graph)


class TensorRTEngine(Engine):
    """execute_async_v3 on preallocated device buffers; built by ``make_tensorrt_engine``."""

    backend = "tensorrt"

    def __init__(self, bundle: Bundle, graph: str, decision, precision: str = "fp16", cuda_graph: bool = True):
        super().__init__(bundle, graph)
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        d = decision
        if d.action == "rebuild":
            from planner_node.runtime.tensorrt_build import build_plan
            build_plan(bundle.graph_path(graph), d.path, precision)
        self.fallback_reason = None
        self._cudart = cudart
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(d.path.read_bytes())
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self.host, self.device = {}, {}
        for t in self.inputs + self.outputs:
            arr = np.empty(t.shape, DTYPES[t.dtype])
            self.host[t.name] = arr
            self.device[t.name] = _check(cudart.cudaMalloc(arr.nbytes))
            self.context.set_tensor_address(t.name, self.device[t.name])
        self._graph_exec = None
        self._use_cuda_graph = cuda_graph

    def _launch(self):
        cudart = self._cudart
        if self._graph_exec is not None:
            _check(cudart.cudaGraphLaunch(self._graph_exec, self.stream))
            return
        if self._use_cuda_graph:
            # Fixed shapes: capture one enqueue into a CUDA graph and replay it each tick.
            self.context.execute_async_v3(self.stream)  # warm-up outside capture (allocations)
            _check(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
            self.context.execute_async_v3(self.stream)
            graph = _check(cudart.cudaStreamEndCapture(self.stream))
            self._graph_exec = _check(cudart.cudaGraphInstantiate(graph, 0))
            _check(cudart.cudaGraphLaunch(self._graph_exec, self.stream))
        else:
            self.context.execute_async_v3(self.stream)

    def run(self, feeds):
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for t in self.inputs:
            a = np.ascontiguousarray(feeds[t.name], dtype=DTYPES[t.dtype])
            _check(cudart.cudaMemcpyAsync(self.device[t.name], a.ctypes.data, a.nbytes, h2d, self.stream))
        self._launch()
        for t in self.outputs:
            a = self.host[t.name]
            _check(cudart.cudaMemcpyAsync(a.ctypes.data, self.device[t.name], a.nbytes, d2h, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return self.host
